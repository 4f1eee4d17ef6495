//! The `dram` tier: one memory region, reserved up front.
//!
//! The region is a memfd (an anonymous shared-memory file) of the tier's capacity, allocated
//! with `fallocate` and mapped once, pages populated: a full machine fails at start, not in the
//! middle of a write. Writes receive the payload straight from the socket into the region (or
//! copy it from a same-host client's staging slot); reads send straight from it.

use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use super::{BlockLocks, Detach, Tier};
use crate::datanode::checksum::{CHUNK, ChunkSums, Mode, covering, partial_chunks};
use crate::error::{Error, Result};

/// The one place this crate touches raw memory: the mapped region.
#[allow(unsafe_code)]
mod region {
    use std::fs::File;

    use memmap2::{MmapOptions, MmapRaw};

    use crate::error::{Error, Result};

    #[derive(Debug)]
    pub(crate) struct Region {
        map: MmapRaw,
        // Kept open for the mapping's life.
        _file: File,
    }

    // SAFETY: the region is plain memory; every access goes through `slice`/`slice_mut`, whose
    // callers hold the lock of the block the range lies in (see `DramTier`), so no two threads
    // ever hold a `&mut` and another reference to the same bytes.
    unsafe impl Sync for Region {}
    unsafe impl Send for Region {}

    impl Region {
        pub(crate) fn new(capacity: u64) -> Result<Self> {
            let reserve = |cause: std::io::Error| Error::Config {
                key: "dram capacity".into(),
                reason: format!("cannot reserve {capacity} bytes of memory: {cause}"),
            };
            let fd = rustix::fs::memfd_create("crail-dram", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| reserve(e.into()))?;
            rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, capacity)
                .map_err(|e| reserve(e.into()))?;
            let file = File::from(fd);
            let len = usize::try_from(capacity).map_err(|e| reserve(std::io::Error::other(e)))?;
            let map = MmapOptions::new()
                .len(len)
                .populate()
                .map_raw(&file)
                .map_err(reserve)?;
            Ok(Self { map, _file: file })
        }

        fn check(&self, offset: usize, len: usize) {
            assert!(
                offset
                    .checked_add(len)
                    .is_some_and(|end| end <= self.map.len()),
                "region access out of bounds"
            );
        }

        /// # Safety
        /// No `&mut` to any byte of the range may exist while the slice lives.
        pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
            self.check(offset, len);
            // SAFETY: in bounds (checked), mapped for the region's life, aliasing per contract.
            unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
        }

        /// # Safety
        /// No other reference to any byte of the range may exist while the slice lives.
        #[allow(clippy::mut_from_ref)]
        pub(crate) unsafe fn slice_mut(&self, offset: usize, len: usize) -> &mut [u8] {
            self.check(offset, len);
            // SAFETY: as above, with exclusivity per contract.
            unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset), len) }
        }
    }
}

use region::Region;

/// The DRAM tier.
#[derive(Debug)]
pub(crate) struct DramTier {
    region: Region,
    capacity: u64,
    locks: BlockLocks,
    sums: ChunkSums,
    label: String,
}

impl DramTier {
    /// Reserves `capacity` bytes (a multiple of `block_size`).
    pub(crate) fn new(capacity: u64, block_size: u64) -> Result<Self> {
        Ok(Self {
            region: Region::new(capacity)?,
            capacity,
            locks: BlockLocks::new(capacity, block_size),
            sums: ChunkSums::new(capacity, true),
            label: "dram tier".into(),
        })
    }

    fn index(offset: u64) -> usize {
        usize::try_from(offset).unwrap_or(usize::MAX)
    }
}

/// A write in progress: the block is locked for writing until it finishes or drops.
#[derive(Debug)]
pub(crate) struct DramWrite {
    tier: Arc<DramTier>,
    _guard: OwnedRwLockWriteGuard<()>,
    offset: u64,
    len: usize,
    done: bool,
}

impl AsMut<[u8]> for DramWrite {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: the block's write lock is held and `&mut self` is unique, so this is the
        // only reference to these bytes.
        #[allow(unsafe_code)]
        unsafe {
            self.tier
                .region
                .slice_mut(DramTier::index(self.offset), self.len)
        }
    }
}

