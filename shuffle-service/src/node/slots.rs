//! A node's writer groups: per shuffle, at most `slots` groups lent to map tasks at once, each
//! one file (and one per replica) that every task on the slot writes to.
//!
//! The node's service owns the groups' write leases, renews them, and places every task's
//! bytes: each partition fills its open extent of the group file, then gets a new one at the
//! file's end (twice the last, at least [`MIN_EXTENT`], at most a block and never across
//! one), and each record goes at the end. The service allocates the file's blocks as it
//! grows (a few ahead) and commits its size (whole blocks) when a task places its record, so
//! a task writes into allocated space and never talks to the namenode about its file. A map task borrows the leases as [`GroupLease`]
//! tickets, asks for places as it writes ([`Slots::place`]), writes through its own store
//! client (in the engine's process, on the same node), then gives the group back with the
//! outcome. The places an aborted task was given stay unused; a group given back broken, or
//! not at all (its client went away), is retired: its leases are released (what was committed
//! stays readable) and the slot's next task gets a new file under a new slot number, so no
//! later task writes where an unfinished commit may point.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crail_store::{CreateOptions, Placement, Store, WriteLease};
use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::writer::MapWriter;
use crate::error::{Error, Result};
use crate::layout::{Meta, ShuffleId};
use crate::lease::{GroupLease, Lender, Outcome, Placed};

/// Blocks a group file grows ahead of its places, at most.
const BLOCKS_AHEAD: u64 = 16;

/// How often the groups' write leases are renewed (the namenode's lease timeout defaults to
/// 10 s).
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// A partition's first extent in a group file; each next one is twice the last, up to a
/// block. Small, so a shuffle of many partitions holds little beyond its bytes.
pub const MIN_EXTENT: u64 = 4 << 10;

/// The most bytes one place may ask for (a task's writes larger than this ask in parts).
pub(crate) const MAX_PLACE: u64 = 1 << 30;

/// The writer groups of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// The node's name in group file names (its address).
    host: String,
    /// Slots per shuffle: how many map tasks of a shuffle write at once on this node.
    slots: usize,
    state: parking_lot::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    shuffles: HashMap<ShuffleId, Arc<Groups>>,
    /// Groups out on loan, by loan number.
    lent: HashMap<u64, Loan>,
}

#[derive(Debug)]
struct Loan {
    groups: Arc<Groups>,
    group: Arc<Group>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Groups {
    id: ShuffleId,
    meta: Meta,
    permits: Arc<Semaphore>,
    slots: parking_lot::Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Groups not lent.
    free: Vec<Arc<Group>>,
    /// Every live group (for renewal).
    all: Vec<Arc<Group>>,
    /// The next new slot's number (a retired group's number is not reused: its files stay).
    next: u32,
}

#[derive(Debug)]
struct Group {
    slot: u32,
    /// Per copy: the file's lease.
    files: Vec<WriteLease>,
    arena: tokio::sync::Mutex<Arena>,
    /// A renewal or an allocation failed: retire when it comes back.
    broken: AtomicBool,
}

/// Where the next bytes of a group file go.
#[derive(Debug, Default)]
struct Arena {
    /// The first byte no extent or record holds.
    end: u64,
    /// Bytes in the blocks allocated in every copy (whole blocks).
    allocated: u64,
    /// The committed size (whole blocks): up to the last record placed.
    committed: u64,
    /// Per partition: its open extent.
    open: HashMap<u32, Extent>,
}

#[derive(Debug, Clone, Copy)]
struct Extent {
    /// The next free byte.
    at: u64,
    /// Free bytes from `at`.
    room: u64,
    /// The extent's size (the next is twice it).
    size: u64,
}

impl Arena {
    /// Places `len` bytes of `partition`: in its open extent, then in new ones.
    fn place(&mut self, partition: u32, mut len: u64, block: u64, runs: &mut Vec<(u32, u64, u32)>) {
        while len > 0 {
            let extent = match self.open.get_mut(&partition) {
                Some(e) if e.room > 0 => e,
                open => {
                    let last = open.map_or(0, |e| e.size);
                    let wanted = (last * 2)
                        .max(MIN_EXTENT)
                        .max(len.next_multiple_of(MIN_EXTENT))
                        .min(block);
                    let size = wanted.min(block - self.end % block);
                    let extent = Extent {
                        at: self.end,
                        room: size,
                        size,
                    };
                    self.end += size;
                    self.open.insert(partition, extent);
                    match self.open.get_mut(&partition) {
                        Some(e) => e,
                        None => return,
                    }
                }
            };
            let n = len.min(extent.room);
            runs.push((partition, extent.at, n as u32));
            extent.at += n;
            extent.room -= n;
            len -= n;
        }
    }
}

impl Slots {
    /// The slots of the node at `host` (its address, used in file names), `slots` per
    /// shuffle, owning group files through `store` (whose local host should be `host`, so
    /// group files land on this node's datanodes first). Renews the group files' leases in
    /// the background while the runtime runs.
    pub fn new(store: Store, host: impl Into<String>, slots: usize) -> Self {
        let inner = Arc::new(Inner {
            store,
            host: host.into(),
            slots: slots.max(1),
            state: parking_lot::Mutex::new(State::default()),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                inner.renew().await;
            }
        });
        Self { inner }
    }

