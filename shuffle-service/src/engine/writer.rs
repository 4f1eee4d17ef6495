//! Map output: a map task writes its records per partition into a borrowed writer group's
//! file, where the group's node places them (each partition in extents of its own), and
//! commits them as the map's output, exactly once.
//!
//! The task gathers small writes (up to [`GATHER`] bytes across partitions), asks the node
//! for places once per gathering, and writes each partition's bytes there with their crc32c
//! noted, the runs of one block in one scattered write; a write of [`DIRECT`] bytes or more
//! goes from the caller's buffer. Committing writes
//! the map's record (its runs per partition, [`Commit::encode`]) into the group file, waits
//! for every write, and then makes `maps/<map>` point at the record, by a rename the namenode
//! refuses when the name exists: the first attempt of a map to commit is the only one ever
//! read. Two exceptions: when the committed attempt's data was lost (its blocks' datanodes
//! died), a new attempt replaces it, which is how an engine recovers from a fetch failure;
//! and an attempt of a later generation (a rerun of the whole stage, see
//! [`MapWriter::generation`]) replaces one of an earlier generation, while an attempt of an
//! earlier generation than the committed one is refused ([`Error::Superseded`]). A task that
//! aborts, fails or is dropped leaves its places unused.

use std::collections::BTreeMap;
use std::sync::Arc;

use crail_store::{CreateOptions, Error as StoreError, FileWriter, Store};

use crate::error::{Error, Result};
use crate::layout::{Commit, Meta, RecordRef, Run, ShuffleId};
use crate::lease::{GroupLease, Lender, Outcome, Placed};

/// Bytes a task gathers across partitions before it asks for places and writes them.
pub const GATHER: usize = 8 << 20;

/// A write at least this large is placed at once and sent from the caller's bytes.
pub const DIRECT: usize = 1 << 20;

/// A direct write is placed in parts of at most this many bytes (with the gathered bytes,
/// under what a node places at once).
const DIRECT_PART: usize = 512 << 20;

