//! The `flash` tier: a file or block device opened with `O_DIRECT`, so blocks go to the device
//! without passing through (and evicting) the page cache. A kernel-attached NVMe-oF namespace
//! is just another block device here.
//!
//! `O_DIRECT` moves whole aligned 4 KiB units, and so do checksums: a write that starts or ends
//! inside a chunk first reads that chunk (read-modify-write, under the block's write lock).

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::OwnedRwLockWriteGuard;

use super::disk::Disk;
use super::{BlockLocks, Detach, Tier};
use crate::buffer::{Buffer, BufferPool};
use crate::config::IoEngine;
use crate::datanode::checksum::{CHUNK, ChunkSums, Mode, covering, partial_chunks};
use crate::error::{Error, Result};

/// The flash tier.
#[derive(Debug)]
pub(crate) struct FlashTier {
    disk: Disk,
    capacity: u64,
    block_size: u64,
    locks: BlockLocks,
    sums: ChunkSums,
    pool: BufferPool,
    label: String,
    engine: &'static str,
    path: std::path::PathBuf,
    /// The identity its last clean stop left in its state file, if any.
    restored: Option<[u8; 16]>,
}

/// Where a flash tier at `path` keeps its state between a clean stop and the next start:
/// `<path>.state`.
pub fn state_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".state");
    name.into()
}

const STATE_MAGIC: &[u8; 16] = b"crail-flash-st1\n";

impl FlashTier {
    /// Opens (creating a regular file if missing) `path` for `capacity` bytes.
    pub(crate) fn open(
        path: &Path,
        capacity: u64,
        block_size: u64,
        engine: IoEngine,
    ) -> Result<Self> {
        let shown = path.display();
        let fail = |what: &str, cause: std::io::Error| Error::Config {
            key: "flash path".into(),
            reason: format!("{shown}: {what}: {cause}"),
        };
        // Only the datanode's user may read it (it holds other applications' data); never
        // through a symlink (one planted there would point the datanode at another file).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => fail(
                    "cannot open with O_DIRECT (tmpfs and some filesystems refuse it)",
                    e,
                ),
                Some(libc::ELOOP) => fail("is a symlink; give the path it points to", e),
                _ => fail("cannot open", e),
            })?;
        // One datanode per file: a second one would overwrite the first's blocks.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| fail("in use by another datanode (locked)", e.into()))?;
        let meta = file.metadata().map_err(|e| fail("cannot stat", e))?;
        if meta.is_file() {
            if meta.len() < capacity {
                file.set_len(capacity)
                    .map_err(|e| fail("cannot size the file", e))?;
            }
        } else {
            let size = file
                .seek(SeekFrom::End(0))
                .map_err(|e| fail("cannot size the device", e))?;
            if size < capacity {
                return Err(Error::Config {
                    key: "flash capacity".into(),
                    reason: format!(
                        "{shown} holds {size} bytes, less than the {capacity} asked for"
                    ),
                });
            }
        }
        let (disk, engine) = Disk::new(file, engine).map_err(|e| fail("cannot start I/O", e))?;
        let buffer = usize::try_from(block_size).unwrap_or(usize::MAX);
        let mut tier = Self {
            disk,
            capacity,
            block_size,
            locks: BlockLocks::new(capacity, block_size),
            sums: ChunkSums::new(capacity, false),
            pool: BufferPool::new(buffer, 64),
            label: format!("flash tier {shown}"),
            engine,
            path: path.to_owned(),
            restored: None,
        };
        tier.restored = tier.load_state();
        Ok(tier)
    }

    /// The identity a clean stop left, with the generations and checksums of its blocks
    /// taken back; the state file is removed at once (a crash from now on leaves none, and
    /// the next start begins afresh: nothing stale is ever offered).
    fn load_state(&self) -> Option<[u8; 16]> {
        let path = state_path(&self.path);
        let bytes = std::fs::read(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        let (blocks, chunks) = (self.locks.len(), self.sums.len());
        let expected = 16 + 8 + 8 + 16 + 8 * (blocks + chunks) + 4;
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let fine = bytes.len() == expected
            && &bytes[..16] == STATE_MAGIC
            && word(16) == self.capacity
            && word(24) == self.block_size
            && crate::crc::crc32c(&bytes[..expected - 4]).to_le_bytes()[..]
                == bytes[expected - 4..];
        if !fine {
            tracing::warn!(state = %path.display(), "flash state does not match this tier; starting afresh");
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[32..48]);
        let generations = 48 + 8 * blocks;
        self.locks.import(&bytes[48..generations]);
        self.sums
            .import(&bytes[generations..generations + 8 * chunks]);
        tracing::info!(state = %path.display(), "flash tier takes back its blocks from its last clean stop");
        Some(uuid)
    }

    /// The identity its last clean stop left, if it left one.
    pub(crate) fn restored(&self) -> Option<[u8; 16]> {
        self.restored
    }

    /// On a clean stop (nothing in flight): syncs the device, then writes the tier's identity,
    /// its blocks' generations and its chunks' checksums beside the file, so that the next
    /// start on the same file offers the same blocks again.
    pub(crate) fn save_state(&self, uuid: &[u8; 16]) -> Result<()> {
        let path = state_path(&self.path);
        let fail = |e: std::io::Error| Error::Io {
            cause: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        };
        self.disk.sync().map_err(fail)?;
        let mut bytes = Vec::with_capacity(52 + 8 * (self.locks.len() + self.sums.len()));
        bytes.extend_from_slice(STATE_MAGIC);
        bytes.extend_from_slice(&self.capacity.to_le_bytes());
        bytes.extend_from_slice(&self.block_size.to_le_bytes());
        bytes.extend_from_slice(uuid);
        self.locks.export(&mut bytes);
        self.sums.export(&mut bytes);
        let crc = crate::crc::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let mut aside = path.clone().into_os_string();
        aside.push(".tmp");
        let aside = std::path::PathBuf::from(aside);
        std::fs::write(&aside, &bytes)
            .and_then(|()| std::fs::File::open(&aside)?.sync_all())
            .and_then(|()| std::fs::rename(&aside, &path))
            .map_err(fail)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// The I/O engine in use ("io_uring" or "pread").
    pub(crate) fn engine(&self) -> &'static str {
        self.engine
    }

    fn index(offset: u64) -> usize {
        usize::try_from(offset).unwrap_or(usize::MAX)
    }

    async fn read_into(&self, buf: Buffer, at: usize, len: usize, offset: u64) -> Result<Buffer> {
        let (buf, result) = self.disk.read(buf, at..at + len, offset).await;
        result.map_err(|cause| Error::Io { cause })?;
        Ok(buf)
    }
}

