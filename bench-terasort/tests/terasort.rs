//! The `terasort` binary end to end: gen, sort on a real cluster (whole nodes in the test's
//! process, and the embedded cluster of `terasort run`), validate, and the faults each must
//! catch.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TERASORT: &str = env!("CARGO_BIN_EXE_terasort");
const RECORD: usize = 100;

fn terasort(args: &[&str]) -> Output {
    Command::new(TERASORT)
        .args(args)
        .env_remove("CRAIL_CONF")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = terasort(args);
    assert!(
        out.status.success(),
        "terasort {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails with one line on stderr naming `what`.
fn fails(args: &[&str], what: &str) -> String {
    let out = terasort(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "terasort {args:?} succeeded");
    assert!(err.contains(what), "terasort {args:?}: {err}");
    err
}

/// `terasort sort` of `input` into `output` on the cluster of `config`.
fn sort<'a>(input: &'a str, output: &'a str, config: &'a str) -> Vec<&'a str> {
    vec!["sort", "--in", input, "--out", output, "--config", config]
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

fn concat(dir: &Path) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `terasort gen` writes what gensort 1.5 writes: the figures are the real tool's (built from
/// its source on the development machine), `gensort [-bSTART] COUNT FILE` and `gensort -c`.
#[test]
fn gen_writes_what_gensort_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // (start, records, sha256 of the file, checksum gensort -c prints)
        (
            0u64,
            10_000u64,
            "a1067ee8a1e59c86ee2d64dbbcb68d356c42bb90c4ce984e4e9c73c767b9d343",
            Some("1392d240ca76"),
        ),
        (
            5000,
            5000,
            "03985a4aac4e49a3f7b165b96106aa4ccc975446e82b2dff7279f89e857746d0",
            None,
        ),
        (
            1_000_000,
            3,
            "f2934f3d31bc19ec44f97625c12984aad9668840c7669c06f815a7820f00b938",
            None,
        ),
        (
            123_456_789_012,
            1000,
            "09466814bc8da1a6d39f747cf6340d54e827928b9aa64648208106678caa8868",
            Some("1f7e4f7eb05"),
        ),
    ];
    for (i, (start, records, sha, checksum)) in cases.into_iter().enumerate() {
        let out = path(dir.path(), &format!("g{i}"));
        let size = (records * RECORD as u64).to_string();
        let said = ok(&[
            "gen",
            "--size",
            &size,
            "--out",
            &out,
            "--start",
            &start.to_string(),
            "--parts",
            "3",
        ]);
        assert_eq!(
            sha256(&concat(Path::new(&out))),
            sha,
            "gensort -b{start} {records}"
        );
        if let Some(checksum) = checksum {
            assert!(said.contains(&format!("checksum {checksum}")), "{said}");
            // valsort's checksum of the same records (unsorted: not valid).
            let out = terasort(&["validate", &out, "--json"]);
            let v: serde_json::Value =
                serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
            assert_eq!(v["checksum"], checksum);
            assert_eq!(v["valid"], false);
        }
    }
}

#[test]
fn gen_is_one_stream_however_it_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let one = path(dir.path(), "one");
    let seven = path(dir.path(), "seven");
    let out = ok(&["gen", "--size", "1000000", "--out", &one, "--parts", "1"]);
    assert!(out.contains("10000 records in 1 parts"), "{out}");
    ok(&["gen", "--size", "1000000", "--out", &seven, "--parts", "7"]);
    let whole = concat(Path::new(&one));
    assert_eq!(whole.len(), 10_000 * RECORD);
    assert_eq!(whole, concat(Path::new(&seven)));
    // A later start is the same stream further on (gensort's -b).
    let later = path(dir.path(), "later");
    ok(&[
        "gen", "--size", "500000", "--out", &later, "--start", "5000",
    ]);
    assert_eq!(concat(Path::new(&later)), whole[5000 * RECORD..]);
    // The output directory must not exist; the size must hold a record.
    fails(&["gen", "--size", "1000", "--out", &one], "exists");
    fails(
        &["gen", "--size", "99", "--out", &path(dir.path(), "x")],
        "no 100-byte record",
    );
    fails(&["gen", "--size", "lots", "--out", &one], "--size");
}