    /// The node's name in group file names.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The store the groups are owned through.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Leases a writer group of this node to attempt `attempt` of map `map`, waiting while
    /// every slot of the shuffle is busy, and writes through this node's own store client
    /// (for engines that embed the node's slots).
    pub async fn lease(&self, id: &ShuffleId, map: u32, attempt: u64) -> Result<MapWriter> {
        let (group, meta) = self.lend(id, map).await?;
        Ok(MapWriter::new(
            self.inner.store.clone(),
            meta,
            map,
            attempt,
            group,
            Arc::new(self.clone()),
        ))
    }

    /// Lends a group for map `map` (waiting for a free slot): the tickets its task writes
    /// through, and the shuffle's meta. Give it back with [`Slots::give_back`].
    pub async fn lend(&self, id: &ShuffleId, map: u32) -> Result<(GroupLease, Meta)> {
        let groups = self.groups(id).await?;
        if map >= groups.meta.maps {
            return Err(Error::MapOutOfRange {
                id: id.clone(),
                map,
                maps: groups.meta.maps,
            });
        }
        let permit = Arc::clone(&groups.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::UnknownShuffle { id: id.clone() })?;
        let group = self.take(&groups).await?;
        // Random, so a peer cannot place or release another task's loan by counting.
        let lease = loop {
            let lease = getrandom::u64().map_err(|e| {
                crail_store::Error::from(std::io::Error::other(format!("no randomness: {e}")))
            })?;
            if lease != 0 && !self.inner.state.lock().lent.contains_key(&lease) {
                break lease;
            }
        };
        let committed = group.arena.lock().await.committed;
        let lent = GroupLease {
            id: id.clone(),
            host: self.inner.host.clone(),
            slot: group.slot,
            lease,
            files: group.files.iter().map(|f| f.ticket(committed)).collect(),
        };
        let meta = groups.meta.clone();
        self.inner.state.lock().lent.insert(
            lease,
            Loan {
                groups,
                group,
                _permit: permit,
            },
        );
        Ok((lent, meta))
    }

