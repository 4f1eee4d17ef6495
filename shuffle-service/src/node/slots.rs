//! A node's writer groups: per shuffle, at most `slots` groups lent to map tasks at once, each
//! one file per partition (and per replica) that every task on the slot appends to.
//!
//! The node's service owns the groups' write leases and renews them; a map task borrows them
//! as [`GroupLease`] tickets and writes through its own store client (in the engine's process,
//! on the same node), then gives the group back with the outcome. A group given back broken,
//! or not at all (its client went away), is retired: its leases are released (what was
//! committed stays readable) and the slot's next task gets fresh files under a new slot
//! number, so no later task can write over bytes an unfinished commit may have recorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crail_store::{CreateOptions, Placement, Store, WriteLease};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::writer::MapWriter;
use crate::error::{Error, Result};
use crate::layout::{Meta, ShuffleId};
use crate::lease::{GroupFile, GroupLease, Lender, Outcome};

/// How often the groups' write leases are renewed (the namenode's lease timeout defaults to
/// 10 s).
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Group files created at once.
const CREATES: usize = 16;

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
    next_lease: AtomicU64,
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
    homes: Vec<IpAddr>,
    /// Per partition, per copy: the lease and the committed end.
    files: Vec<GroupFileState>,
    /// A renewal failed: retire when it comes back.
    broken: AtomicBool,
}

#[derive(Debug)]
struct GroupFileState {
    partition: u32,
    copy: u32,
    lease: WriteLease,
    end: AtomicU64,
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
            next_lease: AtomicU64::new(1),
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
        let lease = self.inner.next_lease.fetch_add(1, Ordering::Relaxed);
        let lent = GroupLease {
            id: id.clone(),
            host: self.inner.host.clone(),
            slot: group.slot,
            lease,
            homes: group.homes.clone(),
            files: group
                .files
                .iter()
                .map(|f| GroupFile {
                    partition: f.partition,
                    copy: f.copy,
                    ticket: f.lease.ticket(f.end.load(Ordering::Relaxed)),
                })
                .collect(),
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

    /// Takes back loan `lease` as it ended. Unknown loans (given back already, or of a
    /// forgotten shuffle) are ignored.
    pub fn give_back(&self, lease: u64, outcome: Outcome) {
        let Some(loan) = self.inner.state.lock().lent.remove(&lease) else {
            return;
        };
        let reusable = match outcome {
            Outcome::Committed(ends) => {
                for (partition, end) in ends {
                    for file in loan.group.files.iter().filter(|f| f.partition == partition) {
                        file.end.store(end, Ordering::Relaxed);
                    }
                }
                true
            }
            Outcome::Aborted => true,
            Outcome::Broken => false,
        };
        let reusable = reusable && !loan.group.broken.load(Ordering::Relaxed);
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

    /// Creates a slot's files: per partition the group's own file on this node, and each
    /// replica on another node's datanodes.
    async fn create(&self, groups: &Groups, slot: u32) -> Result<Group> {
        let id = &groups.id;
        let copies = groups.meta.replication.max(1);
        let homes = if copies > 1 {
            self.replica_homes(id, copies).await?
        } else {
            Vec::new()
        };
        let dir = id.dir();
        let store = &self.inner.store;
        let files = stream::iter(
            (0..groups.meta.partitions).flat_map(|p| (0..copies).map(move |c| (p, c))),
        )
        .map(|(partition, copy)| {
            let file = ShuffleId::group_file(partition, &self.inner.host, slot);
            let path = format!("{dir}/{}", ShuffleId::copy_file(&file, copy));
            let options = match copy {
                0 => CreateOptions::default(),
                c => CreateOptions::default()
                    .placement(Placement::default().location(homes[c as usize - 1])),
            };
            async move {
                let lease = store.create_file(&path, &options).await?;
                Ok::<_, Error>(GroupFileState {
                    partition,
                    copy,
                    lease,
                    end: AtomicU64::new(0),
                })
            }
        })
        .buffer_unordered(CREATES)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| match e {
            Error::Store(crail_store::Error::NotFound { .. }) => {
                Error::UnknownShuffle { id: id.clone() }
            }
            e => e,
        })?;
        Ok(Group {
            slot,
            homes,
            files,
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
                if file.lease.renew().await.is_err() {
                    group.broken.store(true, Ordering::Relaxed);
                }
            })
        });
        futures_util::future::join_all(renewals).await;
    }
}

/// A group lent in this process goes back at once.
impl Lender for Slots {
    fn give_back(self: Arc<Self>, lease: u64, outcome: Outcome) -> BoxFuture<'static, ()> {
        Slots::give_back(&self, lease, outcome);
        Box::pin(std::future::ready(()))
    }
}
