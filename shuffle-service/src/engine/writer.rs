//! Map output: a map task appends its records per partition to a borrowed writer group and
//! commits them as the map's output, exactly once.
//!
//! Committing syncs every file the task touched (their sizes are committed in the namenode,
//! the leases stay with the group's node) and then records the segments as `maps/<map>` by a
//! rename the namenode refuses when the name exists, so the first attempt of a map to commit
//! is the only one ever read. The one exception: when the committed attempt's data was lost
//! (its blocks' datanodes died), a new attempt replaces it, which is how an engine recovers
//! from a fetch failure. A task that aborts, fails or is dropped leaves its bytes to be
//! written over by the slot's next task.

use std::collections::{HashMap, VecDeque};

use crail_store::{CreateOptions, Error as StoreError, FileWriter, Placement, Store};
use futures_util::future::join_all;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::layout::{Commit, Meta, PIECE, Piece, Segment, ShuffleId, to_json};
use crate::lease::{GroupLease, Lender, Outcome};

/// Partitions a task keeps unsent bytes for (each holds a pool buffer of the store's
/// `buffer_size`); the least recently written beyond these are flushed.
const STAGED: usize = 8;

/// A map task's lease on a writer group. Commit it, or abort it; dropping it aborts.
#[derive(Debug)]
pub struct MapWriter {
    store: Store,
    meta: Meta,
    map: u32,
    attempt: u64,
    group: GroupLease,
    back: Option<Arc<dyn Lender>>,
    /// Per partition written: its copies' writers (file first, then replicas).
    writers: HashMap<u32, Vec<FileWriter>>,
    /// Per partition written: where this task's bytes start and how many.
    started: HashMap<u32, (u64, u64)>,
    /// Partitions whose writers hold bytes not sent yet, least recently written first.
    staged: VecDeque<u32>,
    broken: bool,
}

impl MapWriter {
    pub(crate) fn new(
        store: Store,
        meta: Meta,
        map: u32,
        attempt: u64,
        group: GroupLease,
        back: Arc<dyn Lender>,
    ) -> Self {
        Self {
            store,
            meta,
            map,
            attempt,
            group,
            back: Some(back),
            writers: HashMap::new(),
            started: HashMap::new(),
            staged: VecDeque::new(),
            broken: false,
        }
    }

    /// The shuffle.
    pub fn id(&self) -> &ShuffleId {
        &self.group.id
    }

    /// The shuffle's partitions.
    pub fn partitions(&self) -> u32 {
        self.meta.partitions
    }

    /// The slot (of the lending node) this task writes through.
    pub fn slot(&self) -> u32 {
        self.group.slot
    }

    /// Appends `bytes` (whole records of the shuffle's serializer) to `partition`.
    pub async fn write(&mut self, partition: u32, bytes: &[u8]) -> Result<()> {
        if partition >= self.meta.partitions {
            return Err(Error::PartitionOutOfRange {
                id: self.group.id.clone(),
                partition,
                partitions: self.meta.partitions,
            });
        }
        if self.back.is_none() || self.broken {
            return Err(self.closed());
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let result = self.append(partition, bytes).await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    async fn append(&mut self, partition: u32, bytes: &[u8]) -> Result<()> {
        if !self.writers.contains_key(&partition) {
            let mut files: Vec<_> = self
                .group
                .files
                .iter()
                .filter(|f| f.partition == partition)
                .collect();
            files.sort_by_key(|f| f.copy);
            let Some(first) = files.first() else {
                return Err(self.closed());
            };
            self.started.insert(partition, (first.ticket.size, 0));
            let writers = files
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let mut writer = self.store.borrow_lease(f.ticket.clone());
                    // The first copy's checksums are the segment's (every copy holds the
                    // same bytes).
                    if i == 0 {
                        writer.keep_runs(PIECE);
                    }
                    writer
                })
                .collect();
            self.writers.insert(partition, writers);
        }
        let (Some(writers), Some(entry)) = (
            self.writers.get_mut(&partition),
            self.started.get_mut(&partition),
        ) else {
            return Err(Error::Invalid {
                id: self.group.id.clone(),
                problem: "writer state lost".into(),
            });
        };
        for writer in writers.iter_mut() {
            writer.write(bytes).await?;
        }
        entry.1 += bytes.len() as u64;
        let buffered = writers.iter().any(|w| w.buffered() > 0);
        self.stage(partition, buffered).await
    }

