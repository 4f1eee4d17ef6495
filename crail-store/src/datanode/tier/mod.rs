//! Storage tiers: where a datanode keeps its blocks.
//!
//! A tier is one type implementing [`Tier`]; adding one (say, a persistent-memory tier) is one
//! new module plus one arm in [`crate::datanode::TierConfig`]. The data-plane server is generic
//! over the tier, so the hot path has no dynamic dispatch and no boxed futures.
//!
//! Both tiers share the same discipline: one reader-writer lock per block (a write excludes
//! other access to its block; reads share), the block's generation checked under it (see
//! [`crate::grant`]), and the per-chunk checksums of [`super::checksum`].

mod disk;
mod dram;
mod flash;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::checksum::{CHUNK, ChunkSums};
use crate::error::{Error, Result};

pub(crate) use dram::DramTier;
pub(crate) use flash::FlashTier;
pub use flash::state_path;

/// A storage tier. Offsets are bytes in the tier's storage; the server has checked that every
/// range lies inside one block and inside the capacity before calling.
pub(crate) trait Tier: Send + Sync + Sized + 'static {
    /// Where an incoming write's payload is received.
    type Write: AsMut<[u8]> + Send + 'static;
    /// The bytes of a read, kept valid until sent.
    type Read: AsRef<[u8]> + Detach + Send + Sync + 'static;

    /// Whether reads and the storing step of writes (`finish_write`) should run as tasks of
    /// their own (they wait for a device, and the connection meanwhile receives the next
    /// request) rather than inline on the connection (they only copy memory).
    const SPAWN_IO: bool;

    /// The request size clients best split a buffer's write into over TCP (0: whole): small
    /// enough that storing one piece overlaps receiving the next, for tiers that store at
    /// memory speed.
    const WRITE_PIECE: u32;

    /// Bytes of storage.
    fn capacity(&self) -> u64;

    /// The blocks it holds, with their generations (see [`BlockLocks::report`]).
    fn report(&self) -> Vec<(u64, u64)>;

    /// Prepares to receive `len` bytes for `offset` from a writer granted the block's
    /// `generation` (takes the block's lock; an older generation than the block's is
    /// [`crate::Error::Fenced`]).
    fn begin_write(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
        generation: u64,
    ) -> impl Future<Output = Result<Self::Write>> + Send;

    /// Checks the received payload against `crc` and stores it. On any error the chunks the
    /// write touched read as corrupt until written again: never as stale data passed off as new.
    fn finish_write(
        self: &Arc<Self>,
        write: Self::Write,
        crc: u32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The bytes `[offset, offset + len)`, verified against their stored checksums, and the
    /// crc32c of exactly those bytes, for a reader granted the block's `generation`.
    fn read(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
        generation: u64,
    ) -> impl Future<Output = Result<(Self::Read, u32)>> + Send;
}

/// The bytes of a read that may hold their block locked (sent straight from the tier):
/// `detach` gives them in memory of their own and lets the block go, for a reply that has to
/// wait for a slow socket. No reader's socket ever holds up a writer.
pub(crate) trait Detach: Sized {
    fn detach(self) -> Self;
}

/// One lock per block, and the newest generation seen for each block.
#[derive(Debug)]
pub(crate) struct BlockLocks {
    block_size: u64,
    locks: Vec<Arc<RwLock<()>>>,
    generations: Vec<AtomicU64>,
}

impl BlockLocks {
    pub(crate) fn new(capacity: u64, block_size: u64) -> Self {
        let blocks = usize::try_from(capacity / block_size.max(1)).unwrap_or(0);
        Self {
            block_size,
            locks: (0..blocks).map(|_| Arc::new(RwLock::new(()))).collect(),
            generations: (0..blocks).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(&self, offset: u64) -> usize {
        usize::try_from(offset / self.block_size).unwrap_or(usize::MAX)
    }

    fn lock_of(&self, offset: u64) -> Arc<RwLock<()>> {
        // The server checked the range, so the block exists; a fresh lock keeps this total.
        self.locks
            .get(self.index(offset))
            .cloned()
            .unwrap_or_default()
    }

    /// The blocks a grant ever reached, with their newest generation: what the datanode
    /// reports when it registers again.
    pub(crate) fn report(&self) -> Vec<(u64, u64)> {
        self.generations
            .iter()
            .enumerate()
            .filter_map(|(block, generation)| {
                let generation = generation.load(Ordering::Acquire);
                (generation != 0).then_some((block as u64, generation))
            })
            .collect()
    }

    /// Every block's generation, 8 bytes each (for a flash tier's state file).
    pub(crate) fn export(&self, out: &mut Vec<u8>) {
        for generation in &self.generations {
            out.extend_from_slice(&generation.load(Ordering::Acquire).to_le_bytes());
        }
    }

    /// Takes back what [`BlockLocks::export`] wrote.
    pub(crate) fn import(&self, bytes: &[u8]) {
        for (generation, word) in self.generations.iter().zip(bytes.chunks_exact(8)) {
            let value = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            generation.store(value, Ordering::Release);
        }
    }

    /// Blocks covered.
    pub(crate) fn len(&self) -> usize {
        self.generations.len()
    }

    /// Takes the block's lock for a write of `generation`.
    pub(crate) async fn write(
        &self,
        offset: u64,
        generation: u64,
        sums: &ChunkSums,
    ) -> Result<OwnedRwLockWriteGuard<()>> {
        let guard = self.lock_of(offset).write_owned().await;
        self.admit(offset, generation, sums)?;
        Ok(guard)
    }

    /// Takes the block's lock for a read of `generation`.
    pub(crate) async fn read(
        &self,
        offset: u64,
        generation: u64,
        sums: &ChunkSums,
    ) -> Result<OwnedRwLockReadGuard<()>> {
        let guard = self.lock_of(offset).read_owned().await;
        self.admit(offset, generation, sums)?;
        Ok(guard)
    }

    /// Under the block's lock: refuses a generation older than the newest seen; a newer one
    /// becomes the block's, and what the block held before is forgotten (its chunks' sums
    /// unknown, poison included): the block belongs to a new file.
    fn admit(&self, offset: u64, generation: u64, sums: &ChunkSums) -> Result<()> {
        let index = self.index(offset);
        let Some(current) = self.generations.get(index) else {
            return Ok(());
        };
        let seen = current.fetch_max(generation, Ordering::AcqRel);
        if seen > generation {
            return Err(Error::Fenced {
                offset: offset - offset % self.block_size,
                generation,
                current: seen,
            });
        }
        if seen < generation {
            let per_block = usize::try_from(self.block_size).unwrap_or(usize::MAX) / CHUNK;
            sums.forget(index * per_block, per_block);
        }
        Ok(())
    }
}
