//! `crail` child processes for the integration tests: started without CRAIL_CONF, their
//! first stdout line (the announcement of where they listen) read, killed on drop.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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