    /// Notes whether `partition` holds unsent bytes, and sends those of the least recently
    /// written partitions beyond [`STAGED`]: a task writing many small partitions holds a few
    /// pool buffers (and those of writes in flight), not one per partition.
    async fn stage(&mut self, partition: u32, buffered: bool) -> Result<()> {
        self.staged.retain(|&p| p != partition);
        if buffered {
            self.staged.push_back(partition);
        }
        while self.staged.len() > STAGED {
            let Some(oldest) = self.staged.pop_front() else {
                break;
            };
            for writer in self.writers.get_mut(&oldest).into_iter().flatten() {
                writer.send_buffered().await?;
            }
        }
        Ok(())
    }

    /// Makes this attempt the map's output, unless another attempt of the map committed first
    /// and its output is still readable ([`Error::AlreadyCommitted`]: nothing of this attempt
    /// is ever read). Returns the commit (the map's segments, hence its per-partition
    /// lengths).
    pub async fn commit(mut self) -> Result<Commit> {
        let back = self.back.take().ok_or_else(|| self.closed())?;
        if self.broken {
            back.give_back(self.group.lease, Outcome::Broken).await;
            return Err(self.closed());
        }
        let synced = join_all(
            self.writers
                .values_mut()
                .flat_map(|w| w.iter_mut())
                .map(|w| w.sync()),
        )
        .await;
        if let Some(Err(e)) = synced.into_iter().find(|r| r.is_err()) {
            back.give_back(self.group.lease, Outcome::Broken).await;
            return Err(e.into());
        }
        let copies = self.meta.replication.max(1);
        let mut segments = Vec::with_capacity(self.started.len());
        for (&partition, &(offset, len)) in &self.started {
            // The segment's crc32c from those its writer computed for the store (the first
            // copy's: every copy holds the same bytes), not from hashing it again.
            let first = self.writers.get(&partition).and_then(|w| w.first());
            let crc = first.and_then(FileWriter::appended_crc);
            let runs = first
                .and_then(FileWriter::appended_runs)
                .unwrap_or_default();
            let Some(crc) = crc else {
                back.give_back(self.group.lease, Outcome::Broken).await;
                return Err(Error::Invalid {
                    id: self.group.id.clone(),
                    problem: format!("partition {partition}: no checksum of its bytes"),
                });
            };
            segments.push(Segment {
                partition,
                file: ShuffleId::group_file(partition, &self.group.host, self.group.slot),
                offset,
                len,
                crc,
                copies,
                pieces: if runs.len() > 1 {
                    runs.into_iter()
                        .map(|(len, crc)| Piece { len, crc })
                        .collect()
                } else {
                    Vec::new()
                },
            });
        }
        segments.sort_by_key(|s| s.partition);
        let commit = Commit {
            map: self.map,
            attempt: self.attempt,
            segments,
        };
        let published = publish(&self.store, &self.group, &commit, copies).await;
        let outcome = match &published {
            Ok(()) => Outcome::Committed(
                self.started
                    .iter()
                    .map(|(&p, &(offset, len))| (p, offset + len))
                    .collect(),
            ),
            Err(Error::AlreadyCommitted { .. }) => Outcome::Aborted,
            Err(_) => Outcome::Broken,
        };
        back.give_back(self.group.lease, outcome).await;
        published.map(|()| commit)
    }

    /// Gives the group up: nothing this task wrote is read, and the next task on the slot
    /// writes over it.
    pub async fn abort(mut self) {
        if let Some(back) = self.back.take() {
            back.give_back(self.group.lease, self.unfinished()).await;
        }
    }

