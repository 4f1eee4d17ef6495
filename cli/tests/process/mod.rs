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
        let mut child = Command::new(CRAIL)
            .args(args)
            .env_remove("CRAIL_CONF")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let rest = line
            .trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (Self { child }, rest)
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

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
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
