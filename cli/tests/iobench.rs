//! `crail iobench`'s data tests against a real store: figures, and a baseline for the
//! sequential ones.

#![allow(clippy::unwrap_used)]

mod process;

use crail_node::LocalCluster;
use crail_store::ByteSize;
use process::CRAIL;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iobench_data_tests_print_figures_and_a_baseline() {
    let store = LocalCluster::start(&["127.0.0.2"], ByteSize(32 << 20))
        .await
        .unwrap();
    let addr = store.client.namenode.clone();
    for (test, sequential) in [
        ("write", true),
        ("read", true),
        ("writeAsync", true),
        ("readAsync", true),
        ("readRandom", false),
    ] {
        let out = tokio::process::Command::new(CRAIL)
            .args(["iobench", "--namenode", &addr, "-t", test])
            .args([
                "-s", "8MiB", "-b", "256KiB", "-k", "50", "-o", "2", "--json",
            ])
            .env_remove("CRAIL_CONF")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{test}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(json["test"], test);
        for key in ["mb_per_sec", "p50_us", "p99_us"] {
            assert!(json[key].as_f64().unwrap() > 0.0, "{test}: {key} in {json}");
        }
        assert_eq!(
            json["baseline_mb_per_sec"].as_f64().is_some(),
            sequential,
            "{test}: {json}"
        );
    }
}
