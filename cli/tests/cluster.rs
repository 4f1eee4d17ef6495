//! The embedded cluster and the operator's commands, through the real binary: `crail cluster`
//! with 3 nodes, the `crail fs` shell, `crail status`, the configuration layers, and bad input.

#![allow(clippy::unwrap_used)]

mod process;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use process::{CRAIL, Cluster, cell};
const MIB: u64 = 1 << 20;

/// How many of `pids` still run.
fn running(pids: &[(String, String)]) -> usize {
    pids.iter().filter(|(_, pid)| process::running(pid)).count()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deterministic bytes, different at every offset.
fn write_pattern(path: &Path, len: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(MIB) as usize;
        file.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    a.len() == b.len() && a == b
}

#[test]
fn a_three_node_cluster_serves_the_fs_shell_and_status_then_stops_cleanly() {
    let flash = tempfile::tempdir().unwrap();
    let flash_dir = flash.path().to_str().unwrap();
    let mut cluster = Cluster::start(
        &[
            "--nodes",
            "3",
            "--dram",
            "200MiB",
            "--flash",
            "256MiB",
            "--flash-dir",
            flash_dir,
        ],
        &[],
    );
    let nodes = cluster.node_pids();
    assert_eq!(nodes.len(), 3);
    let local = cluster.dir.path().to_owned();

    // 300 MiB + a bit, twice: more than the 3 x 200 MiB of DRAM, so the second copy spills
    // to flash.
    let size = 300 * MIB + 12_345;
    let src = local.join("big.bin");
    write_pattern(&src, size);
    cluster.ok(&["fs", "-mkdir", "-p", "/data/sets"]);
    cluster.ok(&["fs", "-put", src.to_str().unwrap(), "/data/sets/"]);
    cluster.ok(&[
        "fs",
        "-copyFromLocal",
        src.to_str().unwrap(),
        "/data/copy.bin",
    ]);
    let back = local.join("back.bin");
    cluster.ok(&["fs", "-get", "/data/sets/big.bin", back.to_str().unwrap()]);
    assert!(same_bytes(&src, &back), "bytes differ after a round trip");
    let back2 = local.join("back2.bin");
    cluster.ok(&[
        "fs",
        "-copyToLocal",
        "/data/copy.bin",
        back2.to_str().unwrap(),
    ]);
    assert!(
        same_bytes(&src, &back2),
        "bytes differ after the second round trip"
    );

    // A small file through -cat, and from standard input.
    let mut put = Command::new(CRAIL)
        .args(["fs", "-put", "-", "/data/hello.txt"])
        .env("CRAIL_CONF", &cluster.config)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(b"hello crail\n")
        .unwrap();
    assert!(put.wait().unwrap().success());
    assert_eq!(
        cluster.ok(&["fs", "-cat", "/data/hello.txt"]),
        "hello crail\n"
    );

    // -ls, -du and -df agree with what was written.
    let ls = cluster.ok(&["fs", "-ls", "-R", "-b", "/data"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 4, "{ls}");
    assert!(
        ls.contains(&format!("{size}"))
            && ls.contains("/data/sets/big.bin")
            && ls.contains("/data/copy.bin"),
        "{ls}"
    );
    let du = cluster.ok(&["fs", "-du", "-s", "-b", "/data"]);
    assert_eq!(
        du.split_whitespace().next().unwrap(),
        (2 * size + 12).to_string(),
        "{du}"
    );
    let df = cluster.ok(&["fs", "-df", "-b"]);
    // The two copies, the small file, and each node's shuffle and broadcast service
    // advertisements.
    let blocks = 2 * size.div_ceil(MIB) + 1 + 6;
    assert_eq!(cell(&df, "total", 4), blocks * MIB, "{df}");
    assert_eq!(cell(&df, "total", 3), 3 * (200 + 256) * MIB, "{df}");
    assert_eq!(cell(&df, "dram", 2), 3, "{df}");
    assert_eq!(cell(&df, "flash", 2), 3, "{df}");
    assert!(cell(&df, "flash", 4) > 0, "nothing went to flash: {df}");
    let stat = cluster.ok(&["fs", "-stat", "/data/copy.bin"]);
    assert!(stat.contains(&format!("({size} bytes)")), "{stat}");

    // crail status: 3 hosts, 6 live tiers.
    let status = cluster.ok(&["status"]);
    assert!(
        status.contains(", 3 hosts, 6 datanodes alive, 0 dead"),
        "{status}"
    );
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert_eq!(
            status
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some(host))
                .count(),
            2,
            "{host}: {status}"
        );
    }

    // Rename, delete, and the listing follows.
    cluster.ok(&["fs", "-mv", "/data/copy.bin", "/data/sets"]);
    cluster.ok(&["fs", "-rm", "/data/sets/copy.bin", "/data/hello.txt"]);
    cluster.ok(&["fs", "-rm", "-r", "/data"]);
    // What is left is the services' advertisements (a block each).
    let ls = cluster.ok(&["fs", "-ls", "/"]);
    assert!(
        ls.contains(" /crail-broadcast\n")
            && ls.ends_with(" /crail-shuffle\n")
            && ls.lines().count() == 2,
        "{ls}"
    );
    let df = cluster.ok(&["fs", "-df", "-b"]);
    assert_eq!(cell(&df, "total", 4), 6 * MIB, "{df}");

    // SIGTERM: everything stops, and the config and flash files go with it.
    cluster.signal("-TERM");
    let (ok, err) = cluster.wait();
    assert!(ok, "{err}");
    assert!(!cluster.config.exists());
    wait_for("the nodes to exit", || running(&nodes) == 0);
    assert_eq!(std::fs::read_dir(flash.path()).unwrap().count(), 0);
}

