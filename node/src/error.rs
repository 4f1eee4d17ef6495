//! Why a node or a cluster could not start or stopped: one line each.

use std::net::IpAddr;
use std::path::PathBuf;

/// A node's or a cluster's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("{what}: cannot listen on {addr}: {cause}")]
    Listen {
        /// What was to listen: "namenode", "datanode", "shuffle service", ...
        what: String,
        /// The address (or `unix:@name`).
        addr: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Another node holds this flash file.
    #[error("{} is in use by another node", .0.display())]
    FlashInUse(PathBuf),
    /// A file of the node (a flash tier's lock) could not be opened.
    #[error("{}: {cause}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The store (the namenode or a tier) failed.
    #[error(transparent)]
    Store(#[from] crail_store::Error),
    /// The shuffle service failed.
    #[error("shuffle service: {0}")]
    Shuffle(#[from] crail_shuffle::Error),
    /// The broadcast service failed.
    #[error("broadcast service: {0}")]
    Broadcast(#[from] crail_broadcast::Error),
    /// A task of the node ended without its result (it panicked or was cancelled).
    #[error("{what}'s task failed: {cause}")]
    Task {
        /// Which part of the node.
        what: String,
        /// The runtime's account.
        cause: String,
    },
    /// A node process of an embedded cluster could not be started.
    #[error("cannot start a node process: {0}")]
    Spawn(std::io::Error),
    /// A node of an embedded cluster failed to start.
    #[error("node {host} failed to start: {reason}")]
    NodeFailed {
        /// The node.
        host: IpAddr,
        /// Its own error line, or its exit status.
        reason: String,
    },
    /// A node of an embedded cluster did not start in time.
    #[error("node {host} did not start within {secs}s")]
    NodeSlow {
        /// The node.
        host: IpAddr,
        /// The time it had.
        secs: u64,
    },
    /// A node of an embedded cluster stopped while the cluster was meant to serve.
    #[error("node {host} stopped unexpectedly ({status})")]
    NodeStopped {
        /// The node.
        host: IpAddr,
        /// Its exit status.
        status: String,
    },
    /// An embedded node's process could not read what it is to be.
    #[error("embedded node: {0}")]
    Child(String),
}

impl Error {
    pub(crate) fn listen(what: &str, addr: impl ToString, cause: std::io::Error) -> Self {
        Self::Listen {
            what: what.to_owned(),
            addr: addr.to_string(),
            cause,
        }
    }

    pub(crate) fn task(what: &str, cause: impl ToString) -> Self {
        Self::Task {
            what: what.to_owned(),
            cause: cause.to_string(),
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