/// A map task's lease on a writer group. Commit it, or abort it; dropping it aborts.
#[derive(Debug)]
pub struct MapWriter {
    store: Store,
    meta: Meta,
    map: u32,
    attempt: u64,
    generation: u32,
    checksum: u64,
    group: GroupLease,
    back: Option<Arc<dyn Lender>>,
    /// Per copy of the group file: its writer (made at the first placing).
    writers: Vec<FileWriter>,
    /// Bytes not placed yet, as written: (partition, start, length) in `gathered`.
    gathered: Vec<u8>,
    parts: Vec<(u32, usize, usize)>,
    /// Per partition written: its runs so far.
    runs: BTreeMap<u32, Vec<Run>>,
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
            generation: 0,
            checksum: 0,
            group,
            back: Some(back),
            writers: Vec::new(),
            gathered: Vec::new(),
            parts: Vec::new(),
            runs: BTreeMap::new(),
            broken: false,
        }
    }

    /// The shuffle.
    pub fn id(&self) -> &ShuffleId {
        &self.group.id
    }

    /// Makes this attempt one of generation `generation` (0 unless set): the run of the map's
    /// stage it belongs to. An engine that reruns every map of a stage whose output may differ
    /// from run to run (Spark's indeterminate stages, rerun under a new stage attempt) passes
    /// the run's number, so the rerun's commits replace the earlier run's, map by map, and a
    /// late task of the earlier run cannot commit over them ([`Error::Superseded`]). Within
    /// one generation the first attempt to commit wins, as always.
    pub fn generation(mut self, generation: u32) -> Self {
        self.generation = generation;
        self
    }

    /// Keeps the engine's own checksum of the output in the commit (Spark's order-independent
    /// row checksum), so that whoever reads the map's status later, including an attempt that
    /// lost the race to commit, reports the committed output's.
    pub fn set_checksum(&mut self, checksum: u64) {
        self.checksum = checksum;
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
        let result = if bytes.len() >= DIRECT {
            // In parts a node places at once (MAX_PLACE: 1 GiB).
            let mut result = Ok(());
            for part in bytes.chunks(DIRECT_PART) {
                result = self.place_and_write(Some((partition, part))).await;
                if result.is_err() {
                    break;
                }
            }
            result
        } else {
            if self.gathered.capacity() == 0 {
                self.gathered = gather_buffer();
            }
            self.parts
                .push((partition, self.gathered.len(), bytes.len()));
            self.gathered.extend_from_slice(bytes);
            if self.gathered.len() >= GATHER {
                self.place_and_write(None).await
            } else {
                Ok(())
            }
        };
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Places the gathered bytes (and `direct`, after them) and writes them to every copy.
    async fn place_and_write(&mut self, direct: Option<(u32, &[u8])>) -> Result<()> {
        let gathered = std::mem::take(&mut self.gathered);
        let mut parts = std::mem::take(&mut self.parts);
        // Each partition's pieces together, in the order written.
        parts.sort_by_key(|p| p.0);
        let mut pieces: Vec<(u32, &[u8])> = parts
            .iter()
            .map(|&(p, start, len)| (p, &gathered[start..start + len]))
            .collect();
        pieces.extend(direct);
        let result = self.write_pieces(&pieces).await;
        drop(pieces);
        parts.clear();
        self.parts = parts;
        self.gathered = gathered;
        self.gathered.clear();
        result
    }

    /// Places `pieces` (partition, bytes; each partition's together) and writes them to
    /// every copy, noting each partition's runs and their crc32c.
    async fn write_pieces(&mut self, pieces: &[(u32, &[u8])]) -> Result<()> {
        if pieces.is_empty() {
            return Ok(());
        }
        let mut wants: Vec<(u32, u64)> = Vec::new();
        for &(p, bytes) in pieces {
            match wants.last_mut() {
                Some(last) if last.0 == p => last.1 += bytes.len() as u64,
                _ => wants.push((p, bytes.len() as u64)),
            }
        }
        let placed = self.place(wants, 0).await?;
        // A run takes the next bytes of its partition's pieces; where a piece ends inside a
        // run, the run is written in parts, each with its crc32c (combined for the run).
        let mut writes: Vec<(u64, &[u8], u32)> = Vec::with_capacity(placed.runs.len());
        // Where the next run's bytes start: piece `k`, `used` bytes into it.
        let (mut k, mut used) = (0usize, 0usize);
        for &(partition, offset, len) in &placed.runs {
            if len == 0 {
                return Err(self.misplaced("an empty place"));
            }
            let (mut at, mut left, mut crc) = (offset, len as usize, 0u32);
            while left > 0 {
                let Some(&(p, bytes)) = pieces.get(k) else {
                    return Err(self.misplaced("more places than bytes"));
                };
                if p != partition {
                    return Err(self.misplaced("places that do not match the bytes"));
                }
                let n = left.min(bytes.len() - used);
                let part = &bytes[used..used + n];
                let part_crc = crail_store::crc::crc32c(part);
                crc = crail_store::crc::combine(crc, part_crc, n as u64);
                writes.push((at, part, part_crc));
                at += n as u64;
                left -= n;
                used += n;
                if used == bytes.len() {
                    (k, used) = (k + 1, 0);
                }
            }
            self.runs
                .entry(partition)
                .or_default()
                .push(Run { offset, len, crc });
        }
        if k < pieces.len() {
            return Err(self.misplaced("fewer places than bytes"));
        }
        writes.sort_unstable_by_key(|w| w.0);
        for writer in &mut self.writers {
            writer.write_runs(&writes).await?;
        }
        Ok(())
    }

    /// Asks the group's node for places, and readies a writer per copy for them.
    async fn place(&mut self, wants: Vec<(u32, u64)>, record: u64) -> Result<Placed> {
        let back = self.back.clone().ok_or_else(|| self.closed())?;
        let placed = back.place(self.group.lease, wants, record).await?;
        if self.writers.is_empty() {
            self.writers = self
                .group
                .files
                .iter()
                .map(|ticket| self.store.borrow_lease(ticket.clone()))
                .collect();
        }
        for writer in &mut self.writers {
            writer.extend_to(placed.size);
        }
        Ok(placed)
    }

    fn misplaced(&self, what: &str) -> Error {
        Error::Invalid {
            id: self.group.id.clone(),
            problem: format!("map {}: the node gave {what}", self.map),
        }
    }

    /// Makes this attempt the map's output, unless another attempt of the map's generation
    /// committed first and its output is still readable ([`Error::AlreadyCommitted`]), or one
    /// of a later generation did ([`Error::Superseded`]); then nothing of this attempt is ever
    /// read. Returns the commit (the map's segments, hence its per-partition lengths).
    pub async fn commit(mut self) -> Result<Commit> {
        let back = self.back.clone().ok_or_else(|| self.closed())?;
        if self.broken {
            self.back = None;
            back.give_back(self.group.lease, Outcome::Broken).await;
            return Err(self.closed());
        }
        let written = self.write_record().await;
        self.back = None;
        let (commit, record) = match written {
            Ok(done) => done,
            Err(e) => {
                back.give_back(self.group.lease, Outcome::Broken).await;
                return Err(e);
            }
        };
        let published = publish(&self.store, &self.group.id, &commit, &record, &self.meta).await;
        let outcome = match &published {
            Ok(()) => Outcome::Committed,
            Err(Error::AlreadyCommitted { .. } | Error::Superseded { .. }) => Outcome::Aborted,
            Err(_) => Outcome::Broken,
        };
        back.give_back(self.group.lease, outcome).await;
        published.map(|()| commit)
    }

    /// Writes what is gathered and the map's record, and waits for every write.
    async fn write_record(&mut self) -> Result<(Commit, RecordRef)> {
        self.place_and_write(None).await?;
        let mut commit = Commit::new(
            self.map,
            self.attempt,
            self.group.group(),
            std::mem::take(&mut self.runs),
        );
        commit.generation = self.generation;
        commit.checksum = self.checksum;
        let record = commit.encode();
        let placed = self.place(Vec::new(), record.len() as u64).await?;
        let crc = crail_store::crc::crc32c(&record);
        for writer in &mut self.writers {
            writer.write_runs(&[(placed.record, &record, crc)]).await?;
            writer.flush().await?;
        }
        let at = RecordRef {
            group: self.group.group(),
            offset: placed.record,
            len: record.len() as u64,
        };
        Ok((commit, at))
    }

    /// Gives the group up: nothing this task wrote is read.
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

/// Gather buffers kept for the next task: a task's [`GATHER`] bytes reused, not faulted in
/// anew.
static GATHER_BUFFERS: parking_lot::Mutex<Vec<Vec<u8>>> = parking_lot::Mutex::new(Vec::new());

/// Gather buffers kept at most (one per task a process runs at once, about).
const KEPT_GATHER_BUFFERS: usize = 8;

fn gather_buffer() -> Vec<u8> {
    GATHER_BUFFERS
        .lock()
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(GATHER + DIRECT))
}