#[test]
fn validate_catches_swapped_truncated_and_changed_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = path(dir.path(), "in");
    let sorted = path(dir.path(), "sorted");
    ok(&["gen", "--size", "2000000", "--out", &input, "--parts", "3"]);
    // Unsorted input is reported as such.
    let out = terasort(&["validate", &input]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of order"));

    // A sort the simple way (the records of all parts, by key) is valid and keeps the
    // checksum.
    let mut records: Vec<Vec<u8>> = concat(Path::new(&input))
        .chunks(RECORD)
        .map(<[u8]>::to_vec)
        .collect();
    records.sort_by(|a, b| a[..10].cmp(&b[..10]));
    std::fs::create_dir(&sorted).unwrap();
    let write = |name: &str, records: &[Vec<u8>]| {
        std::fs::write(Path::new(&sorted).join(name), records.concat()).unwrap();
    };
    write("part-00000", &records[..7000]);
    write("part-00001", &records[7000..]);
    let out = ok(&["validate", &sorted, "--input", &input]);
    assert!(out.contains("Records: 20000"), "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let json = ok(&["validate", &sorted, "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["records"], 20000);

    // Two records swapped inside a part.
    let mut swapped = records.clone();
    swapped.swap(100, 101);
    write("part-00000", &swapped[..7000]);
    fails(&["validate", &sorted], "record 101 of part-00000");
    // Out of order across the boundary of two parts.
    let mut across = records.clone();
    across.swap(6999, 7000);
    write("part-00000", &across[..7000]);
    write("part-00001", &across[7000..]);
    fails(&["validate", &sorted], "out of order");
    write("part-00000", &records[..7000]);
    write("part-00001", &records[7000..]);

    // A changed byte outside the key: in order, but not the input's records.
    let mut changed = records.clone();
    changed[8000][50] ^= 1;
    write("part-00001", &changed[7000..]);
    ok(&["validate", &sorted]);
    fails(&["validate", &sorted, "--input", &input], "checksum");
    // A lost record.
    write("part-00001", &records[7001..]);
    fails(&["validate", &sorted, "--input", &input], "19999 records");
    // A truncated part.
    let mut torn = records[7000..].concat();
    torn.truncate(torn.len() - 1);
    std::fs::write(Path::new(&sorted).join("part-00001"), torn).unwrap();
    fails(&["validate", &sorted], "truncated");
    // Missing input.
    fails(&["validate", &path(dir.path(), "nothing")], "nothing");
    std::fs::create_dir(path(dir.path(), "empty")).unwrap();
    fails(&["validate", &path(dir.path(), "empty")], "no input parts");
}

/// A running cluster to `terasort sort` on: whole nodes in this process (`crail-node`'s test
/// cluster) on 127.0.0.2-4, and a client configuration file naming it.
struct Cluster {
    config: String,
    _cluster: crail_node::LocalCluster,
    _runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
        let cluster = runtime
            .block_on(crail_node::LocalCluster::with_services(
                &hosts,
                crail_store::ByteSize(512 << 20),
            ))
            .unwrap();
        let config = path(dir, "client.toml");
        let text = format!("[client]\nnamenode = \"{}\"\n", cluster.client.namenode);
        std::fs::write(&config, text).unwrap();
        Self {
            config,
            _cluster: cluster,
            _runtime: runtime,
        }
    }
}

#[test]
fn sort_on_a_running_cluster_is_valid_and_refuses_bad_directories() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    let input = path(dir.path(), "in");
    let output = path(dir.path(), "out");
    ok(&["gen", "--size", "30000000", "--out", &input, "--parts", "5"]);
    let mut args = sort(&input, &output, &cluster.config);
    args.extend(["--partitions", "7"]);
    let out = ok(&args);
    assert!(out.contains("sorted 300000 records on 3 nodes"), "{out}");
    let parts = std::fs::read_dir(&output).unwrap().count();
    assert_eq!(parts, 7);
    ok(&["validate", &output, "--input", &input]);

    // The output exists; the input does not; the input is torn.
    fails(&sort(&input, &output, &cluster.config), "exists");
    let (missing, o2, o3) = (
        path(dir.path(), "missing"),
        path(dir.path(), "o2"),
        path(dir.path(), "o3"),
    );
    fails(&sort(&missing, &o2, &cluster.config), "missing");
    let part = Path::new(&input).join("part-00002");
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() - 3]).unwrap();
    fails(&sort(&input, &o3, &cluster.config), "truncated");
    assert!(!Path::new(&path(dir.path(), "o3")).exists());
}