/// A write in progress: the payload lands in an aligned staging buffer covering whole chunks.
#[derive(Debug)]
pub(crate) struct FlashWrite {
    tier: Arc<FlashTier>,
    _guard: OwnedRwLockWriteGuard<()>,
    staging: Option<Buffer>,
    start: u64,
    span: usize,
    head: usize,
    len: usize,
    done: bool,
}

impl AsMut<[u8]> for FlashWrite {
    fn as_mut(&mut self) -> &mut [u8] {
        let (head, len) = (self.head, self.len);
        match &mut self.staging {
            Some(buf) => &mut buf.whole_mut()[head..head + len],
            None => &mut [],
        }
    }
}

impl Drop for FlashWrite {
    fn drop(&mut self) {
        if !self.done {
            self.tier
                .sums
                .poison(FlashTier::index(self.start) / CHUNK, self.span / CHUNK);
        }
    }
}

/// The bytes of a read, in a staging buffer (the block lock is already released).
#[derive(Debug)]
pub(crate) struct FlashRead {
    staging: Buffer,
    head: usize,
    len: usize,
}

impl Detach for FlashRead {
    /// Its own memory already: the block was let go when the device read ended.
    fn detach(self) -> Self {
        self
    }
}

impl AsRef<[u8]> for FlashRead {
    fn as_ref(&self) -> &[u8] {
        &self.staging.whole()[self.head..self.head + self.len]
    }
}

impl Tier for FlashTier {
    type Write = FlashWrite;
    type Read = FlashRead;
    const SPAWN_IO: bool = true;
    // Each request is a device write, serialised per block: pieces would only shrink them.
    const WRITE_PIECE: u32 = 0;

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn report(&self) -> Vec<(u64, u64)> {
        self.locks.report()
    }

    async fn begin_write(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
        generation: u64,
    ) -> Result<FlashWrite> {
        let guard = self.locks.write(offset, generation, &self.sums).await?;
        let (start, end) = covering(offset, len);
        let span = Self::index(end - start);
        let head = Self::index(offset - start);
        let mut staging = self.pool.get();
        if head != 0 {
            staging = self.read_into(staging, 0, CHUNK, start).await?;
        }
        let tail_partial = !(head + len).is_multiple_of(CHUNK);
        if tail_partial && (span > CHUNK || head == 0) {
            staging = self
                .read_into(staging, span - CHUNK, CHUNK, end - CHUNK as u64)
                .await?;
        }
        // The bytes this write keeps must be good before they are checksummed again.
        for at in partial_chunks(offset, len) {
            let i = Self::index(at - start);
            self.sums.verify(
                &staging.whole()[i..i + CHUNK],
                Self::index(at) / CHUNK,
                &self.label,
                at,
            )?;
        }
        Ok(FlashWrite {
            tier: self.clone(),
            _guard: guard,
            staging: Some(staging),
            start,
            span,
            head,
            len,
            done: false,
        })
    }

    async fn finish_write(self: &Arc<Self>, mut write: FlashWrite, crc: u32) -> Result<()> {
        let Some(staging) = write.staging.take() else {
            return Err(Error::Io {
                cause: std::io::Error::other("write without a staging buffer"),
            });
        };
        let got = self.sums.scan(
            &staging.whole()[..write.span],
            Self::index(write.start) / CHUNK,
            write.head..write.head + write.len,
            Mode::Store,
            &self.label,
            write.start,
        )?;
        if got != crc {
            return Err(Error::ChecksumMismatch {
                location: format!("write to the {}", self.label),
                offset: write.start + write.head as u64,
                expected: crc,
                actual: got,
            });
        }
        let (_staging, result) = self.disk.write(staging, 0..write.span, write.start).await;
        result.map_err(|cause| Error::Io { cause })?;
        write.done = true;
        Ok(())
    }

    async fn read(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
        generation: u64,
    ) -> Result<(FlashRead, u32)> {
        let (start, end) = covering(offset, len);
        let span = Self::index(end - start);
        let head = Self::index(offset - start);
        let staging = {
            let _guard = self.locks.read(offset, generation, &self.sums).await?;
            self.read_into(self.pool.get(), 0, span, start).await?
        };
        let crc = self.sums.scan(
            &staging.whole()[..span],
            Self::index(start) / CHUNK,
            head..head + len,
            Mode::Verify,
            &self.label,
            start,
        )?;
        Ok((FlashRead { staging, head, len }, crc))
    }
}
