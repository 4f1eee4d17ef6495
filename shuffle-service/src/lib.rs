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
pub use engine::reader::{Chunk, PartitionReader, WINDOW, lengths};
pub use engine::shuffles::{DEFAULT_PREFETCH, Shuffles};
pub use engine::writer::MapWriter;
pub use error::{Error, Result};
pub use layout::{Commit, Meta, PIECE, Piece, Segment, ShuffleId};
pub use lease::{GroupFile, GroupLease, Outcome};
#[cfg(feature = "node")]
pub use node::{service, slots::Slots};