impl Drop for MapWriter {
    fn drop(&mut self) {
        let mut gathered = std::mem::take(&mut self.gathered);
        if gathered.capacity() > 0 {
            gathered.clear();
            let mut kept = GATHER_BUFFERS.lock();
            if kept.len() < KEPT_GATHER_BUFFERS {
                kept.push(gathered);
            }
        }
        // Dropped without commit or abort (a task that failed): the group goes back as after
        // an abort.
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

/// Makes `maps/<map>` point at `record` (the commit's record in its group file): a hidden
/// directory holding the pointer, renamed into place. A map already committed keeps its
/// attempt unless that attempt's data (or record) is lost or it is of an earlier generation,
/// in which case this one replaces it.
async fn publish(
    store: &Store,
    id: &ShuffleId,
    commit: &Commit,
    record: &RecordRef,
    meta: &Meta,
) -> Result<()> {
    use crate::engine::shuffles::{Record, read_marker};
    let pending = format!(
        "{}/{}-{}-{:x}",
        id.pending_dir(),
        commit.map,
        commit.attempt,
        crail_node_service::nonce(),
    );
    let dirs = CreateOptions::default();
    let made = async {
        store.create_dir(&pending, &dirs).await?;
        store
            .create_dir(&format!("{pending}/{}", record.name()), &dirs)
            .await
    }
    .await;
    if let Err(e) = made {
        let _ = store.delete(&pending, true).await;
        return Err(match e {
            StoreError::NotFound { .. } => Error::UnknownShuffle { id: id.clone() },
            e => e.into(),
        });
    }
    let path = id.commit(commit.map);
    let refused = |winner: &Commit| {
        if winner.generation > commit.generation {
            Error::Superseded {
                id: id.clone(),
                map: commit.map,
                attempt: commit.attempt,
                generation: commit.generation,
                committed: winner.generation,
            }
        } else {
            Error::AlreadyCommitted {
                id: id.clone(),
                map: commit.map,
                attempt: commit.attempt,
                winner: winner.attempt,
            }
        }
    };
    let won = async {
        // Two rounds at most: a lost (or earlier) winner is moved aside once.
        for _ in 0..2 {
            match store.rename(&pending, &path).await {
                Ok(()) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let winner = match read_marker(store, id, &path, meta.partitions).await? {
                Record::Found(winner) => {
                    let replaced = winner.generation < commit.generation
                        || (winner.generation == commit.generation
                            && crate::engine::reader::commit_lost(store, id, &winner).await);
                    if !replaced {
                        return Err(refused(&winner));
                    }
                    Some(winner)
                }
                Record::Lost(_) => None,
            };
            // Move the record aside; if what was moved is not the record judged replaceable
            // (another attempt replaced it meanwhile), put it back and lose to it.
            let aside = format!("{pending}.lost");
            match store.rename(&path, &aside).await {
                Ok(()) => {}
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            let moved = match read_marker(store, id, &aside, meta.partitions).await {
                Ok(Record::Found(moved)) => Some(moved),
                _ => None,
            };
            if winner.is_none() || moved == winner {
                let _ = store.delete(&aside, true).await;
            } else {
                if store.rename(&aside, &path).await.is_err() {
                    let _ = store.delete(&aside, true).await;
                }
                break;
            }
        }
        match read_marker(store, id, &path, meta.partitions).await? {
            Record::Found(winner) => Err(refused(&winner)),
            Record::Lost(cause) => Err(Error::CommitLost {
                id: id.clone(),
                map: commit.map,
                cause,
            }),
        }
    }
    .await;
    if won.is_err() {
        let _ = store.delete(&pending, true).await;
    }
    won
}
