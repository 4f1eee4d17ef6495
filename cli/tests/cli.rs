//! The real `crail` binary: `crail namenode` and `crail iobench`, good and bad input.

#![allow(clippy::unwrap_used)]

mod process;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use process::{CRAIL, Process};

/// A `crail namenode` process, killed on drop.
struct Namenode {
    process: Process,
    addr: String,
}

impl Namenode {
    fn start(extra: &[&str]) -> Self {
        let mut args = vec!["namenode", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let (process, addr) = Process::start(&args, "namenode listening on ");
        Self { process, addr }
    }
}

fn crail(args: &[&str]) -> Output {
    Command::new(CRAIL)
        .args(args)
        .env_remove("CRAIL_CONF")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last stdout line, parsed as JSON.
fn json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn iobench_measures_every_metadata_test_and_prints_json() {
    let nn = Namenode::start(&[]);
    for test in ["createFile", "lookupFile", "deleteFile", "listDir"] {
        let out = crail(&[
            "iobench",
            "--namenode",
            &nn.addr,
            "-t",
            test,
            "-k",
            "3000",
            "-c",
            "2",
            "-o",
            "2",
            "--entries",
            "50",
            "--json",
        ]);
        assert!(out.status.success(), "{test}: {}", stderr(&out));
        let summary = json(&out);
        assert_eq!(summary["test"], test);
        assert_eq!(summary["ops"], 3000);
        for key in ["ops_per_sec", "p50_us", "p99_us", "seconds"] {
            assert!(summary[key].as_f64().unwrap() > 0.0, "{test}: {key}");
        }
        assert!(summary["p50_us"].as_f64() <= summary["p99_us"].as_f64());
    }
}

#[test]
fn iobench_reads_the_client_config_file_and_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[security]\nsecret = \"s3cret-s3cret-s3cret\"\n").unwrap();
    let nn = Namenode::start(&["--config", good.to_str().unwrap()]);
    let client = dir.path().join("client.toml");
    std::fs::write(
        &client,
        format!(
            "[client]\nnamenode = \"{}\"\n[security]\nsecret = \"s3cret-s3cret-s3cret\"\n",
            nn.addr
        ),
    )
    .unwrap();
    let out = crail(&[
        "iobench",
        "--config",
        client.to_str().unwrap(),
        "-t",
        "lookupFile",
        "-k",
        "500",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["test"], "lookupFile");

    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "[client]\nnamenode = \"{}\"\n[security]\nsecret = \"guess-guess-guess-guess\"\n",
            nn.addr
        ),
    )
    .unwrap();
    let out = crail(&[
        "iobench",
        "--config",
        wrong.to_str().unwrap(),
        "-t",
        "lookupFile",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("authentication failed: wrong shared secret"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `crail datanode` arguments against `addr`, listening on a host of its own.
fn dn<'a>(addr: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["datanode", "--namenode", addr, "--listen", "127.0.0.5:0"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bad_input_gets_one_clear_line_and_a_nonzero_exit() {
    let nn = Namenode::start(&[]);
    let addr = nn.addr.as_str();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["datanode", "--namenode", "127.0.0.1:1"],
            "cannot connect to 127.0.0.1:1",
        ),
        (dn(addr, &["--transport", "rdma"]), "rdma unavailable: "),
        (dn(addr, &["--tier", "flash"]), "datanode.path"),
        (dn(addr, &["--capacity", "0"]), "datanode.capacity"),
        (dn(addr, &["--capacity", "100KiB"]), "less than one block"),
        (
            dn(
                addr,
                &["--tier", "flash", "--path", "/nonexistent/dir/flash.img"],
            ),
            "/nonexistent/dir/flash.img: cannot open",
        ),
        (
            vec![
                "iobench",
                "--namenode",
                &nn.addr,
                "-t",
                "read",
                "-b",
                "2MiB",
            ],
            "larger than a block",
        ),
        (vec!["namenode", "--listen", &nn.addr], "cannot listen on"),
        (
            vec![
                "namenode",
                "--listen",
                "127.0.0.1:0",
                "--block-size",
                "1000",
            ],
            "namenode.block_size",
        ),
        (
            vec!["iobench", "--namenode", "127.0.0.1:1", "-t", "lookupFile"],
            "cannot reach the namenode at 127.0.0.1:1",
        ),
        (
            vec!["namenode", "--config", "/nonexistent/crail.toml"],
            "/nonexistent/crail.toml",
        ),
        (
            vec![
                "iobench",
                "--namenode",
                &nn.addr,
                "-t",
                "lookupFile",
                "-k",
                "0",
            ],
            "-k, -c and -o must be at least 1",
        ),
    ];
    for (args, expected) in cases {
        let out = crail(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(err.starts_with("crail: error: "), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let out = crail(&["iobench", "-t", "bogusTest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid value 'bogusTest'"));
}

#[test]
fn sigterm_stops_the_namenode_cleanly() {
    let mut nn = Namenode::start(&[]);
    let pid = nn.process.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = nn.process.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "namenode ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
