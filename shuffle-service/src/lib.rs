//! The shuffle service: map output written per node into writer groups (one file per slot,
//! each partition in extents of its own), committed exactly once per map with a compact
//! binary record, and read back by partition and map ranges.
//!
//! - [`Shuffles`] registers and unregisters shuffles, lists their committed maps (map status:
//!   bytes per partition) and starts reads ([`PartitionReader`]).
//! - [`Slots`] are one node's writer groups: [`Slots::lease`] gives a map task a
//!   [`MapWriter`], which writes per partition where the slots place its bytes, and commits.
//!
//! Everything a shuffle is lives in the store (see [`layout`]): any node can serve any read,
//! and the namenode's refusal to rename onto an existing name is what makes a map's first
//! commit the only one.
//!
//! Two halves over shared modules ([`layout`], the lease types, the wire messages): what
//! engines link ([`ShuffleClient`], [`MapWriter`], [`PartitionReader`], [`Shuffles`]) and, with
//! the `node` feature, what runs on a node ([`Slots`], [`service`]).

mod engine;
mod error;
pub mod layout;
mod lease;
#[cfg(feature = "node")]
mod node;
mod wire;

pub use crail_node_service::Endpoint;
pub use engine::client::{ShuffleClient, advertised_hosts};
pub use engine::reader::{Chunk, PartitionReader, UNIT, WINDOW, lengths};
pub use engine::shuffles::{DEFAULT_PREFETCH, Shuffles};
pub use engine::writer::{DIRECT, GATHER, MapWriter};
pub use error::{Error, Result};
pub use layout::{Commit, GroupRef, Meta, RecordRef, Run, Segment, ShuffleId};
pub use lease::{GroupLease, Outcome, Placed};
#[cfg(feature = "node")]
pub use node::{
    service,
    slots::{MIN_EXTENT, Slots},
};
