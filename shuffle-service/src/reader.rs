//! Reduce input: the committed segments of partitions `[start, end)` from maps
//! `[start, end)`, fetched from whichever datanodes hold them, several files at once.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use bytes::Bytes;
use crail_store::Store;
use futures_util::stream::{self, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::layout::{Commit, Segment, ShuffleId};

/// Segments up to this size are read whole and checked before they are handed out; larger
/// ones come in pieces of this size, their crc32c checked at their end (the store checks every
/// stored chunk's checksum before it hands out a byte in either case).
const WHOLE: u64 = 64 << 20;

/// A piece of reduce input: bytes of one map's segment of one partition (whole records unless
/// the segment is larger than 64 MiB).
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
}

impl PartitionReader {
    pub(crate) fn start(
        store: Store,
        id: ShuffleId,
        commits: Vec<Commit>,
        partitions: Range<u32>,
        prefetch: usize,
    ) -> Self {
        // One job per group file: its segments in offset order, read with one reader.
        let mut files: BTreeMap<String, Vec<(u32, Segment)>> = BTreeMap::new();
        for commit in commits {
            for seg in commit.segments {
                if partitions.contains(&seg.partition) && seg.len > 0 {
                    files
                        .entry(seg.file.clone())
                        .or_default()
                        .push((commit.map, seg));
                }
            }
        }
        for segs in files.values_mut() {
            segs.sort_by_key(|(_, s)| s.offset);
        }
        let (tx, rx) = mpsc::channel(prefetch.max(1) * 2);
        let task = tokio::spawn(async move {
            let dir = id.dir();
            let mut jobs = stream::iter(files)
                .map(|(file, segs)| {
                    let (store, id, tx, path) = (
                        store.clone(),
                        id.clone(),
                        tx.clone(),
                        format!("{dir}/{file}"),
                    );
                    async move { read_file(&store, &id, &path, segs, &tx).await }
                })
                .buffer_unordered(prefetch.max(1));
            while let Some(result) = jobs.next().await {
                if let Err(e) = result {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        });
        Self { rx, task }
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

async fn read_file(
    store: &Store,
    id: &ShuffleId,
    path: &str,
    segs: Vec<(u32, Segment)>,
    tx: &mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let failed = |segs: &[(u32, Segment)], at: usize, cause: String| {
        let (_, seg) = &segs[at];
        let mut maps: Vec<u32> = segs[at..].iter().map(|(m, _)| *m).collect();
        maps.sort_unstable();
        maps.dedup();
        Error::FetchFailed {
            id: id.clone(),
            partition: seg.partition,
            maps,
            cause,
        }
    };
    let file = match store.lookup(path).await.and_then(|n| n.into_file()) {
        Ok(file) => file,
        Err(e) => return Err(failed(&segs, 0, format!("{path}: {e}"))),
    };
    let mut reader = file.reader();
    for (i, (map, seg)) in segs.iter().enumerate() {
        let mut crc = 0u32;
        let mut at = seg.offset;
        let end = seg.offset + seg.len;
        let piece = if seg.len <= WHOLE { seg.len } else { WHOLE };
        while at < end {
            let want = piece.min(end - at);
            let buf = match reader.read_at(at, want as usize).await {
                Ok(buf) if buf.len() as u64 == want => buf,
                Ok(buf) => {
                    let cause = format!("{path}: {} bytes at {at}, {want} expected", buf.len());
                    return Err(failed(&segs, i, cause));
                }
                Err(e) => return Err(failed(&segs, i, e.to_string())),
            };
            crc = crc32c::crc32c_append(crc, &buf);
            at += want;
            if at == end && crc != seg.crc {
                let cause = format!("{path}: segment at {} fails its checksum", seg.offset);
                return Err(failed(&segs, i, cause));
            }
            let chunk = Chunk {
                partition: seg.partition,
                map: *map,
                data: buf.freeze(),
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(()); // the reader was dropped
            }
        }
    }
    Ok(())
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
