//! Reduce input: the committed segments of partitions `[start, end)` from maps
//! `[start, end)`, fetched from whichever datanodes hold them, several group files at once.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use crail_store::{BlockLocation, Error as StoreError, File, FileReader, Store};
use futures_util::stream::{self, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::layout::{Commit, GroupRef, ShuffleId};

/// A reader reads a group file in units of up to this many bytes: runs that follow each other
/// in the file (a partition's extent, filled by map after map) joined, each unit checked
/// against its runs' crc32c before any of it is handed out.
pub const UNIT: u64 = 4 << 20;

/// The most of one unit a reader holds before it checks it (or [`UNIT`] plus a block, if the
/// store's blocks are larger): each unit is handed out only once checked, so a reducer never
/// sees bytes that turn out corrupt (and a replica can be read instead), and holds at most
/// `prefetch` units (and the chunks queued for it, `2 x prefetch` reads of the store's buffer
/// size) whatever a segment's size. This crate's writers record runs of at most a block; a
/// record with a longer run is refused ([`Error::Window`]).
pub const WINDOW: u64 = 64 << 20;

/// Group files kept looked up, with their blocks' locations, at most.
const KEPT_FILES: usize = 4096;

/// The group files a process has looked up, with their blocks' locations: the same few files
/// serve every read of a shuffle, so a reduce task's read costs no lookup and no locating.
#[derive(Debug, Default)]
pub(crate) struct GroupFiles {
    files: parking_lot::Mutex<HashMap<String, Arc<Located>>>,
}

#[derive(Debug)]
struct Located {
    file: File,
    blocks: Vec<BlockLocation>,
}

impl GroupFiles {
    /// A reader of the group file at `path` that knows where its blocks are, up to `end`
    /// bytes at least: the kept one, else a new lookup.
    async fn reader(&self, store: &Store, path: &str, end: u64) -> crail_store::Result<FileReader> {
        let kept = self.files.lock().get(path).cloned();
        if let Some(located) = kept.filter(|l| l.file.size() >= end) {
            return Ok(located.file.reader_with(located.blocks.clone()));
        }
        let file = store.lookup(path).await?.into_file()?;
        match file.all_block_locations().await {
            Ok(blocks) => {
                let located = Arc::new(Located { file, blocks });
                let reader = located.file.reader_with(located.blocks.clone());
                let mut files = self.files.lock();
                if files.len() >= KEPT_FILES {
                    files.clear();
                }
                files.insert(path.to_owned(), located);
                Ok(reader)
            }
            // Some block is lost: read what can be read, block by block, keeping nothing.
            Err(_) => Ok(file.reader()),
        }
    }

    /// Forgets the files under `dir` (a shuffle that went, or whose blocks moved).
    pub(crate) fn forget(&self, dir: &str) {
        self.files.lock().retain(|path, _| !path.starts_with(dir));
    }
}

/// A piece of reduce input: bytes of one map's segment of one partition, in order; a record
/// may be split between two pieces of its segment.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The partition.
    pub partition: u32,
    /// The map that wrote it.
    pub map: u32,
    /// The bytes.
    pub data: Bytes,
}

