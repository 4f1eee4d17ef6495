//! Map output: a node's slots, each owning a writer group (one append file per partition) per
//! shuffle, leased to one map task at a time.
//!
//! A task appends its records per partition to its group's files and commits. Committing
//! syncs every file it touched (their sizes are committed in the namenode, their leases kept)
//! and then records its segments as `maps/<map>` by a rename the namenode refuses when the
//! name exists, so the first attempt of a map to commit is the only one ever read. The next
//! task on the slot appends after what is committed; a task that aborts (or is dropped, or
//! loses its client) leaves its bytes to be overwritten. A group whose file failed is retired
//! and the slot gets fresh files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crail_store::{CreateOptions, Error as StoreError, FileWriter, Store};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::layout::{Commit, Meta, Segment, ShuffleId, to_json};

/// How often idle group files have their write leases renewed (the namenode's lease timeout
/// defaults to 10 s).
const RENEW_EVERY: Duration = Duration::from_secs(2);

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
    shuffles: parking_lot::Mutex<HashMap<ShuffleId, Arc<Groups>>>,
}

#[derive(Debug)]
struct Groups {
    meta: Meta,
    permits: Arc<Semaphore>,
    slots: parking_lot::Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Groups not leased.
    free: Vec<Arc<Mutex<Group>>>,
    /// Every live group (for renewal).
    all: Vec<Arc<Mutex<Group>>>,
    /// The next new slot's number (a retired group's number is not reused: its files stay).
    next: usize,
}

impl Groups {
    /// A free group, or a new one on a new slot.
    fn take(&self) -> Arc<Mutex<Group>> {
        let mut state = self.slots.lock();
        if let Some(group) = state.free.pop() {
            return group;
        }
        let group = Arc::new(Mutex::new(Group {
            slot: state.next,
            files: HashMap::new(),
            broken: false,
        }));
        state.next += 1;
        state.all.push(Arc::clone(&group));
        group
    }

    /// A group back from its task: free again, or retired when `reusable` is false.
    fn put_back(&self, group: Arc<Mutex<Group>>, reusable: bool) {
        let mut state = self.slots.lock();
        if reusable {
            state.free.push(group);
        } else {
            state.all.retain(|other| !Arc::ptr_eq(other, &group));
        }
    }
}

#[derive(Debug)]
struct Group {
    slot: usize,
    /// Open files by partition, and how far each is committed.
    files: HashMap<u32, (FileWriter, u64)>,
    /// A file failed: the group is dropped when its task ends.
    broken: bool,
}