#[test]
fn nodes_stop_with_the_cluster_and_the_cluster_with_a_node() {
    // A killed cluster (no chance to clean up) takes its nodes with it.
    let mut cluster = Cluster::start(&["--nodes", "2", "--dram", "64MiB"], &[]);
    let nodes = cluster.node_pids();
    assert_eq!(nodes.len(), 2);
    cluster.signal("-KILL");
    let _ = cluster.wait();
    wait_for("orphaned nodes to exit", || running(&nodes) == 0);

    // A node that dies stops the cluster with an error naming it.
    let mut cluster = Cluster::start(&["--nodes", "2", "--dram", "64MiB"], &[]);
    let nodes = cluster.node_pids();
    cluster.kill_node("127.0.0.3");
    let (ok, err) = cluster.wait();
    assert!(!ok);
    assert!(err.contains("node 127.0.0.3 stopped unexpectedly"), "{err}");
    wait_for("the other node to exit", || running(&nodes) == 0);
}

#[test]
fn a_cluster_whose_output_nobody_reads_keeps_serving() {
    // Stdout and stderr closed before it prints a line (a parent that went away): the
    // announcements fail to print, the cluster does not.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.toml");
    let mut child = Command::new(CRAIL)
        .args([
            "cluster",
            "--nodes",
            "2",
            "--dram",
            "64MiB",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--config-out")
        .arg(&config)
        .env_remove("CRAIL_CONF")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    wait_for("the cluster to serve", || {
        assert!(child.try_wait().unwrap().is_none(), "the cluster died");
        config.exists()
    });
    let out = Command::new(CRAIL)
        .arg("--config")
        .arg(&config)
        .args(["fs", "-ls", "/"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn configuration_layers_file_then_environment_then_flags() {
    let cluster = Cluster::start(&["--nodes", "1", "--dram", "64MiB"], &[]);
    let status = |args: &[&str], env: &[(&str, &str)]| {
        Command::new(CRAIL)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("CRAIL_CONF")
            .output()
            .unwrap()
    };
    let conf = cluster.config.to_str().unwrap();
    // The file alone, then the environment over a file pointing nowhere, then a flag over both.
    let bad = cluster.dir.path().join("bad.toml");
    std::fs::write(&bad, "[client]\nnamenode = \"127.0.0.1:1\"\n").unwrap();
    let bad = bad.to_str().unwrap();
    assert!(status(&["--config", conf, "status"], &[]).status.success());
    assert!(
        status(
            &["status"],
            &[
                ("CRAIL_CONF", bad),
                ("CRAIL_CLIENT_NAMENODE", &cluster.namenode)
            ]
        )
        .status
        .success()
    );
    assert!(
        status(
            &["status", "--namenode", &cluster.namenode],
            &[
                ("CRAIL_CONF", bad),
                ("CRAIL_CLIENT_NAMENODE", "127.0.0.1:1")
            ]
        )
        .status
        .success()
    );
    let out = status(&["--config", bad, "status"], &[]);
    assert!(!out.status.success());

    // CRAIL_CONF still exported from an earlier run names the file this cluster writes: it is
    // its output, not a missing input.
    let again = Cluster::start(
        &["--nodes", "1", "--dram", "64MiB"],
        &[("CRAIL_CONF", "{config}")],
    );
    assert!(again.ok(&["status"]).contains("1 hosts"));
}

/// Runs `crail` and expects one clear line on stderr naming `says`, a nonzero exit, no panic.
fn fails_with(out: &Output, says: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded");
    assert!(err.starts_with("crail: error: "), "{what}: {err}");
    assert!(err.contains(says), "{what}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

#[test]
fn bad_input_gets_one_clear_line_and_a_nonzero_exit() {
    let cluster = Cluster::start(
        &["--nodes", "1", "--dram", "64MiB"],
        &[("CRAIL_SECURITY_SECRET", "the-right-secret-1")],
    );
    let nn = cluster.namenode.as_str();
    let local = cluster.dir.path();
    let missing = local.join("missing.bin");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["fs", "-ls", "/no/such/path"], "/no/such/path: no such"),
        (vec!["fs", "-cat", "/nothing"], "/nothing: no such"),
        (vec!["fs", "-get", "/nothing", "x"], "/nothing: no such"),
        (
            vec!["fs", "-put", missing.to_str().unwrap(), "/x"],
            "missing.bin: cannot read",
        ),
        (vec!["fs", "-rm", "/nothing"], "/nothing: no such"),
        (vec!["fs", "-ls", "-Z", "/"], "unknown option -Z"),
        (vec!["fs", "-explode", "/"], "unknown command -explode"),
        (vec!["fs"], "needs a command"),
        (vec!["fs", "-cat", "/"], "/: is a directory"),
        (
            vec!["cluster", "--dram", "lots"],
            "\"lots\" is not a valid size",
        ),
        (
            vec!["cluster", "--nodes", "0"],
            "--nodes must be between 1 and 200",
        ),
        (vec!["cluster", "--listen", nn], "cannot listen on"),
        (vec!["namenode", "--listen", nn], "cannot listen on"),
        (vec!["node", "--dram", "0"], "needs some storage"),
        (
            vec!["status", "--namenode", "127.0.0.1:1"],
            "cannot reach the namenode at 127.0.0.1:1",
        ),
        (vec!["bogus"], "unrecognized subcommand"),
    ];
    for (args, says) in cases {
        fails_with(&cluster.crail(&args), says, &format!("{args:?}"));
    }
    // A wrong secret, and none at all, against a cluster that has one.
    let wrong = Command::new(CRAIL)
        .args(["status", "--namenode", nn])
        .env_remove("CRAIL_CONF")
        .env("CRAIL_SECURITY_SECRET", "the-wrong-secret-2")
        .output()
        .unwrap();
    fails_with(&wrong, "secret", "a wrong secret");
    let none = Command::new(CRAIL)
        .args(["fs", "-ls", "/", "--namenode", nn])
        .env_remove("CRAIL_CONF")
        .output()
        .unwrap();
    assert!(!none.status.success());
    // A bad environment value names its variable.
    let env = Command::new(CRAIL)
        .args(["status"])
        .env("CRAIL_CONF", &cluster.config)
        .env("CRAIL_CLIENT_OUTSTANDING", "lots")
        .output()
        .unwrap();
    fails_with(&env, "CRAIL_CLIENT_OUTSTANDING", "a bad variable");
    // The cluster's own config carries the secret: commands with it work.
    assert!(cluster.ok(&["status"]).contains("1 hosts"));
    // The node's services ask the same secret (the store's handshake on their ports too):
    // engines with the cluster's config shuffle and broadcast through them.
    let shuffled = cluster.ok(&[
        "shufflebench",
        "--size",
        "4MiB",
        "--shapes",
        "4x2",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(shuffled.contains("\"maps\":4"), "{shuffled}");
    let broadcast = cluster.ok(&[
        "broadcastbench",
        "--size",
        "1MiB",
        "--readers",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(broadcast.contains('{'), "{broadcast}");
}
