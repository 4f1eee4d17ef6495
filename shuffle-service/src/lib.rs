//! The shuffle service: map output written per node into writer groups of append files, one
//! file per reduce partition per slot, committed exactly once per map, and read back by
//! partition and map ranges.
//!
//! - [`Shuffles`] registers and unregisters shuffles, lists their committed maps (map status:
//!   bytes per partition) and starts reads ([`PartitionReader`]).
//! - [`Slots`] are one node's writer groups: [`Slots::lease`] gives a map task a
//!   [`MapWriter`], which appends per partition and commits.
//!
//! Everything a shuffle is lives in the store (see [`layout`]): any node can serve any read,
//! and the namenode's refusal to rename onto an existing name is what makes a map's first
//! commit the only one.

mod client;
mod error;
pub mod layout;
mod lease;
mod reader;
pub mod service;
mod shuffles;
mod slots;
mod wire;
mod writer;

pub use client::ShuffleClient;
pub use crail_node_service::Endpoint;
pub use error::{Error, Result};
pub use layout::{Commit, Meta, Segment, ShuffleId};
pub use lease::{GroupFile, GroupLease, Outcome};
pub use reader::{Chunk, PartitionReader, lengths};
pub use shuffles::{DEFAULT_PREFETCH, Shuffles};
pub use slots::Slots;
pub use writer::MapWriter;