impl Slots {
    /// The slots of the node at `host` (its address, used in file names), `slots` per
    /// shuffle, writing through `store` (whose local host should be `host`, so group files
    /// land on this node's datanodes first). Renews the group files' leases in the
    /// background while the runtime runs.
    pub fn new(store: Store, host: impl Into<String>, slots: usize) -> Self {
        let inner = Arc::new(Inner {
            store,
            host: host.into(),
            slots: slots.max(1),
            shuffles: parking_lot::Mutex::new(HashMap::new()),
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

    /// Leases a writer group of this node for attempt `attempt` of map `map`, waiting while
    /// every slot of the shuffle is busy.
    pub async fn lease(&self, id: &ShuffleId, map: u32, attempt: u64) -> Result<MapWriter> {
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
        let group = groups.take();
        Ok(MapWriter {
            slots: self.clone(),
            groups,
            group: Some(group),
            _permit: permit,
            id: id.clone(),
            map,
            attempt,
            started: HashMap::new(),
        })
    }

    /// Drops this node's groups of a shuffle (their files go when the shuffle is deleted).
    pub fn forget(&self, id: &ShuffleId) {
        if let Some(groups) = self.inner.shuffles.lock().remove(id) {
            groups.permits.close();
        }
    }

    async fn groups(&self, id: &ShuffleId) -> Result<Arc<Groups>> {
        if let Some(groups) = self.inner.shuffles.lock().get(id) {
            return Ok(Arc::clone(groups));
        }
        let meta = crate::read_meta(&self.inner.store, id).await?;
        let mut shuffles = self.inner.shuffles.lock();
        let groups = shuffles.entry(id.clone()).or_insert_with(|| {
            Arc::new(Groups {
                meta,
                permits: Arc::new(Semaphore::new(self.inner.slots)),
                slots: parking_lot::Mutex::new(SlotState::default()),
            })
        });
        Ok(Arc::clone(groups))
    }
}

impl Inner {
    async fn renew(&self) {
        let groups: Vec<Arc<Mutex<Group>>> = self
            .shuffles
            .lock()
            .values()
            .flat_map(|g| g.slots.lock().all.clone())
            .collect();
        for group in groups {
            let mut group = group.lock().await;
            let mut failed = false;
            for (writer, _) in group.files.values_mut() {
                failed |= writer.renew().await.is_err();
            }
            group.broken |= failed;
        }
    }
}

/// A map task's lease on a writer group. Commit it, or abort it; dropping it aborts.
#[derive(Debug)]
pub struct MapWriter {
    slots: Slots,
    groups: Arc<Groups>,
    group: Option<Arc<Mutex<Group>>>,
    _permit: OwnedSemaphorePermit,
    id: ShuffleId,
    map: u32,
    attempt: u64,
    /// Per partition written: where this task's bytes start, how many, their crc32c.
    started: HashMap<u32, (u64, u64, u32)>,
}

impl MapWriter {
    /// The shuffle's partitions.
    pub fn partitions(&self) -> u32 {
        self.groups.meta.partitions
    }

    /// Appends `bytes` (whole records of the shuffle's serializer) to `partition`.
    pub async fn write(&mut self, partition: u32, bytes: &[u8]) -> Result<()> {
        if partition >= self.groups.meta.partitions {
            return Err(Error::PartitionOutOfRange {
                id: self.id.clone(),
                partition,
                partitions: self.groups.meta.partitions,
            });
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let group = Arc::clone(self.group.as_ref().ok_or_else(|| self.closed())?);
        let mut group = group.lock().await;
        let result = self.append(&mut group, partition, bytes).await;
        if result.is_err() {
            group.broken = true;
        }
        result
    }

    async fn append(&mut self, group: &mut Group, partition: u32, bytes: &[u8]) -> Result<()> {
        if !group.files.contains_key(&partition) {
            let path = format!(
                "{}/{}",
                self.id.dir(),
                ShuffleId::group_file(partition, &self.slots.inner.host, group.slot)
            );
            let writer = self
                .slots
                .inner
                .store
                .create_file(&path, &CreateOptions::default())
                .await?
                .writer();
            group.files.insert(partition, (writer, 0));
        }
        let Some((writer, committed)) = group.files.get_mut(&partition) else {
            return Err(self.closed());
        };
        let entry = match self.started.get_mut(&partition) {
            Some(entry) => entry,
            None => {
                // Whatever an aborted task left past the committed end is overwritten.
                if writer.position() != *committed {
                    writer.seek(*committed).await?;
                }
                self.started.entry(partition).or_insert((*committed, 0, 0))
            }
        };
        writer.write(bytes).await?;
        entry.1 += bytes.len() as u64;
        entry.2 = crc32c::crc32c_append(entry.2, bytes);
        Ok(())
    }

    /// Makes this attempt the map's output, unless another attempt of the map committed first
    /// ([`Error::AlreadyCommitted`]: nothing of this attempt is ever read). Returns the commit
    /// (the map's segments, hence its per-partition lengths).
    pub async fn commit(mut self) -> Result<Commit> {
        let group = self.group.take().ok_or_else(|| self.closed())?;
        let result = self.commit_group(&group).await;
        self.give_back(group, result.is_ok()).await;
        result
    }

    async fn commit_group(&self, group: &Arc<Mutex<Group>>) -> Result<Commit> {
        let mut g = group.lock().await;
        let slot = g.slot;
        let mut segments = Vec::with_capacity(self.started.len());
        for (&partition, &(offset, len, crc)) in &self.started {
            let Some((writer, _)) = g.files.get_mut(&partition) else {
                return Err(self.closed());
            };
            if let Err(e) = writer.sync().await {
                g.broken = true;
                return Err(e.into());
            }
            segments.push(Segment {
                partition,
                file: ShuffleId::group_file(partition, &self.slots.inner.host, slot),
                offset,
                len,
                crc,
            });
        }
        drop(g);
        segments.sort_by_key(|s| s.partition);
        let commit = Commit {
            map: self.map,
            attempt: self.attempt,
            segments,
        };
        let store = &self.slots.inner.store;
        let pending = format!(
            "{}/.{}-{}-{}-{slot}",
            self.id.maps_dir(),
            self.map,
            self.attempt,
            self.slots.inner.host,
        );
        store
            .write_file(&pending, &to_json(&commit), &CreateOptions::default())
            .await?;
        let path = self.id.commit(self.map);
        match store.rename(&pending, &path).await {
            Ok(()) => Ok(commit),
            Err(StoreError::AlreadyExists { .. }) => {
                let _ = store.delete(&pending, false).await;
                let winner = crate::read_commit(store, &self.id, self.map).await?;
                Err(Error::AlreadyCommitted {
                    id: self.id.clone(),
                    map: self.map,
                    attempt: self.attempt,
                    winner: winner.attempt,
                })
            }
            Err(e) => {
                let _ = store.delete(&pending, false).await;
                Err(e.into())
            }
        }
    }

    /// Gives the group up: nothing this task wrote is read, and the next task on the slot
    /// writes over it.
    pub async fn abort(mut self) {
        if let Some(group) = self.group.take() {
            self.give_back(group, false).await;
        }
    }

    /// Returns the group to the free list; a committed task's bytes become the files'
    /// committed ends, anything else is written over by the next task.
    async fn give_back(&self, group: Arc<Mutex<Group>>, advance: bool) {
        let mut g = group.lock().await;
        if advance {
            for (partition, (offset, len, _)) in &self.started {
                if let Some((_, committed)) = g.files.get_mut(partition) {
                    *committed = offset + len;
                }
            }
        }
        let reusable = !g.broken;
        drop(g);
        self.groups.put_back(group, reusable);
    }

    fn closed(&self) -> Error {
        Error::Invalid {
            id: self.id.clone(),
            problem: format!(
                "map {} attempt {}: the writer is closed",
                self.map, self.attempt
            ),
        }
    }
}

impl Drop for MapWriter {
    fn drop(&mut self) {
        // Dropped without commit or abort (a task that failed, a client that went away): the
        // group goes back as after an abort, its uncommitted bytes to be written over.
        if let Some(group) = self.group.take() {
            let reusable = matches!(group.try_lock(), Ok(g) if !g.broken);
            self.groups.put_back(group, reusable);
        }
    }
}
