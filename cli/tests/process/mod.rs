//! `crail` child processes for the integration tests: started without CRAIL_CONF, their
//! first stdout line (the announcement of where they listen) read, killed on drop.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CRAIL: &str = env!("CARGO_BIN_EXE_crail");

/// A `crail` process, killed on drop.
pub struct Process {
    pub child: Child,
}

impl Process {
    /// Starts `crail ARGS` and returns it with its first stdout line after `prefix`.
    pub fn start(args: &[&str], prefix: &str) -> (Self, String) {
        Self::start_with(args, prefix, &[], None)
    }

    /// As [`Process::start`], with environment variables `env`, and its log (stderr) in
    /// `log` if given. The rest of its stdout is drained, so it never writes to a closed pipe.
    pub fn start_with(
        args: &[&str],
        prefix: &str,
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> (Self, String) {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let mut child = Command::new(CRAIL)
            .args(args)
            .env_remove("CRAIL_CONF")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        std::thread::spawn(move || for _ in out.lines() {});
        let rest = line
            .trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (Self { child }, rest)
    }

    /// Sends `signal` ("-STOP", "-CONT", "-KILL") to it.
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `crail cluster` process; killed on drop if a test did not stop it.
pub struct Cluster {
    pub child: Child,
    pub config: PathBuf,
    pub namenode: String,
    pub dir: tempfile::TempDir,
    /// Its announcement, line by line.
    pub lines: Vec<String>,
}

impl Cluster {
    /// Starts `crail cluster` with a free namenode port and waits for its client config.
    pub fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("client.toml");
        let mut child = Command::new(CRAIL)
            .args(["cluster", "--listen", "127.0.0.1:0", "--config-out"])
            .arg(&config)
            .args(extra)
            .env_remove("CRAIL_CONF")
            // "{config}" stands for the file the cluster is about to write.
            .envs(
                env.iter()
                    .map(|(k, v)| (*k, v.replace("{config}", config.to_str().unwrap()))),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut namenode = None;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("cluster ended before it was up: {lines:?} {err}");
            }
            if let Some(addr) = line.trim().strip_prefix("namenode listening on ") {
                namenode = Some(addr.to_owned());
            }
            let up = line.starts_with("Ctrl-C or SIGTERM");
            lines.push(line);
            if up {
                break;
            }
        }
        // Keep draining stdout so the cluster never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        assert!(config.exists(), "no config file once up: {lines:?}");
        Self {
            child,
            config,
            namenode: namenode.unwrap(),
            dir,
            lines,
        }
    }

    /// As [`Cluster::start`], with a namenode that declares a silent datanode dead within
    /// about a second (for tests that kill nodes).
    pub fn start_failing_fast(extra: &[&str]) -> Self {
        Self::start(
            extra,
            &[
                ("CRAIL_NAMENODE_HEARTBEAT_INTERVAL", "200ms"),
                ("CRAIL_NAMENODE_HEARTBEAT_MISSES", "4"),
            ],
        )
    }

    /// A store client on node `host` (its `local_host`), as an engine there has.
    pub async fn store_on(&self, host: &str) -> crail_store::Store {
        crail_store::Store::connect(&self.client_on(host))
            .await
            .unwrap()
    }

    /// The cluster's client configuration, connecting from `host`.
    pub fn client_on(&self, host: &str) -> crail_store::ClientConfig {
        crail_store::Config::load(
            Some(self.config.as_path()),
            std::iter::empty::<(String, String)>(),
        )
        .unwrap()
        .client
        .with_local_host(host.parse().unwrap())
    }

    /// Runs `crail` with this cluster's client config in CRAIL_CONF.
    pub fn crail(&self, args: &[&str]) -> Output {
        Command::new(CRAIL)
            .args(args)
            .env("CRAIL_CONF", &self.config)
            .output()
            .unwrap()
    }

    /// As `crail`, and the command must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.crail(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The cluster's node processes (its children running `--crail-embedded-node HOST`):
    /// host and pid.
    pub fn node_pids(&self) -> Vec<(String, String)> {
        let parent = self.child.id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                // pid (comm) state ppid ...: the comm may hold spaces, so after the last ')'.
                let ppid = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .to_owned();
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                let host = cmd
                    .split("--crail-embedded-node ")
                    .nth(1)?
                    .trim()
                    .to_owned();
                (ppid == parent).then(|| (host, e.file_name().to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// Kills the node process of `host` with SIGKILL (no goodbye to anyone).
    pub fn kill_node(&self, host: &str) {
        let pid = self
            .node_pids()
            .into_iter()
            .find_map(|(h, pid)| (h == host).then_some(pid))
            .unwrap_or_else(|| panic!("no node process for {host}"));
        let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(status.success());
    }

    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    /// Waits for the cluster process to end; returns whether it succeeded and its stderr.
    pub fn wait(&mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err)
                    .unwrap();
                return (status.success(), err);
            }
            assert!(Instant::now() < deadline, "the cluster did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` ("-STOP", "-KILL", ...) to `child`.
fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls `done` every 100 ms until it holds; fails the test after 30 s.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number in column `col` of the row starting with `first` of a table `crail` printed.
pub fn cell(table: &str, first: &str, col: usize) -> u64 {
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in {table}"));
    row.split_whitespace().nth(col).unwrap().parse().unwrap()
}

/// Whether process `pid` still runs (a zombie does not).
pub fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// The cluster's listening sockets, from its announcement: (what, address); a Unix socket's
/// address starts with '@' (abstract).
pub fn endpoints(cluster: &Cluster) -> Vec<(String, String)> {
    let mut out = vec![("namenode".to_owned(), cluster.namenode.clone())];
    for line in cluster.lines.iter().map(|l| l.trim()) {
        if let Some(rest) = line.strip_prefix("datanode listening on ") {
            let addr = rest.split(' ').next().unwrap().to_owned();
            out.push(("datanode unix".into(), format!("@crail-datanode/{addr}")));
            out.push(("datanode".into(), addr));
        }
        for service in ["shuffle", "broadcast"] {
            if let Some(rest) = line.strip_prefix(&format!("{service} service on tcp:")) {
                let (tcp, unix) = rest.split_once(" and unix:").unwrap();
                let unix = unix.split(' ').next().unwrap();
                out.push((service.into(), tcp.to_owned()));
                out.push((format!("{service} unix"), unix.to_owned()));
            }
        }
    }
    out
}
