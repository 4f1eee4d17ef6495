//! Broadcast variables: a value written once by one task and read whole by tasks on every
//! node (Spark's broadcast variables, a Ray object every worker needs).
//!
//! A variable is a keyvalue in the store, `/crail-broadcast/<app>/<id>` (a table per
//! application), its blocks striped across every datanode of the fastest class with room
//! ([`crail_store::Placement::spread`]): no node holds more of it than another, so reading it
//! everywhere loads every node alike. The keyvalue is what makes a variable safe to share:
//!
//! - A put writes a pending value that becomes current only when the writer closes it, so a
//!   get sees a whole value or none, never a torn one.
//! - A get holds the value it found: a destroy (or a put replacing it) frees the blocks only
//!   after readers holding them let go, so a reader never reads blocks given to someone else.
//!
//! [`NodeCache`] is a node's copy of the variables its readers ask for, so a variable crosses
//! the network to a node once however many of its tasks read it. Every `crail node` runs the
//! broadcast [`service`], which serves its cache to the node's engines; they reach it through
//! a [`BroadcastClient`].

//!
//! Two halves over shared modules (the variables in the store, a copy's memory, the wire
//! messages): what engines link ([`BroadcastClient`]) and, with the `node` feature, what runs
//! on a node ([`NodeCache`], [`service`]).

mod engine;
mod error;
mod memory;
#[cfg(feature = "node")]
mod node;
mod vars;
mod wire;

pub use crail_node_service::Endpoint;
pub use engine::client::{BroadcastClient, RemoteReader, advertised_hosts};
pub use error::{Error, Result};
#[cfg(feature = "node")]
pub use node::cache::{CachedReader, NodeCache};
#[cfg(feature = "node")]
pub use node::service;
pub use vars::{Broadcasts, CacheStats, ROOT, VarId, VarReader};