/// Streams the chunks of a read; files are fetched `prefetch` at a time in the background.
pub struct PartitionReader {
    /// Each unit's chunks at once: one hand-over per unit, not per chunk.
    rx: mpsc::Receiver<Result<Vec<Chunk>>>,
    ready: std::collections::VecDeque<Chunk>,
    task: tokio::task::JoinHandle<()>,
    bytes: u64,
    on_failure: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl PartitionReader {
    /// Reads the segments of `partitions` of `commits`: those at `picks` ((commit, segment)
    /// positions, from an index) or, without, every commit's.
    pub(crate) fn start(
        store: Store,
        files_kept: Arc<GroupFiles>,
        id: ShuffleId,
        commits: Vec<Arc<Commit>>,
        picks: Option<Vec<(u32, u32)>>,
        partitions: Range<u32>,
        prefetch: usize,
    ) -> Result<Self> {
        // One job per group file: the runs of the read's segments there, in file order.
        let window = WINDOW.max(UNIT.saturating_add(store.block_size()));
        let picks = picks.unwrap_or_else(|| {
            let mut picks = Vec::new();
            for (c, commit) in commits.iter().enumerate() {
                let chosen = commit.segment_range(&partitions);
                picks.extend(chosen.map(|s| (c as u32, s as u32)));
            }
            picks
        });
        let mut files: HashMap<(&str, u32), (u32, Vec<Piece>)> = HashMap::new();
        let mut bytes = 0;
        for (c, s) in picks {
            let Some(commit) = commits.get(c as usize) else {
                continue;
            };
            let Some(seg) = commit.segments().get(s as usize) else {
                continue;
            };
            let group = &commit.group;
            let (_, pieces) = files
                .entry((group.host.as_str(), group.slot))
                .or_insert((group.copies, Vec::new()));
            bytes += seg.len;
            for run in commit.runs(seg) {
                if u64::from(run.len) > window {
                    return Err(Error::Window {
                        id,
                        partition: seg.partition,
                        map: commit.map,
                        piece: u64::from(run.len),
                        window,
                    });
                }
                pieces.push(Piece {
                    map: commit.map,
                    partition: seg.partition,
                    offset: run.offset,
                    len: run.len,
                    crc: run.crc,
                });
            }
        }
        let mut files: BTreeMap<(String, u32), (u32, Vec<Piece>)> = files
            .into_iter()
            .map(|((host, slot), v)| ((host.to_owned(), slot), v))
            .collect();
        for (_, pieces) in files.values_mut() {
            pieces.sort_unstable_by_key(|p| p.offset);
        }
        let (tx, rx) = mpsc::channel(prefetch.max(1));
        let task = tokio::spawn(async move {
            let mut jobs = stream::iter(files)
                .map(|((host, slot), (copies, pieces))| {
                    let (store, id, tx) = (store.clone(), id.clone(), tx.clone());
                    let kept = Arc::clone(&files_kept);
                    let group = GroupRef { host, slot, copies };
                    async move { read_file(&store, &kept, &id, &group, pieces, &tx).await }
                })
                .buffer_unordered(prefetch.max(1));
            while let Some(result) = jobs.next().await {
                if let Err(failure) = result {
                    let error = failure.into_error(&store, &id, &commits, &partitions).await;
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            }
        });
        Ok(Self {
            rx,
            ready: std::collections::VecDeque::new(),
            task,
            bytes,
            on_failure: None,
        })
    }

    /// Runs `then` when the read fails (once).
    pub(crate) fn on_failure(&mut self, then: Box<dyn FnOnce() + Send>) {
        self.on_failure = Some(then);
    }

    /// Bytes the read delivers in all (the committed lengths of its segments).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next chunk, or `None` when every segment has been read.
    pub async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Ok(Some(chunk));
            }
            match self.rx.recv().await {
                Some(Ok(chunks)) => self.ready.extend(chunks),
                Some(Err(e)) => {
                    if let Some(then) = self.on_failure.take() {
                        then();
                    }
                    return Err(e);
                }
                None => return Ok(None),
            }
        }
    }
}

impl Drop for PartitionReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A group file that could not be read: the partition and maps it was being read for.
pub(crate) struct Failure {
    partition: u32,
    maps: Vec<u32>,
    cause: String,
}

impl Failure {
    pub(crate) fn new(partition: u32, maps: Vec<u32>, cause: String) -> Self {
        Self {
            partition,
            maps,
            cause,
        }
    }

