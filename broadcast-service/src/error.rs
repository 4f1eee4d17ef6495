//! Broadcast errors: one line each, naming the variable.

use std::time::Duration;

use crate::VarId;

/// What can go wrong with a broadcast variable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such variable: never put, or destroyed.
    #[error("broadcast variable {var} does not exist")]
    UnknownVariable {
        /// The variable.
        var: VarId,
    },
    /// A put of a variable that exists (values are immutable: destroy it first).
    #[error("broadcast variable {var} exists already (destroy it before putting it again)")]
    AlreadyExists {
        /// The variable.
        var: VarId,
    },
    /// A get gave up waiting for the variable's put to finish.
    #[error("broadcast variable {var} is still being written after {waited:?}")]
    BeingWritten {
        /// The variable.
        var: VarId,
        /// How long the get waited.
        waited: Duration,
    },
    /// The store has no room for the value; nothing of it is left.
    #[error("broadcast variable {var} does not fit in the store: {cause}")]
    StoreFull {
        /// The variable.
        var: VarId,
        /// The store's words.
        cause: String,
    },
    /// Part of the value cannot be read (a datanode holding a stripe died).
    #[error("broadcast variable {var} cannot be read: {cause}")]
    Unreadable {
        /// The variable.
        var: VarId,
        /// Why.
        cause: String,
    },
    /// The value's source failed during a put; nothing of it is left.
    #[error("broadcast variable {var}: reading the value to put failed: {cause}")]
    Source {
        /// The variable.
        var: VarId,
        /// Why.
        cause: String,
    },
    /// A bad argument (a name that is no path component).
    #[error("broadcast variable {var}: {problem}")]
    Invalid {
        /// The variable.
        var: VarId,
        /// What is wrong.
        problem: String,
    },
    /// A node's broadcast service cannot be reached, refused the connection (a wrong
    /// secret), or the connection was lost.
    #[error(transparent)]
    Service(#[from] crail_node_service::Error),
    /// The store failed otherwise.
    #[error(transparent)]
    Store(#[from] crail_store::Error),
}

/// Results of broadcast operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
