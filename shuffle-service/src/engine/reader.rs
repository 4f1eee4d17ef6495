//! Reduce input: the committed segments of partitions `[start, end)` from maps
//! `[start, end)`, fetched from whichever datanodes hold them, several files at once.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use bytes::Bytes;
use crail_store::{Error as StoreError, FileReader, Store};
use futures_util::stream::{self, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::layout::{Commit, PIECE, Segment, ShuffleId};

/// The most of one piece a reader holds before it checks it (or [`PIECE`] plus a block, if
/// the store's blocks are larger): a segment is read and checked piece by piece (each piece
/// against its own crc32c, the pieces' together against the segment's) and each piece handed
/// out only once checked, so a reducer never sees bytes that turn out corrupt (and a replica
/// can be read instead), and holds at most `prefetch` pieces (and the chunks queued for it,
/// `2 x prefetch` reads of the store's buffer size) whatever a segment's size. This crate's
/// writers record pieces of at most [`PIECE`] plus a block; a record with a larger piece is
/// refused ([`Error::Window`]), one whose pieces do not add up to its segment is a
/// [`Error::BadRecord`].
pub const WINDOW: u64 = 64 << 20;

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
#[derive(Debug)]
pub struct PartitionReader {
    rx: mpsc::Receiver<Result<Chunk>>,
    task: tokio::task::JoinHandle<()>,
    bytes: u64,
}

impl PartitionReader {
    pub(crate) fn start(
        store: Store,
        id: ShuffleId,
        commits: Vec<Commit>,
        partitions: Range<u32>,
        prefetch: usize,
    ) -> Result<Self> {
        // One job per group file: its segments in offset order, read with one reader.
        let window = WINDOW.max(PIECE.saturating_add(store.block_size()));
        let mut files: BTreeMap<String, Vec<(u32, Segment)>> = BTreeMap::new();
        for commit in &commits {
            for seg in &commit.segments {
                if partitions.contains(&seg.partition) && seg.len > 0 {
                    if let Some(problem) = seg.inconsistency() {
                        return Err(Error::BadRecord {
                            path: id.commit(commit.map),
                            id,
                            cause: format!("partition {}: {problem}", seg.partition),
                        });
                    }
                    let piece = seg.checked_pieces().iter().map(|p| p.1).max().unwrap_or(0);
                    if piece > window {
                        return Err(Error::Window {
                            id,
                            partition: seg.partition,
                            map: commit.map,
                            piece,
                            window,
                        });
                    }
                    files
                        .entry(seg.file.clone())
                        .or_default()
                        .push((commit.map, seg.clone()));
                }
            }
        }
        for segs in files.values_mut() {
            segs.sort_by_key(|(_, s)| s.offset);
        }
        let bytes = files.values().flatten().map(|(_, s)| s.len).sum();
        let (tx, rx) = mpsc::channel(prefetch.max(1) * 2);
        let task = tokio::spawn(async move {
            let mut jobs = stream::iter(files)
                .map(|(file, segs)| {
                    let (store, id, tx) = (store.clone(), id.clone(), tx.clone());
                    async move { read_file(&store, &id, &file, segs, &tx).await }
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
        Ok(Self { rx, task, bytes })
    }

    /// Bytes the read delivers in all (the committed lengths of its segments).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next chunk, or `None` when every segment has been read.
    pub async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        self.rx.recv().await.transpose()
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
        commits: &[Commit],
        partitions: &Range<u32>,
    ) -> Error {
        let mut maps = self.maps;
        for commit in commits {
            let in_range: Vec<&Segment> = commit
                .segments
                .iter()
                .filter(|s| partitions.contains(&s.partition) && s.len > 0)
                .collect();
            for seg in in_range {
                if segment_lost(store, id, seg).await {
                    maps.push(commit.map);
                    break;
                }
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
    for seg in &commit.segments {
        if seg.len > 0 && segment_lost(store, id, seg).await {
            return true;
        }
    }
    false
}

/// Whether the namenode reports every copy of `seg` lost: its file gone, or a block of its
/// range on a dead datanode. Other errors (the namenode unreachable) are not proof of loss.
async fn segment_lost(store: &Store, id: &ShuffleId, seg: &Segment) -> bool {
    let block = store.block_size().max(1);
    let first = seg.offset / block;
    let count = (seg.offset + seg.len).div_ceil(block) - first;
    for copy in 0..seg.copies.max(1) {
        let path = format!("{}/{}", id.dir(), ShuffleId::copy_file(&seg.file, copy));
        let located = match store.lookup(&path).await.and_then(|n| n.into_file()) {
            Ok(file) => file.block_locations(first, count).await.map(|_| ()),
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

/// Reads one group file's segments in offset order, piece by piece; a piece whose copy fails
/// is read from the next copy (replicas hold the same bytes at the same offsets).
async fn read_file(
    store: &Store,
    id: &ShuffleId,
    file: &str,
    segs: Vec<(u32, Segment)>,
    tx: &mpsc::Sender<Result<Chunk>>,
) -> Result<(), Failure> {
    let copies = segs.iter().map(|(_, s)| s.copies.max(1)).max().unwrap_or(1);
    let mut readers: Vec<Option<FileReader>> = (0..copies).map(|_| None).collect();
    let mut copy = 0u32;
    for (i, (map, seg)) in segs.iter().enumerate() {
        let failed = |cause: String| {
            let mut maps: Vec<u32> = segs[i..].iter().map(|(m, _)| *m).collect();
            maps.sort_unstable();
            maps.dedup();
            Failure {
                partition: seg.partition,
                maps,
                cause,
            }
        };
        let mut crc = 0u32;
        for (at, len, piece_crc) in seg.checked_pieces() {
            let data = loop {
                match read_piece(store, id, file, copy, (at, len, piece_crc), &mut readers).await {
                    Ok(data) => break data,
                    Err(cause) if copy + 1 < seg.copies.max(1) => {
                        tracing::debug!("{cause}; reading copy {}", copy + 1);
                        copy += 1;
                    }
                    Err(cause) => return Err(failed(cause)),
                }
            };
            crc = crail_store::crc::combine(crc, piece_crc, len);
            for data in data {
                let chunk = Chunk {
                    partition: seg.partition,
                    map: *map,
                    data,
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(()); // the reader was dropped
                }
            }
        }
        if crc != seg.crc {
            return Err(failed(format!(
                "{file}: the pieces of the segment at {} do not make its checksum",
                seg.offset
            )));
        }
    }
    Ok(())
}

/// `len` bytes at `at` of copy `copy` of a group file, read in pieces of the store's buffer
/// size and checked against `crc` before anything is handed out.
async fn read_piece(
    store: &Store,
    id: &ShuffleId,
    file: &str,
    copy: u32,
    (at, len, crc): (u64, u64, u32),
    readers: &mut [Option<FileReader>],
) -> Result<Vec<Bytes>, String> {
    let path = format!("{}/{}", id.dir(), ShuffleId::copy_file(file, copy));
    let slot = readers
        .get_mut(copy as usize)
        .ok_or_else(|| format!("{path}: no such copy"))?;
    if slot.is_none() {
        let file = store
            .lookup(&path)
            .await
            .and_then(|n| n.into_file())
            .map_err(|e| format!("{path}: {e}"))?;
        *slot = Some(file.reader());
    }
    let Some(reader) = slot.as_mut() else {
        return Err(format!("{path}: no reader"));
    };
    let mut sum = 0u32;
    let mut pos = at;
    let end = at + len;
    let mut out = Vec::new();
    // Reads of the store's pooled buffer size: buffers that come back to the pool as the
    // reducer consumes them, instead of fresh, zeroed memory for every piece.
    let step = (store.buffers().buffer_size() as u64).clamp(1, PIECE);
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
            "{path}: the segment piece at {at} fails its checksum"
        ));
    }
    Ok(out)
}

/// Per map: bytes per partition (a Spark MapStatus).
pub fn lengths(commit: &Commit, partitions: u32) -> Vec<u64> {
    let mut out = vec![0u64; partitions as usize];
    for seg in &commit.segments {
        if let Some(len) = out.get_mut(seg.partition as usize) {
            *len += seg.len;
        }
    }
    out
}

/// Commits by map for the maps in `maps`; missing ones are [`Error::NotCommitted`].
pub(crate) fn complete(
    id: &ShuffleId,
    mut found: HashMap<u32, Commit>,
    maps: Range<u32>,
) -> Result<Vec<Commit>> {
    let missing: Vec<u32> = maps.clone().filter(|m| !found.contains_key(m)).collect();
    if !missing.is_empty() {
        return Err(Error::NotCommitted {
            id: id.clone(),
            maps: missing,
        });
    }
    Ok(maps.filter_map(|m| found.remove(&m)).collect())
}