    /// Places the bytes of loan `lease`'s task: `wants` (partition, bytes) in the partitions'
    /// extents, then a record of `record` bytes (none when 0) at the file's end, growing the
    /// file (every copy) by whole blocks as needed.
    pub async fn place(&self, lease: u64, wants: &[(u32, u64)], record: u64) -> Result<Placed> {
        let (groups, group) = {
            let state = self.inner.state.lock();
            let loan = state.lent.get(&lease).ok_or_else(|| Error::Invalid {
                id: ShuffleId::new("", 0),
                problem: format!("lease {lease} is not lent"),
            })?;
            (Arc::clone(&loan.groups), Arc::clone(&loan.group))
        };
        let partitions = groups.meta.partitions;
        let asked = wants
            .iter()
            .try_fold(record, |sum, w| sum.checked_add(w.1))
            .filter(|&sum| sum <= MAX_PLACE);
        if asked.is_none() {
            return Err(Error::Invalid {
                id: groups.id.clone(),
                problem: format!("a place of more than {MAX_PLACE} bytes at once"),
            });
        }
        if let Some(&(p, _)) = wants.iter().find(|(p, _)| *p >= partitions) {
            return Err(Error::PartitionOutOfRange {
                id: groups.id.clone(),
                partition: p,
                partitions,
            });
        }
        let block = self.inner.store.block_size().max(MIN_EXTENT);
        let mut arena = group.arena.lock().await;
        let mut placed = Placed {
            runs: Vec::with_capacity(wants.len()),
            ..Placed::default()
        };
        for &(partition, len) in wants {
            arena.place(partition, len, block, &mut placed.runs);
        }
        if record > 0 {
            placed.record = arena.end;
            arena.end += record;
        }
        let grown = async {
            if arena.end > arena.allocated {
                // Ahead by an eighth of the file (at most BLOCKS_AHEAD blocks): a task
                // streaming large writes asks the namenode once per several blocks.
                let have = arena.allocated / block;
                let need = arena.end.div_ceil(block);
                let want = need + (need / 8).min(BLOCKS_AHEAD);
                // The blocks every copy holds (a copy with more has them found again on the
                // next growth: allocate returns blocks that exist).
                let mut got = want;
                for file in &group.files {
                    match file.allocate(have, want - have).await {
                        Err(crail_store::Error::StoreFull { .. }) if want > need => {
                            file.allocate(have, need - have).await?;
                            got = need;
                        }
                        other => {
                            other?;
                        }
                    }
                }
                arena.allocated = got * block;
            }
            // A record closes its task's writes: what it names must be committed for readers.
            if record > 0 && arena.committed < arena.allocated {
                for file in &group.files {
                    file.commit_shared(arena.allocated).await?;
                }
                arena.committed = arena.allocated;
            }
            Ok::<_, crail_store::Error>(())
        }
        .await;
        if let Err(e) = grown {
            // Places were handed out past what the files hold: no later task may use them.
            group.broken.store(true, Ordering::Relaxed);
            return Err(e.into());
        }
        placed.size = arena.allocated;
        Ok(placed)
    }

    /// Takes back loan `lease` as it ended. Unknown loans (given back already, or of a
    /// forgotten shuffle) are ignored.
    pub fn give_back(&self, lease: u64, outcome: Outcome) {
        let Some(loan) = self.inner.state.lock().lent.remove(&lease) else {
            return;
        };
        let reusable = outcome != Outcome::Broken && !loan.group.broken.load(Ordering::Relaxed);
        let mut state = loan.groups.slots.lock();
        if reusable {
            state.free.push(loan.group);
        } else {
            // Its leases go when the last handle drops (released in the background); the
            // files and what is committed in them stay.
            state.all.retain(|other| !Arc::ptr_eq(other, &loan.group));
        }
    }

    /// Drops this node's groups of a shuffle (their files go when the shuffle is deleted).
    pub fn forget(&self, id: &ShuffleId) {
        let mut state = self.inner.state.lock();
        if let Some(groups) = state.shuffles.remove(id) {
            groups.permits.close();
        }
        state.lent.retain(|_, loan| &loan.groups.id != id);
    }

    /// Drops this node's groups of every shuffle of `app`.
    pub fn forget_app(&self, app: &str) {
        let ids: Vec<ShuffleId> = {
            let state = self.inner.state.lock();
            state
                .shuffles
                .keys()
                .filter(|id| id.app == app)
                .cloned()
                .collect()
        };
        for id in ids {
            self.forget(&id);
        }
    }

    /// The shuffles this node has groups of.
    pub(crate) fn known(&self) -> Vec<ShuffleId> {
        self.inner.state.lock().shuffles.keys().cloned().collect()
    }

    async fn groups(&self, id: &ShuffleId) -> Result<Arc<Groups>> {
        if let Some(groups) = self.inner.state.lock().shuffles.get(id) {
            return Ok(Arc::clone(groups));
        }
        let meta = crate::engine::shuffles::read_meta(&self.inner.store, id).await?;
        let mut state = self.inner.state.lock();
        let groups = state.shuffles.entry(id.clone()).or_insert_with(|| {
            Arc::new(Groups {
                id: id.clone(),
                meta,
                permits: Arc::new(Semaphore::new(self.inner.slots)),
                slots: parking_lot::Mutex::new(SlotState::default()),
            })
        });
        Ok(Arc::clone(groups))
    }

    /// A free group, or a new one on a new slot with its files created.
    async fn take(&self, groups: &Groups) -> Result<Arc<Group>> {
        let slot = {
            let mut state = groups.slots.lock();
            if let Some(group) = state.free.pop() {
                return Ok(group);
            }
            state.next += 1;
            state.next - 1
        };
        let group = Arc::new(self.create(groups, slot).await?);
        groups.slots.lock().all.push(Arc::clone(&group));
        Ok(group)
    }