impl Drop for DramWrite {
    fn drop(&mut self) {
        if !self.done {
            // The payload may have landed half-way: make the chunks read as corrupt.
            let (start, end) = covering(self.offset, self.len);
            let first = DramTier::index(start) / CHUNK;
            self.tier
                .sums
                .poison(first, DramTier::index(end - start) / CHUNK);
        }
    }
}

/// The bytes of a read: in the tier, the block read-locked, while the socket takes them at
/// once; copied out, the lock let go, when the reply must wait for a slow socket.
#[derive(Debug)]
pub(crate) enum DramRead {
    Mapped {
        tier: Arc<DramTier>,
        _guard: OwnedRwLockReadGuard<()>,
        offset: u64,
        len: usize,
    },
    Copied(Box<[u8]>),
}

impl AsRef<[u8]> for DramRead {
    fn as_ref(&self) -> &[u8] {
        match self {
            // SAFETY: the block's read lock is held, so no writer has a `&mut` to it.
            #[allow(unsafe_code)]
            Self::Mapped {
                tier, offset, len, ..
            } => unsafe { tier.region.slice(DramTier::index(*offset), *len) },
            Self::Copied(bytes) => bytes,
        }
    }
}

impl Detach for DramRead {
    fn detach(self) -> Self {
        match self {
            Self::Mapped { .. } => Self::Copied(self.as_ref().into()),
            copied => copied,
        }
    }
}

impl Tier for DramTier {
    type Write = DramWrite;
    type Read = DramRead;
    const SPAWN_IO: bool = false;
    // Storing is a copy: pipelining pieces hides it behind the transfer.
    const WRITE_PIECE: u32 = 256 << 10;

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
    ) -> Result<DramWrite> {
        let guard = self.locks.write(offset, generation, &self.sums).await?;
        for at in partial_chunks(offset, len) {
            // SAFETY: the block's write lock is held and no `&mut` into it exists yet.
            #[allow(unsafe_code)]
            let chunk = unsafe { self.region.slice(DramTier::index(at), CHUNK) };
            self.sums
                .verify(chunk, DramTier::index(at) / CHUNK, &self.label, at)?;
        }
        Ok(DramWrite {
            tier: self.clone(),
            _guard: guard,
            offset,
            len,
            done: false,
        })
    }

    async fn finish_write(self: &Arc<Self>, mut write: DramWrite, crc: u32) -> Result<()> {
        let (start, end) = covering(write.offset, write.len);
        let head = DramTier::index(write.offset - start);
        // SAFETY: the write lock of the block holding [start, end) is held by `write`, and
        // no `&mut` into the region is alive at this point.
        #[allow(unsafe_code)]
        let chunks = unsafe {
            self.region
                .slice(DramTier::index(start), DramTier::index(end - start))
        };
        let got = self.sums.scan(
            chunks,
            DramTier::index(start) / CHUNK,
            head..head + write.len,
            Mode::Store,
            &self.label,
            start,
        )?;
        if got != crc {
            // `write` drops undone: its chunks are poisoned.
            return Err(Error::ChecksumMismatch {
                location: format!("write to the {}", self.label),
                offset: write.offset,
                expected: crc,
                actual: got,
            });
        }
        write.done = true;
        Ok(())
    }

    async fn read(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
        generation: u64,
    ) -> Result<(DramRead, u32)> {
        let guard = self.locks.read(offset, generation, &self.sums).await?;
        let (start, end) = covering(offset, len);
        let head = DramTier::index(offset - start);
        // SAFETY: the block's read lock is held.
        #[allow(unsafe_code)]
        let chunks = unsafe {
            self.region
                .slice(DramTier::index(start), DramTier::index(end - start))
        };
        let crc = self.sums.scan(
            chunks,
            DramTier::index(start) / CHUNK,
            head..head + len,
            Mode::Verify,
            &self.label,
            start,
        )?;
        Ok((
            DramRead::Mapped {
                tier: self.clone(),
                _guard: guard,
                offset,
                len,
            },
            crc,
        ))
    }
}
