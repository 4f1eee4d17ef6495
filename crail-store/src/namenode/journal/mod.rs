//! The namenode's journal: a redo log of every namespace change that outlives a restart, on
//! local disk, with group commit, and snapshots compacted in the background.
//!
//! ```text
//! DIR/LOCK                  held (flock) by the one namenode using DIR
//! DIR/segment-<n>.log       records appended since segment n began
//! DIR/snapshot-<n>.snap     the namespace as it was when segment n began (records too)
//! ```
//!
//! Every record is `[length u32][crc32c u32][body]` (a `JournalRecord`). Operations append
//! under the namespace lock (so the log's order is the lock's) into a buffer; one writer thread
//! writes what accumulated and `fdatasync`s it, then publishes how far the log is durable.
//! A connection sends no reply before the log is durable up to everything appended when its
//! requests were answered, so no client ever sees a change a crash could take back, and every
//! client waiting meanwhile shares one `fdatasync` (group commit).
//!
//! After `snapshot_every` bytes of log the writer starts a new segment and a compactor thread
//! replays the previous snapshot and the closed segments into a namespace of its own, writes it
//! out as the next snapshot (written aside, synced, renamed) and deletes what it replaces: the
//! live namespace's lock is never held for it. A restart loads the newest snapshot and replays
//! the segments after it; a torn record at the very end (a crash mid-write: never acknowledged)
//! is cut off, damage anywhere else stops the namenode with the place named.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use prost::Message;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::proto as pb;

/// The format of the records; a journal of another version is refused.
const VERSION: u32 = 1;
/// A record larger than this is damage, not data.
const MAX_RECORD: u32 = 64 << 20;
/// A segment is closed once it holds this much, so no single file grows without bound.
const SEGMENT_BYTES: u64 = 256 << 20;

fn io_error(what: String, cause: &std::io::Error) -> Error {
    Error::Io {
        cause: std::io::Error::new(cause.kind(), format!("{what}: {cause}")),
    }
}

fn damaged(dir: &Path, detail: String) -> Error {
    Error::Io {
        cause: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the namenode journal in {} is damaged: {detail}",
                dir.display()
            ),
        ),
    }
}

/// Frames one record.
pub(crate) fn frame(record: &pb::JournalRecord, out: &mut Vec<u8>) {
    let len = record.encoded_len();
    out.reserve(8 + len);
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    // Encoding into a Vec cannot fail for lack of room.
    let _ = record.encode(out);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn header(block_size: u64) -> pb::JournalRecord {
    pb::JournalRecord {
        op: Some(pb::journal_record::Op::Header(pb::JournalHeader {
            version: VERSION,
            block_size,
        })),
    }
}

/// How a file of records ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Clean,
    /// A torn or damaged record at this offset.
    Torn(u64),
}

/// Reads every record of `path` into `apply`; checks the header.
fn read_records(
    path: &Path,
    block_size: u64,
    apply: &mut dyn FnMut(pb::JournalRecord),
) -> Result<End> {
    let file = File::open(path).map_err(|e| io_error(format!("opening {}", path.display()), &e))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let (mut offset, mut first) = (0u64, true);
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 8];
        match read_full(&mut input, &mut head) {
            Ok(0) => return Ok(End::Clean),
            Ok(8) => {}
            Ok(_) => return Ok(End::Torn(offset)),
            Err(e) => return Err(io_error(format!("reading {}", path.display()), &e)),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            return Ok(End::Torn(offset));
        }
        body.resize(len as usize, 0);
        match read_full(&mut input, &mut body) {
            Ok(n) if n == body.len() => {}
            Ok(_) => return Ok(End::Torn(offset)),
            Err(e) => return Err(io_error(format!("reading {}", path.display()), &e)),
        }
        if crc32c::crc32c(&body) != crc {
            return Ok(End::Torn(offset));
        }
        let Ok(record) = pb::JournalRecord::decode(&body[..]) else {
            return Ok(End::Torn(offset));
        };
        if first {
            match &record.op {
                Some(pb::journal_record::Op::Header(h))
                    if h.version == VERSION && h.block_size == block_size => {}
                Some(pb::journal_record::Op::Header(h)) if h.version != VERSION => {
                    return Err(damaged(
                        path.parent().unwrap_or(path),
                        format!(
                            "{} has format version {}, this namenode reads {VERSION}",
                            path.display(),
                            h.version
                        ),
                    ));
                }
                Some(pb::journal_record::Op::Header(h)) => {
                    return Err(Error::Config {
                        key: "namenode.block_size".into(),
                        reason: format!(
                            "the journal {} was written with blocks of {} bytes, not {block_size}: \
                             start with the same block size or a new journal directory",
                            path.display(),
                            h.block_size
                        ),
                    });
                }
                _ => return Ok(End::Torn(0)),
            }
            first = false;
        } else {
            apply(record);
        }
        offset += 8 + u64::from(len);
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The segments and snapshots of a journal directory, by number.
#[derive(Debug, Default)]
struct Listing {
    segments: Vec<u64>,
    snapshots: Vec<u64>,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let entries =
        std::fs::read_dir(dir).map_err(|e| io_error(format!("listing {}", dir.display()), &e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|n| n.strip_suffix(suffix))
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(n) = number("segment-", ".log") {
            listing.segments.push(n);
        } else if let Some(n) = number("snapshot-", ".snap") {
            listing.snapshots.push(n);
        }
    }
    listing.segments.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("segment-{n:012}.log"))
}

fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n:012}.snap"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(format!("syncing {}", dir.display()), &e))
}

/// Replays the newest snapshot of `dir` and the segments after it into `apply`; returns the
/// number the next segment gets. A torn tail of the last segment is cut off.
fn replay(dir: &Path, block_size: u64, apply: &mut dyn FnMut(pb::JournalRecord)) -> Result<u64> {
    let listing = list(dir)?;
    let base = listing.snapshots.last().copied().unwrap_or(0);
    if base > 0 {
        let path = snapshot_path(dir, base);
        if read_records(&path, block_size, apply)? != End::Clean {
            return Err(damaged(
                dir,
                format!("{} does not read back whole", path.display()),
            ));
        }
    }
    let segments: Vec<u64> = listing
        .segments
        .into_iter()
        .filter(|n| *n >= base)
        .collect();
    for (i, n) in segments.iter().enumerate() {
        let path = segment_path(dir, *n);
        match read_records(&path, block_size, apply)? {
            End::Clean => {}
            End::Torn(offset) if i + 1 == segments.len() => {
                tracing::warn!(segment = %path.display(), offset, "cutting off a torn record at the journal's end (it was never acknowledged)");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error(format!("opening {}", path.display()), &e))?;
                file.set_len(offset)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_error(format!("truncating {}", path.display()), &e))?;
            }
            End::Torn(offset) => {
                return Err(damaged(
                    dir,
                    format!("{} has a bad record at offset {offset}", path.display()),
                ));
            }
        }
    }
    Ok(segments.last().map_or(base.max(1), |n| n + 1))
}

/// The grant salt kept in `dir` (made by `make` the first time), so that block grants signed
/// before a restart stay valid after it: readers keep the locations they hold.
pub(crate) fn kept_salt(dir: &Path, make: impl FnOnce() -> Result<Vec<u8>>) -> Result<Vec<u8>> {
    let path = dir.join("grant-salt");
    match std::fs::read(&path) {
        Ok(salt) if !salt.is_empty() => return Ok(salt),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(format!("reading {}", path.display()), &e)),
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| io_error(format!("creating {}", dir.display()), &e))?;
    let salt = make()?;
    let aside = dir.join("grant-salt.tmp");
    File::create(&aside)
        .and_then(|mut f| f.write_all(&salt).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&aside, &path))
        .map_err(|e| io_error(format!("writing {}", path.display()), &e))?;
    sync_dir(dir)?;
    Ok(salt)
}

/// What a compactor needs to rebuild a namespace: a fresh one to replay into, and the records
/// that describe it afterwards.
pub(crate) trait Compact: Send + 'static {
    fn apply(&mut self, record: pb::JournalRecord);
    fn dump(&self, out: &mut dyn FnMut(pb::JournalRecord));
}

/// Makes a fresh namespace for the compactor.
pub(crate) type Fresh = Arc<dyn Fn() -> Result<Box<dyn Compact>> + Send + Sync>;

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Sequence number of the last record appended.
    appended: u64,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: watch::Sender<u64>,
    failed: AtomicBool,
}