#[test]
fn run_sorts_on_the_embedded_cluster_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let chart = path(dir.path(), "chart.svg");
    let out = ok(&[
        "run",
        "--size",
        "20000000",
        "--nodes",
        "2",
        "--json",
        "--chart",
        &chart,
        "--work",
        &path(dir.path(), "work"),
    ]);
    let last = out.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["valid"], true, "{last}");
    assert_eq!(v["records"], 200_000);
    assert_eq!(v["nodes"], 2);
    assert!(v["gb_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    assert!(v["baseline"]["gb_per_sec"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("in-memory sort"));
    // The work directory is removed.
    assert!(!Path::new(&path(dir.path(), "work")).exists());

    // A shuffle larger than the cluster's DRAM goes on into the nodes' flash. The report
    // ends with what each process of the cluster held at its peak.
    let run = terasort(&[
        "run",
        "--size",
        "20000000",
        "--nodes",
        "2",
        "--dram",
        "8MiB",
        "--flash",
        "64MiB",
        "--tiering",
        "host-first",
        "--json",
        "--chart",
        &chart,
        "--work",
        &path(dir.path(), "work"),
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{out}{err}");
    let last = out.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["valid"], true, "{last}");
    assert_eq!(v["records"], 200_000);
    assert!(!Path::new(&path(dir.path(), "work")).exists());
    let peaks = err
        .lines()
        .find_map(|l| l.strip_prefix("cluster peak resident memory: "))
        .unwrap_or_else(|| panic!("no peak memory line: {err}"));
    for name in ["namenode ", "127.0.0.2 ", "127.0.0.3 "] {
        assert!(peaks.contains(name), "{peaks}");
    }
    assert!(!peaks.contains(" -"), "{peaks}");

    // Bad flags: one line each, nothing started.
    fails(&["run", "--size", "100TiB"], "needs about");
    fails(&["run", "--size", "10"], "no 100-byte record");
    fails(&["run", "--size", "1MiB", "--nodes", "0"], "--nodes");
    fails(
        &["run", "--size", "1MiB", "--tiering", "fast"],
        "class-first or host-first",
    );
    let existing = path(dir.path(), "exists");
    std::fs::create_dir(&existing).unwrap();
    fails(
        &["run", "--size", "1MiB", "--work", &existing],
        "work directory",
    );
}

#[test]
fn a_node_dying_mid_sort_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(TERASORT)
        .args([
            "run",
            "--size",
            "400000000",
            "--chart",
            &path(dir.path(), "c.svg"),
            "--work",
            &path(dir.path(), "work"),
        ])
        .env_remove("CRAIL_CONF")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut namenode = None;
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("cluster:")
            && let Some(at) = line.find("namenode ")
        {
            namenode = Some(line[at + 9..].trim().to_owned());
            break;
        }
    }
    assert!(namenode.is_some(), "the run started a cluster");
    // Kill the second node (a child of this run) as the sort begins.
    let pattern = "--crail-embedded-node 127.0.0.3";
    let parent = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new("pkill")
        .args(["-KILL", "-P", &parent, "-f", "--", pattern])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "no node process matched {pattern}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{rest:?}");
    assert!(
        !rest.iter().any(|l| l.contains("SUCCESS")),
        "a run with a dead node reported success: {rest:?}"
    );
    assert!(err.contains("terasort: error:"), "{err}");
    assert_eq!(
        err.trim()
            .lines()
            .last()
            .map(|l| l.starts_with("terasort: error:")),
        Some(true)
    );
}