    /// The fetch failure to report: the maps whose segments in the failing file were not
    /// delivered, and every other map of the read whose data the namenode reports lost (a
    /// dead datanode takes many maps' segments with it; naming them all at once saves the
    /// engine a round of recomputation per map).
    pub(crate) async fn into_error(
        self,
        store: &Store,
        id: &ShuffleId,
        commits: &[Arc<Commit>],
        partitions: &Range<u32>,
    ) -> Error {
        let mut maps = self.maps;
        for commit in commits {
            if lost(store, id, commit, partitions).await {
                maps.push(commit.map);
            }
        }
        maps.sort_unstable();
        maps.dedup();
        Error::FetchFailed {
            id: id.clone(),
            partition: self.partition,
            maps,
            cause: self.cause,
        }
    }
}

/// Whether any of `commit`'s segments is lost (in every copy).
pub(crate) async fn commit_lost(store: &Store, id: &ShuffleId, commit: &Commit) -> bool {
    lost(store, id, commit, &(0..u32::MAX)).await
}

/// Whether the namenode reports every copy of the group file holding `commit`'s segments of
/// `partitions` lost: the file gone, or a block of their runs on a dead datanode. Other errors
/// (the namenode unreachable) are not proof of loss.
async fn lost(store: &Store, id: &ShuffleId, commit: &Commit, partitions: &Range<u32>) -> bool {
    let block = store.block_size().max(1);
    let mut blocks: Vec<u64> = commit
        .segments_in(partitions)
        .iter()
        .flat_map(|seg| commit.runs(seg))
        .flat_map(|run| {
            let end = run.offset + u64::from(run.len);
            run.offset / block..end.div_ceil(block)
        })
        .collect();
    if blocks.is_empty() {
        return false;
    }
    blocks.sort_unstable();
    blocks.dedup();
    let (first, last) = (blocks[0], blocks[blocks.len() - 1]);
    let group = &commit.group;
    for copy in 0..group.copies.max(1) {
        let path = id.group_file(&group.host, group.slot, copy);
        let located = match store.lookup(&path).await.and_then(|n| n.into_file()) {
            Ok(file) => file
                .block_locations(first, last + 1 - first)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match located {
            Ok(()) => return false,
            Err(StoreError::LostBlocks { .. } | StoreError::NotFound { .. }) => {}
            Err(_) => return false,
        }
    }
    true
}

/// A run of a segment as a read fetches it.
#[derive(Debug, Clone, Copy)]
struct Piece {
    map: u32,
    partition: u32,
    offset: u64,
    len: u32,
    crc: u32,
}

/// Reads one group file's runs in file order, in units of runs that follow each other (up to
/// [`UNIT`] bytes, or one longer run); a unit whose copy fails is read from the next copy
/// (replicas hold the same bytes at the same offsets).
async fn read_file(
    store: &Store,
    kept: &GroupFiles,
    id: &ShuffleId,
    group: &GroupRef,
    pieces: Vec<Piece>,
    tx: &mpsc::Sender<Result<Vec<Chunk>>>,
) -> Result<(), Failure> {
    let copies = group.copies.max(1);
    let mut readers: Vec<Option<FileReader>> = (0..copies).map(|_| None).collect();
    let mut copy = 0u32;
    let mut i = 0;
    while i < pieces.len() {
        // The unit: pieces[i..j].
        let start = pieces[i].offset;
        let (mut end, mut crc) = (start, 0u32);
        let mut j = i;
        while j < pieces.len()
            && pieces[j].offset == end
            && (j == i || end + u64::from(pieces[j].len) - start <= UNIT)
        {
            end += u64::from(pieces[j].len);
            crc = crail_store::crc::combine(crc, pieces[j].crc, u64::from(pieces[j].len));
            j += 1;
        }
        let unit = &pieces[i..j];
        let failed = |cause: String| {
            let mut maps: Vec<u32> = pieces[i..].iter().map(|p| p.map).collect();
            maps.sort_unstable();
            maps.dedup();
            Failure {
                partition: unit[0].partition,
                maps,
                cause,
            }
        };
        let data = loop {
            match read_unit(
                store,
                kept,
                id,
                group,
                copy,
                (start, end - start, crc),
                &mut readers,
            )
            .await
            {
                Ok(data) => break data,
                Err(cause) if copy + 1 < copies => {
                    tracing::debug!("{cause}; reading copy {}", copy + 1);
                    copy += 1;
                }
                Err(cause) => return Err(failed(cause)),
            }
        };
        // Hand the unit out piece by piece (slices of the reads, no copies).
        let mut bufs = data.into_iter();
        let mut buf = Bytes::new();
        let mut chunks = Vec::with_capacity(unit.len());
        for piece in unit {
            let mut left = piece.len as usize;
            while left > 0 {
                if buf.is_empty() {
                    match bufs.next() {
                        Some(next) => buf = next,
                        None => return Err(failed("a unit read short".into())),
                    }
                }
                let n = left.min(buf.len());
                chunks.push(Chunk {
                    partition: piece.partition,
                    map: piece.map,
                    data: buf.split_to(n),
                });
                left -= n;
            }
        }
        if tx.send(Ok(chunks)).await.is_err() {
            return Ok(()); // the reader was dropped
        }
        i = j;
    }
    Ok(())
}

/// `len` bytes at `at` of copy `copy` of a group file, read in pieces of the store's buffer
/// size and checked against `crc` before anything is handed out.
async fn read_unit(
    store: &Store,
    kept: &GroupFiles,
    id: &ShuffleId,
    group: &GroupRef,
    copy: u32,
    (at, len, crc): (u64, u64, u32),
    readers: &mut [Option<FileReader>],
) -> Result<Vec<Bytes>, String> {
    let path = id.group_file(&group.host, group.slot, copy);
    let slot = readers
        .get_mut(copy as usize)
        .ok_or_else(|| format!("{path}: no such copy"))?;
    if slot.as_ref().is_none_or(|r| r.size() < at + len) {
        let reader = kept
            .reader(store, &path, at + len)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        *slot = Some(reader);
    }
    let Some(reader) = slot.as_mut() else {
        return Err(format!("{path}: no reader"));
    };
    let mut sum = 0u32;
    let mut pos = at;
    let end = at + len;
    let mut out = Vec::new();
    // Reads of the store's pooled buffer size: buffers that come back to the pool as the
    // reducer consumes them, instead of fresh, zeroed memory for every unit.
    let step = (store.buffers().buffer_size() as u64).clamp(1, UNIT);
    while pos < end {
        let want = step.min(end - pos);
        // The read's crc32c as the store checked it on arrival, not hashed again.
        let (buf, read_crc) = reader
            .read_checked(pos, want as usize)
            .await
            .map_err(|e| e.to_string())?;
        if buf.len() as u64 != want {
            return Err(format!(
                "{path}: {} bytes at {pos}, {want} expected",
                buf.len()
            ));
        }
        sum = crail_store::crc::combine(sum, read_crc, want);
        pos += want;
        out.push(buf.freeze());
    }
    if sum != crc {
        return Err(format!(
            "{path}: the segment run at {at} fails its checksum"
        ));
    }
    Ok(out)
}

/// Per map: bytes per partition (a Spark MapStatus).
pub fn lengths(commit: &Commit, partitions: u32) -> Vec<u64> {
    let mut out = vec![0u64; partitions as usize];
    for seg in commit.segments() {
        if let Some(len) = out.get_mut(seg.partition as usize) {
            *len += seg.len;
        }
    }
    out
}

/// Commits by map for the maps in `maps` (ascending); missing ones are
/// [`Error::NotCommitted`].
pub(crate) fn complete(
    id: &ShuffleId,
    mut found: HashMap<u32, Arc<Commit>>,
    maps: impl Iterator<Item = u32> + Clone,
) -> Result<Vec<Arc<Commit>>> {
    let missing: Vec<u32> = maps.clone().filter(|m| !found.contains_key(m)).collect();
    if !missing.is_empty() {
        return Err(Error::NotCommitted {
            id: id.clone(),
            maps: missing,
        });
    }
    Ok(maps.filter_map(|m| found.remove(&m)).collect())
}
