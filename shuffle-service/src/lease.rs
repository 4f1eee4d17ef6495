//! What a map task borrows from its node: a writer group's lease tickets ([`GroupLease`]),
//! how it gives the group back ([`Outcome`]) and to whom ([`Lender`]: the node's service over
//! a connection, or slots in this process). Shared by the engine's half (the writer) and the
//! node's half (the slots).

use std::net::IpAddr;
use std::sync::Arc;

use crail_store::LeaseTicket;
use futures_util::future::BoxFuture;

use crate::layout::ShuffleId;

/// A writer group lent to one map task: where each partition's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLease {
    /// The shuffle.
    pub id: ShuffleId,
    /// The lending node's name in group file names.
    pub host: String,
    /// The slot.
    pub slot: u32,
    /// This loan's number, to give the group back with.
    pub lease: u64,
    /// Per partition and copy (0: the file, then its replicas), the lease to append through.
    pub files: Vec<GroupFile>,
    /// Where the replicas live (one host per extra copy): commit records get copies there.
    pub homes: Vec<IpAddr>,
}

/// One file of a lent group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFile {
    /// The partition.
    pub partition: u32,
    /// 0 for the group's own file, k for its k-th replica.
    pub copy: u32,
    /// The lease, appending from the committed end.
    pub ticket: LeaseTicket,
}

/// How a map task ended, as it gives its group back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed: these partitions' files now end here (every copy alike).
    Committed(Vec<(u32, u64)>),
    /// Nothing of the task is read; its bytes past the committed ends are written over.
    Aborted,
    /// A file failed, or the task's client went away: retire the group.
    Broken,
}

/// Where a lent group goes back when its task ends.
pub(crate) trait Lender: Send + Sync + std::fmt::Debug + 'static {
    /// Gives group `lease` back with how its task ended. A lender that cannot be told (its
    /// connection broke) retires the group on its own.
    fn give_back(self: Arc<Self>, lease: u64, outcome: Outcome) -> BoxFuture<'static, ()>;
}
