//! The shuffle service's errors: one line each, naming the shuffle, partition or map.

use crate::ShuffleId;

/// What can go wrong with a shuffle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such shuffle (never registered, or unregistered).
    #[error("shuffle {id} is not registered")]
    UnknownShuffle {
        /// The shuffle.
        id: ShuffleId,
    },
    /// `register` of a shuffle that exists.
    #[error("shuffle {id} is already registered")]
    AlreadyRegistered {
        /// The shuffle.
        id: ShuffleId,
    },
    /// A bad argument: an app name that is no path component, zero partitions, an unknown
    /// serializer, a range out of order.
    #[error("shuffle {id}: {problem}")]
    Invalid {
        /// The shuffle.
        id: ShuffleId,
        /// What is wrong.
        problem: String,
    },
    /// A partition past the shuffle's partitions.
    #[error("shuffle {id}: partition {partition} is out of range (it has {partitions})")]
    PartitionOutOfRange {
        /// The shuffle.
        id: ShuffleId,
        /// The partition asked for.
        partition: u32,
        /// How many it has.
        partitions: u32,
    },
    /// A map past the shuffle's maps.
    #[error("shuffle {id}: map {map} is out of range (it has {maps})")]
    MapOutOfRange {
        /// The shuffle.
        id: ShuffleId,
        /// The map asked for.
        map: u32,
        /// How many it has.
        maps: u32,
    },
    /// Another attempt of the map committed first; this attempt's output is never read.
    #[error(
        "shuffle {id}: map {map} attempt {attempt} was not committed: attempt {winner} of it already was"
    )]
    AlreadyCommitted {
        /// The shuffle.
        id: ShuffleId,
        /// The map.
        map: u32,
        /// The attempt refused.
        attempt: u64,
        /// The attempt that committed.
        winner: u64,
    },
    /// A map attempt of an earlier generation than the one committed (a late task of a stage
    /// run again since): its output is never read.
    #[error(
        "shuffle {id}: map {map} attempt {attempt} of generation {generation} was not committed: generation {committed} of the map already was (the stage ran again)"
    )]
    Superseded {
        /// The shuffle.
        id: ShuffleId,
        /// The map.
        map: u32,
        /// The attempt refused.
        attempt: u64,
        /// Its generation.
        generation: u32,
        /// The generation committed.
        committed: u32,
    },
    /// A read of maps that have not committed (yet).
    #[error("shuffle {id}: maps {maps:?} have not committed")]
    NotCommitted {
        /// The shuffle.
        id: ShuffleId,
        /// The maps missing, ascending.
        maps: Vec<u32>,
    },
    /// Committed data can no longer be read (its blocks were lost, or a checksum failed): the
    /// engine must run these maps again and commit them, then read again.
    #[error(
        "shuffle {id}: fetch failed for partition {partition}: maps {maps:?} must be recomputed ({cause})"
    )]
    FetchFailed {
        /// The shuffle.
        id: ShuffleId,
        /// The partition being read.
        partition: u32,
        /// The maps whose output was lost, ascending.
        maps: Vec<u32>,
        /// What the store said.
        cause: String,
    },
    /// A record kept in the store that does not parse (written by something else).
    #[error("shuffle {id}: {path}: bad record: {cause}")]
    BadRecord {
        /// The shuffle.
        id: ShuffleId,
        /// The record's path.
        path: String,
        /// What is wrong.
        cause: String,
    },
    /// A map's committed output was lost and this attempt could not take its place.
    #[error("shuffle {id}: map {map} could not replace its lost commit: {cause}")]
    CommitLost {
        /// The shuffle.
        id: ShuffleId,
        /// The map.
        map: u32,
        /// What the store said.
        cause: String,
    },
    /// A segment recorded in a piece larger than a reader holds at once (a record of another
    /// writer): reading it would take more memory than the reader's window.
    #[error(
        "shuffle {id}: map {map}'s segment of partition {partition} has a piece of {piece} bytes, more than a reader holds at once ({window} bytes)"
    )]
    Window {
        /// The shuffle.
        id: ShuffleId,
        /// The partition.
        partition: u32,
        /// The map.
        map: u32,
        /// The piece's bytes.
        piece: u64,
        /// The most a reader holds of one piece.
        window: u64,
    },
    /// The node's shuffle service could not be reached, refused the connection (a wrong
    /// secret), or the connection was lost.
    #[error(transparent)]
    Service(#[from] crail_node_service::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crail_store::Error),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