/// An open journal: appends records, makes them durable, compacts them.
pub(crate) struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

/// Settings of a journal.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) dir: PathBuf,
    pub(crate) block_size: u64,
    pub(crate) snapshot_every: u64,
    pub(crate) fresh: Fresh,
}

impl Journal {
    /// Opens (or starts) the journal in `options.dir`: replays what it holds into `apply`, then
    /// starts a new segment and the writer thread.
    pub(crate) fn open(options: Options, apply: &mut dyn FnMut(pb::JournalRecord)) -> Result<Self> {
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_error(format!("creating {}", dir.display()), &e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(|e| io_error(format!("opening {}/LOCK", dir.display()), &e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| Error::Config {
                key: "namenode.journal".into(),
                reason: format!("{} is in use by another namenode", dir.display()),
            },
        )?;
        let next = replay(&dir, options.block_size, apply)?;
        let segment = Segment::create(&dir, next, options.block_size)?;
        let (durable, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            durable,
            failed: AtomicBool::new(false),
        });
        let writer = Writer {
            shared: shared.clone(),
            options,
            segment,
            since_snapshot: 0,
            compactor: None,
            _lock: lock,
        };
        let handle = std::thread::Builder::new()
            .name("crail-journal".into())
            .spawn(move || writer.run())
            .map_err(|e| io_error("starting the journal writer".into(), &e))?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(handle)),
            dir,
        })
    }

    /// Appends `record` (called under the namespace lock, so the log keeps its order).
    pub(crate) fn append(&self, record: &pb::JournalRecord) {
        let mut pending = self.shared.pending.lock();
        // The writer sleeps only when nothing is pending.
        let idle = pending.bytes.is_empty();
        frame(record, &mut pending.bytes);
        pending.appended += 1;
        if idle {
            self.shared.wake.notify_one();
        }
    }

    /// The sequence number of the last record appended.
    pub(crate) fn appended(&self) -> u64 {
        self.shared.pending.lock().appended
    }

    /// Waits until every record up to `seq` is on disk.
    pub(crate) async fn durable(&self, seq: u64) -> Result<()> {
        let mut durable = self.shared.durable.subscribe();
        let reached = durable.wait_for(|d| *d >= seq || self.failed()).await;
        match reached {
            Ok(_) if !self.failed() => Ok(()),
            _ => Err(self.failure()),
        }
    }

    /// Whether a write to the journal failed: nothing more can be acknowledged.
    pub(crate) fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    pub(crate) fn failure(&self) -> Error {
        Error::Io {
            cause: std::io::Error::other(format!(
                "the namenode journal in {} could not be written: changes are refused (see the \
                 namenode's log)",
                self.dir.display()
            )),
        }
    }

    /// Writes what is pending and stops the writer (waits for a running compaction).
    pub(crate) fn close(&self) {
        self.shared.pending.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The segment being appended to.
struct Segment {
    file: File,
    number: u64,
    bytes: u64,
}

impl Segment {
    fn create(dir: &Path, number: u64, block_size: u64) -> Result<Self> {
        let path = segment_path(dir, number);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(format!("creating {}", path.display()), &e))?;
        let mut head = Vec::new();
        frame(&header(block_size), &mut head);
        file.write_all(&head)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(format!("writing {}", path.display()), &e))?;
        sync_dir(dir)?;
        Ok(Self {
            file,
            number,
            bytes: head.len() as u64,
        })
    }
}

struct Writer {
    shared: Arc<Shared>,
    options: Options,
    segment: Segment,
    since_snapshot: u64,
    compactor: Option<JoinHandle<()>>,
    _lock: File,
}