    /// Creates a slot's files: the group's own on this node, and each replica on another
    /// node's datanodes.
    async fn create(&self, groups: &Groups, slot: u32) -> Result<Group> {
        let id = &groups.id;
        let copies = groups.meta.replication.max(1);
        let homes = if copies > 1 {
            self.replica_homes(id, copies).await?
        } else {
            Vec::new()
        };
        let store = &self.inner.store;
        let mut files = Vec::with_capacity(copies as usize);
        for copy in 0..copies {
            let path = id.group_file(&self.inner.host, slot, copy);
            let options = match copy {
                0 => CreateOptions::default(),
                c => CreateOptions::default()
                    .placement(Placement::default().location(homes[c as usize - 1])),
            };
            let created = store.create_file(&path, &options).await;
            files.push(created.map_err(|e| match e {
                crail_store::Error::NotFound { .. } => Error::UnknownShuffle { id: id.clone() },
                e => e.into(),
            })?);
        }
        Ok(Group {
            slot,
            files,
            arena: tokio::sync::Mutex::new(Arena::default()),
            broken: AtomicBool::new(false),
        })
    }
    /// The hosts of this node's replicas: the other hosts with datanodes, in address order
    /// starting after this one, one per extra copy.
    async fn replica_homes(&self, id: &ShuffleId, copies: u32) -> Result<Vec<IpAddr>> {
        let info = self.inner.store.cluster_info().await?;
        let mut hosts: Vec<IpAddr> = info
            .datanodes
            .iter()
            .filter(|d| d.alive)
            .map(|d| d.host)
            .collect();
        hosts.sort();
        hosts.dedup();
        let me: Option<IpAddr> = self.inner.host.parse().ok();
        let start = me
            .and_then(|me| hosts.iter().position(|h| *h > me))
            .unwrap_or(0);
        let others: Vec<IpAddr> = hosts[start..]
            .iter()
            .chain(&hosts[..start])
            .copied()
            .filter(|h| Some(*h) != me)
            .collect();
        if others.len() + 1 < copies as usize {
            return Err(Error::Invalid {
                id: id.clone(),
                problem: format!(
                    "replication {copies} needs {copies} hosts with datanodes; the store has {}",
                    others.len() + 1
                ),
            });
        }
        Ok(others[..copies as usize - 1].to_vec())
    }
}

impl Inner {
    async fn renew(&self) {
        let groups: Vec<Arc<Group>> = {
            let state = self.state.lock();
            state
                .shuffles
                .values()
                .flat_map(|g| g.slots.lock().all.clone())
                .collect()
        };
        let renewals = groups.iter().flat_map(|group| {
            group.files.iter().map(move |file| async move {
                if file.renew().await.is_err() {
                    group.broken.store(true, Ordering::Relaxed);
                }
            })
        });
        futures_util::future::join_all(renewals).await;
    }
}

/// A group lent in this process goes back at once.
impl Lender for Slots {
    fn place(
        self: Arc<Self>,
        lease: u64,
        wants: Vec<(u32, u64)>,
        record: u64,
    ) -> BoxFuture<'static, Result<Placed>> {
        Box::pin(async move { Slots::place(&self, lease, &wants, record).await })
    }

    fn give_back(self: Arc<Self>, lease: u64, outcome: Outcome) -> BoxFuture<'static, ()> {
        Slots::give_back(&self, lease, outcome);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_double_up_to_a_block_and_never_cross_one() {
        let block = 1 << 20;
        let mut arena = Arena::default();
        let mut runs = Vec::new();
        for _ in 0..600 {
            for p in 0..3 {
                arena.place(p, 1000, block, &mut runs);
            }
        }
        // Partition 0's runs: contiguous within extents of 4, 8, 16 ... KiB.
        let mut sizes: Vec<u64> = Vec::new();
        let mut last_end = u64::MAX;
        for &(_, at, len) in runs.iter().filter(|r| r.0 == 0) {
            if at != last_end {
                sizes.push(0);
            }
            *sizes.last_mut().unwrap() += u64::from(len);
            last_end = at + u64::from(len);
            assert_eq!(
                at / block,
                (at + u64::from(len) - 1) / block,
                "a run across blocks"
            );
        }
        assert!(sizes.len() <= 12, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<u64>(), 600_000);
        // The file holds the bytes plus at most one open extent per partition.
        assert!(arena.end <= 3 * 600_000 + 3 * block, "{}", arena.end);
    }
}
