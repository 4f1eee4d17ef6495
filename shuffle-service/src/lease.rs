//! What a map task borrows from its node: a writer group's lease tickets ([`GroupLease`]),
//! where its bytes go in the group's file ([`Placed`]), how it gives the group back
//! ([`Outcome`]) and to whom ([`Lender`]: the node's service over a connection, or slots in
//! this process). Shared by the engine's half (the writer) and the node's half (the slots).

use std::sync::Arc;

use crail_store::LeaseTicket;
use futures_util::future::BoxFuture;

use crate::error::Result;
use crate::layout::{GroupRef, ShuffleId};

/// A writer group lent to one map task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLease {
    /// The shuffle.
    pub id: ShuffleId,
    /// The lending node's name in group file names.
    pub host: String,
    /// The slot.
    pub slot: u32,
    /// This loan's number, to place bytes and give the group back with.
    pub lease: u64,
    /// Per copy of the group file (0: the file, then its replicas), the lease to write
    /// through; its size is what the group has committed so far.
    pub files: Vec<LeaseTicket>,
}

impl GroupLease {
    /// The group as commit records name it.
    pub fn group(&self) -> GroupRef {
        GroupRef {
            host: self.host.clone(),
            slot: self.slot,
            copies: self.files.len().max(1) as u32,
        }
    }
}

/// Where a task's bytes go in its group's file (every copy alike).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placed {
    /// The group file's committed size now: every place it names lies below it.
    pub size: u64,
    /// Per partition asked for, in the order asked: its runs as (partition, offset, length),
    /// each inside one extent of the partition (so inside one block).
    pub runs: Vec<(u32, u64, u32)>,
    /// Where the record asked for goes (0 when none was asked for).
    pub record: u64,
}

/// How a map task ended, as it gives its group back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed: its record names what it wrote.
    Committed,
    /// Nothing of the task is read; the places it was given stay unused.
    Aborted,
    /// A file failed, or the task's client went away: retire the group.
    Broken,
}

/// Where a lent group's places come from, and where it goes back when its task ends.
pub(crate) trait Lender: Send + Sync + std::fmt::Debug + 'static {
    /// Places `wants` (partition, bytes) in group `lease`'s file, and a record of `record`
    /// bytes after them (none when 0).
    fn place(
        self: Arc<Self>,
        lease: u64,
        wants: Vec<(u32, u64)>,
        record: u64,
    ) -> BoxFuture<'static, Result<Placed>>;

    /// Gives group `lease` back with how its task ended. A lender that cannot be told (its
    /// connection broke) retires the group on its own.
    fn give_back(self: Arc<Self>, lease: u64, outcome: Outcome) -> BoxFuture<'static, ()>;
}