    /// How a task that did not commit gives its group back.
    fn unfinished(&self) -> Outcome {
        if self.broken {
            Outcome::Broken
        } else {
            Outcome::Aborted
        }
    }

    fn closed(&self) -> Error {
        Error::Invalid {
            id: self.group.id.clone(),
            problem: format!(
                "map {} attempt {}: the writer is closed",
                self.map, self.attempt
            ),
        }
    }
}

impl Drop for MapWriter {
    fn drop(&mut self) {
        // Dropped without commit or abort (a task that failed): the group goes back as after
        // an abort, its uncommitted bytes to be written over.
        let Some(back) = self.back.take() else { return };
        let outcome = self.unfinished();
        let lease = self.group.lease;
        // Slots in this process take it back at once; a release to the node's service is
        // sent from a task.
        let mut giving = back.give_back(lease, outcome);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        if giving.as_mut().poll(&mut cx).is_pending()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(giving);
        }
    }
}

/// Records `commit` as its map's output: under a hidden name, then renamed to `maps/<map>`,
/// then copied to the replicas' hosts. A map already committed keeps its attempt unless that
/// attempt's data (or record) is lost, in which case this one replaces it.
async fn publish(store: &Store, group: &GroupLease, commit: &Commit, copies: u32) -> Result<()> {
    let id = &group.id;
    let pending = format!(
        "{}/.{}-{}-{}-{}",
        id.maps_dir(),
        commit.map,
        commit.attempt,
        group.host,
        group.slot,
    );
    let record = to_json(commit);
    store
        .write_file(&pending, &record, &CreateOptions::default())
        .await?;
    let path = id.commit(commit.map);
    let refused = |winner: u64| Error::AlreadyCommitted {
        id: id.clone(),
        map: commit.map,
        attempt: commit.attempt,
        winner,
    };
    let won = async {
        // Two rounds at most: a lost winner is moved aside once.
        for _ in 0..2 {
            match store.rename(&pending, &path).await {
                Ok(()) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let winner =
                match crate::engine::shuffles::read_commit(store, id, commit.map, copies).await? {
                    crate::engine::shuffles::Record::Found(winner) => {
                        if !crate::engine::reader::commit_lost(store, id, &winner).await {
                            return Err(refused(winner.attempt));
                        }
                        Some(winner)
                    }
                    crate::engine::shuffles::Record::Lost(_) => None,
                };
            // Move the lost record aside; if what was moved is not the record judged lost
            // (another attempt replaced it meanwhile), put it back and lose to it.
            let aside = format!("{pending}.lost");
            match store.rename(&path, &aside).await {
                Ok(()) => {}
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            let moved = crate::engine::shuffles::read_record(store, id, &aside)
                .await
                .ok();
            if winner.is_none() || moved == winner {
                let _ = store.delete(&aside, false).await;
            } else {
                if store.rename(&aside, &path).await.is_err() {
                    let _ = store.delete(&aside, false).await;
                }
                break;
            }
        }
        match crate::engine::shuffles::read_commit(store, id, commit.map, copies).await? {
            crate::engine::shuffles::Record::Found(winner) => Err(refused(winner.attempt)),
            crate::engine::shuffles::Record::Lost(cause) => Err(Error::CommitLost {
                id: id.clone(),
                map: commit.map,
                cause,
            }),
        }
    }
    .await;
    if won.is_err() {
        let _ = store.delete(&pending, false).await;
        return won;
    }
    // Copies of the record beside the replicas, so losing this node loses no record. The
    // commit stands either way; a missing copy only weakens it.
    for (copy, home) in (1..copies).zip(&group.homes) {
        let path = id.commit_copy(commit.map, copy);
        let _ = store.delete(&path, false).await;
        let options = CreateOptions::default().placement(Placement::default().location(*home));
        if let Err(e) = store.write_file(&path, &record, &options).await {
            tracing::warn!("{path}: the commit record's copy was not written: {e}");
        }
    }
    Ok(())
}