impl Writer {
    fn run(mut self) {
        loop {
            let (bytes, upto, closing) = {
                let mut pending = self.shared.pending.lock();
                while pending.bytes.is_empty() && !pending.closing {
                    self.shared.wake.wait(&mut pending);
                }
                (
                    std::mem::take(&mut pending.bytes),
                    pending.appended,
                    pending.closing,
                )
            };
            if !bytes.is_empty() {
                if let Err(e) = self.write(&bytes) {
                    tracing::error!(error = %e, "the namenode journal could not be written: refusing changes from now on");
                    self.shared.failed.store(true, Ordering::Release);
                    self.shared.durable.send_replace(0);
                    break;
                }
                self.shared.durable.send_replace(upto);
            }
            if self.since_snapshot >= self.options.snapshot_every
                && let Err(e) = self.start_snapshot()
            {
                tracing::warn!(error = %e, "starting a journal snapshot failed; the log keeps growing");
                self.since_snapshot = 0;
            }
            if closing && self.shared.pending.lock().bytes.is_empty() {
                break;
            }
        }
        if let Some(compactor) = self.compactor.take() {
            let _ = compactor.join();
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.segment
            .file
            .write_all(bytes)
            .and_then(|()| self.segment.file.sync_data())
            .map_err(|e| io_error("appending to the journal".into(), &e))?;
        self.segment.bytes += bytes.len() as u64;
        self.since_snapshot += bytes.len() as u64;
        if self.segment.bytes >= SEGMENT_BYTES {
            self.segment = Segment::create(
                &self.options.dir,
                self.segment.number + 1,
                self.options.block_size,
            )?;
        }
        Ok(())
    }

    /// Starts a new segment and, in a thread, a snapshot of everything before it.
    fn start_snapshot(&mut self) -> Result<()> {
        if self.compactor.as_ref().is_some_and(|c| !c.is_finished()) {
            return Ok(());
        }
        if let Some(done) = self.compactor.take() {
            let _ = done.join();
        }
        self.segment = Segment::create(
            &self.options.dir,
            self.segment.number + 1,
            self.options.block_size,
        )?;
        self.since_snapshot = 0;
        let (options, upto) = (self.options.clone(), self.segment.number);
        let handle = std::thread::Builder::new()
            .name("crail-journal-snapshot".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match snapshot(&options, upto) {
                    Ok(bytes) => tracing::info!(
                        snapshot = upto,
                        bytes,
                        ms = started.elapsed().as_millis() as u64,
                        "namenode journal snapshot written"
                    ),
                    Err(e) => tracing::warn!(error = %e, "namenode journal snapshot failed"),
                }
            })
            .map_err(|e| io_error("starting the snapshot thread".into(), &e))?;
        self.compactor = Some(handle);
        Ok(())
    }
}

/// Writes `snapshot-<upto>` from the newest snapshot and the segments before `upto`, then
/// deletes those. Returns the snapshot's size.
fn snapshot(options: &Options, upto: u64) -> Result<u64> {
    let dir = &options.dir;
    let listing = list(dir)?;
    let base = listing
        .snapshots
        .iter()
        .copied()
        .filter(|n| *n < upto)
        .max();
    let mut namespace = (options.fresh)()?;
    let mut apply = |record| namespace.apply(record);
    if let Some(base) = base {
        read_records(&snapshot_path(dir, base), options.block_size, &mut apply)?;
    }
    for n in listing
        .segments
        .iter()
        .filter(|n| **n >= base.unwrap_or(0) && **n < upto)
    {
        if let End::Torn(offset) =
            read_records(&segment_path(dir, *n), options.block_size, &mut apply)?
        {
            return Err(damaged(
                dir,
                format!("segment {n} has a bad record at offset {offset}"),
            ));
        }
    }
    let mut out = Vec::with_capacity(1 << 20);
    frame(&header(options.block_size), &mut out);
    namespace.dump(&mut |record| frame(&record, &mut out));
    let (aside, path) = (
        dir.join(format!("snapshot-{upto:012}.tmp")),
        snapshot_path(dir, upto),
    );
    let mut file =
        File::create(&aside).map_err(|e| io_error(format!("creating {}", aside.display()), &e))?;
    file.write_all(&out)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(format!("writing {}", aside.display()), &e))?;
    std::fs::rename(&aside, &path)
        .map_err(|e| io_error(format!("renaming {}", aside.display()), &e))?;
    sync_dir(dir)?;
    for n in listing.segments.iter().filter(|n| **n < upto) {
        let _ = std::fs::remove_file(segment_path(dir, *n));
    }
    for n in listing.snapshots.iter().filter(|n| **n < upto) {
        let _ = std::fs::remove_file(snapshot_path(dir, *n));
    }
    Ok(out.len() as u64)
}

#[cfg(test)]
mod tests;
