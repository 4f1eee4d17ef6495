//! Who may start a handshake at all: a local (Unix socket) peer must run as this process's
//! user, as root, or in a configured group (`SO_PEERCRED`); a remote address that failed the
//! handshake too often lately (a wrong secret, or stalling until the handshake timed out,
//! which holds a connection slot meanwhile) is turned away for a while before it may try
//! again.
//!
//! Every server that listens (the namenode, datanodes, the node services) keeps one gate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Failed handshakes from one address within [`WINDOW`] after which it is refused until the
/// window ends. A client that knows the secret never fails; the limit only slows a guesser
/// (and, like any such limit, also locks out a misconfigured client on that address).
pub const MAX_FAILURES: u32 = 20;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Addresses remembered at most (an address space cannot fill the server's memory).
const REMEMBERED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// A server's gate: see the module.
#[derive(Debug, Default)]
pub struct Gate {
    local_group: Option<u32>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Gate {
    /// A gate that also lets in local peers of group `local_group`.
    pub fn new(local_group: Option<u32>) -> Self {
        Self {
            local_group,
            failures: Mutex::default(),
        }
    }

    /// Lets a Unix-socket peer in if it runs as this process's user, as root, or with
    /// `local_group` as its group.
    pub fn check_local(&self, socket: impl AsFd) -> Result<()> {
        let peer = rustix::net::sockopt::socket_peercred(socket).map_err(std::io::Error::from)?;
        let me = rustix::process::geteuid();
        let (uid, gid) = (peer.uid.as_raw(), peer.gid.as_raw());
        if uid == me.as_raw() || peer.uid.is_root() || self.local_group == Some(gid) {
            return Ok(());
        }
        Err(Error::NotPermitted {
            operation: "connecting over the local socket".into(),
            reason: format!(
                "the peer runs as uid {uid} gid {gid}, not as this server's user ({}) nor in security.local_group",
                me.as_raw()
            ),
        })
    }

    /// Lets a remote address in unless it failed the handshake [`MAX_FAILURES`] times in the
    /// current window.
    pub fn check_remote(&self, ip: IpAddr) -> Result<()> {
        let now = Instant::now();
        let mut failures = self.failures.lock();
        match failures.get(&ip) {
            Some(f) if now.duration_since(f.since) >= WINDOW => {
                failures.remove(&ip);
                Ok(())
            }
            Some(f) if f.count >= MAX_FAILURES => Err(Error::AuthFailed {
                reason: format!(
                    "{} failed handshakes from {ip} within {}s: refused for a while",
                    f.count,
                    WINDOW.as_secs()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Counts the handshake of `ip` that ended in `error`, if it is one a guesser or a
    /// slow peer causes (a wrong secret, a timeout, frames that are no handshake); a version
    /// mismatch or a peer that just closed (a port probe) do not count.
    pub fn failed_with(&self, ip: IpAddr, error: &Error) {
        let counts = matches!(
            error,
            Error::AuthFailed { .. }
                | Error::Timeout { .. }
                | Error::FrameTooLarge { .. }
                | Error::Malformed { .. }
                | Error::UnexpectedMessage { .. }
                | Error::UnknownMessage { .. }
        );
        if counts {
            self.failed(ip);
        }
    }

    /// Counts a failed handshake of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if failures.len() >= REMEMBERED && !failures.contains_key(&ip) {
            failures.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if failures.len() >= REMEMBERED {
                return;
            }
        }
        let entry = failures.entry(ip).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(entry.since) >= WINDOW {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count += 1;
        if entry.count == MAX_FAILURES {
            tracing::warn!(%ip, "too many failed handshakes: refusing the address for a while");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_keeps_failing_is_refused_and_others_are_not() {
        let gate = Gate::new(None);
        let (bad, good): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES - 1 {
            gate.failed(bad);
        }
        gate.check_remote(bad).unwrap();
        gate.failed(bad);
        assert!(matches!(
            gate.check_remote(bad),
            Err(Error::AuthFailed { .. })
        ));
        gate.check_remote(good).unwrap();
    }

    #[test]
    fn a_local_peer_of_this_user_is_let_in() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Gate::new(None).check_local(&a).unwrap();
    }
}
