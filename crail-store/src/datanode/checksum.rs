//! Checksums of stored bytes: one crc32c per 4 KiB chunk of a datanode's storage.
//!
//! A write computes the crc of every chunk it touches (whole chunks, so a chunk's crc covers
//! bytes written by earlier writes too) and checks the crc of its payload, derived from the
//! same pass. A read recomputes the crcs of the chunks it covers, compares them with the stored
//! ones, and derives the crc of the bytes it returns, which the client checks again: corruption
//! on the medium and on the way are both caught, and each byte is hashed once per side.
//!
//! Deriving a range's crc from chunk crcs needs "crc of A followed by one chunk" from crc(A) and
//! crc(chunk). That is `shift(crc(A)) ^ crc(chunk)`, where `shift` multiplies by x^(8 * CHUNK)
//! modulo the polynomial: a linear map, so four 256-entry tables make it four lookups.

use std::ops::Range;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Bytes covered by one checksum. Also the `O_DIRECT` unit of the flash tier.
pub(crate) const CHUNK: usize = crate::buffer::ALIGN;

const UNKNOWN: u64 = 0;
const KNOWN: u64 = 1 << 32;
const POISONED: u64 = 2 << 32;

static SHIFT: LazyLock<[[u32; 256]; 4]> = LazyLock::new(|| {
    let mut tables = [[0u32; 256]; 4];
    for (k, table) in tables.iter_mut().enumerate() {
        for (v, entry) in table.iter_mut().enumerate() {
            // combine(c, 0, CHUNK) is exactly the shift of c; it is linear in c.
            *entry = crate::crc::combine((v as u32) << (8 * k), 0, CHUNK as u64);
        }
    }
    tables
});

/// crc32c of `a` followed by `b`, where `b` is one whole chunk.
fn append_chunk(crc_a: u32, crc_b: u32) -> u32 {
    let t = &*SHIFT;
    let c = crc_a as usize;
    t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24] ^ crc_b
}

/// What a scan does with the chunk crcs it computes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Records them (a write).
    Store,
    /// Compares them with the recorded ones (a read): a chunk never written since the block
    /// was last allocated is an error, never old contents.
    Verify,
    /// Compares them with the recorded ones where there are any (a write that keeps part of
    /// a chunk: bytes never written may be kept, they are nobody's).
    Keep,
}

/// The stored crc of every chunk. A chunk is *unknown* until first written (a flash file's old
/// contents), *known*, or *poisoned* (a write to it failed half-way: reads fail until it is
/// written again).
#[derive(Debug)]
pub(crate) struct ChunkSums {
    sums: Vec<AtomicU64>,
}

impl ChunkSums {
    /// Sums for `capacity` bytes; `zeroed` storage starts known (all zero bytes).
    pub(crate) fn new(capacity: u64, zeroed: bool) -> Self {
        let chunks = usize::try_from(capacity.div_ceil(CHUNK as u64)).unwrap_or(usize::MAX);
        let initial = if zeroed {
            KNOWN | u64::from(crate::crc::crc32c(&[0; CHUNK]))
        } else {
            0
        };
        Self {
            sums: (0..chunks).map(|_| AtomicU64::new(initial)).collect(),
        }
    }

    /// Every chunk's state, 8 bytes each (for a flash tier's state file).
    pub(crate) fn export(&self, out: &mut Vec<u8>) {
        for sum in &self.sums {
            out.extend_from_slice(&sum.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    /// Takes back what [`ChunkSums::export`] wrote (as many chunks as both have).
    pub(crate) fn import(&self, bytes: &[u8]) {
        for (sum, word) in self.sums.iter().zip(bytes.chunks_exact(8)) {
            let value = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            sum.store(value, Ordering::Relaxed);
        }
    }

    /// Chunks covered.
    pub(crate) fn len(&self) -> usize {
        self.sums.len()
    }

    /// Forgets the sums of chunks `[first, first + count)`: they read as unknown.
    pub(crate) fn forget(&self, first: usize, count: usize) {
        for sum in self.sums.iter().skip(first).take(count) {
            sum.store(UNKNOWN, Ordering::Relaxed);
        }
    }

    /// Marks chunks `[first, first + count)` unreadable until rewritten.
    pub(crate) fn poison(&self, first: usize, count: usize) {
        for sum in self.sums.iter().skip(first).take(count) {
            sum.store(POISONED, Ordering::Relaxed);
        }
    }

    /// Checks the whole chunks of `chunks` (the first being chunk number `first`, at storage
    /// offset `base`) against their stored crcs. A write that keeps part of a chunk calls this
    /// first, so it never re-checksums corrupt or poisoned bytes as good.
    pub(crate) fn verify(
        &self,
        chunks: &[u8],
        first: usize,
        location: &str,
        base: u64,
    ) -> Result<()> {
        self.scan(chunks, first, 0..0, Mode::Keep, location, base)
            .map(|_| ())
    }

    /// Hashes `chunks` (whole chunks, the first being chunk number `first`) in one pass:
    /// stores or verifies each chunk's crc and returns the crc of `chunks[range]`.
    /// `location` and `base` (the storage offset of `chunks[0]`) name a mismatch.
    pub(crate) fn scan(
        &self,
        chunks: &[u8],
        first: usize,
        range: Range<usize>,
        mode: Mode,
        location: &str,
        base: u64,
    ) -> Result<u32> {
        let mut crc = 0;
        for (i, chunk) in chunks.chunks(CHUNK).enumerate() {
            let whole = crate::crc::crc32c(chunk);
            let slot = self.sums.get(first + i);
            match mode {
                Mode::Store => {
                    if let Some(slot) = slot {
                        slot.store(KNOWN | u64::from(whole), Ordering::Relaxed);
                    }
                }
                Mode::Verify | Mode::Keep => {
                    let stored = slot.map_or(0, |s| s.load(Ordering::Relaxed));
                    if stored == UNKNOWN && matches!(mode, Mode::Verify) {
                        return Err(Error::Unwritten {
                            location: location.to_owned(),
                            offset: base + (i * CHUNK) as u64,
                        });
                    }
                    let bad =
                        (stored == POISONED) || (stored & KNOWN != 0 && stored as u32 != whole);
                    if bad {
                        return Err(Error::ChecksumMismatch {
                            location: location.to_owned(),
                            offset: base + (i * CHUNK) as u64,
                            expected: stored as u32,
                            actual: whole,
                        });
                    }
                }
            }
            let (c0, c1) = (i * CHUNK, i * CHUNK + chunk.len());
            let (lo, hi) = (c0.max(range.start), c1.min(range.end));
            if lo >= hi {
                continue;
            }
            crc = if lo == c0 && hi == c1 && chunk.len() == CHUNK {
                append_chunk(crc, whole)
            } else {
                crate::crc::append(crc, &chunk[lo - c0..hi - c0])
            };
        }
        Ok(crc)
    }
}

/// The chunks a write of `[offset, offset + len)` keeps part of: the storage offsets of its
/// first and last chunk if the write starts or ends inside them (one offset if they coincide).
pub(crate) fn partial_chunks(offset: u64, len: usize) -> impl Iterator<Item = u64> {
    let chunk = CHUNK as u64;
    let (start, end) = covering(offset, len);
    let head = (!offset.is_multiple_of(chunk)).then_some(start);
    let last = end - chunk;
    let tail = (!(offset + len as u64).is_multiple_of(chunk) && head != Some(last)).then_some(last);
    head.into_iter().chain(tail)
}

/// The chunk-aligned span `[start, end)` covering `[offset, offset + len)`.
pub(crate) fn covering(offset: u64, len: usize) -> (u64, u64) {
    let chunk = CHUNK as u64;
    let start = offset / chunk * chunk;
    let end = (offset + len as u64).div_ceil(chunk) * chunk;
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn append_chunk_is_crc_of_the_concatenation() {
        let a = data(777);
        let b = data(CHUNK);
        let joined: Vec<u8> = a.iter().chain(&b).copied().collect();
        assert_eq!(
            append_chunk(crate::crc::crc32c(&a), crate::crc::crc32c(&b)),
            crate::crc::crc32c(&joined)
        );
    }

    #[test]
    fn scan_returns_the_crc_of_any_range() {
        let bytes = data(4 * CHUNK);
        let sums = ChunkSums::new(bytes.len() as u64, false);
        for range in [
            0..4 * CHUNK,
            1..4 * CHUNK - 1,
            100..200,
            CHUNK..2 * CHUNK,
            5000..9000,
        ] {
            let crc = sums
                .scan(&bytes, 0, range.clone(), Mode::Store, "t", 0)
                .unwrap();
            assert_eq!(crc, crate::crc::crc32c(&bytes[range.clone()]), "{range:?}");
            let again = sums
                .scan(&bytes, 0, range.clone(), Mode::Verify, "t", 0)
                .unwrap();
            assert_eq!(again, crc);
        }
    }

    #[test]
    fn verify_catches_changed_and_poisoned_chunks() {
        let mut bytes = data(2 * CHUNK);
        let sums = ChunkSums::new(bytes.len() as u64, false);
        sums.scan(&bytes, 0, 0..bytes.len(), Mode::Store, "t", 0)
            .unwrap();
        bytes[CHUNK + 3] ^= 1;
        let err = sums
            .scan(&bytes, 0, 0..10, Mode::Verify, "dram", 1 << 20)
            .unwrap_err();
        assert!(
            matches!(err, Error::ChecksumMismatch { offset, .. } if offset == (1 << 20) + CHUNK as u64),
            "{err}"
        );
        sums.poison(0, 1);
        assert!(
            sums.scan(&bytes[..CHUNK], 0, 0..1, Mode::Verify, "t", 0)
                .is_err()
        );
    }

    #[test]
    fn unknown_chunks_are_kept_but_never_read_and_zeroed_ones_are() {
        let zeros = vec![0u8; CHUNK];
        let known = ChunkSums::new(CHUNK as u64, true);
        assert!(
            known
                .scan(&zeros, 0, 0..CHUNK, Mode::Verify, "t", 0)
                .is_ok()
        );
        assert!(
            known
                .scan(&data(CHUNK), 0, 0..1, Mode::Verify, "t", 0)
                .is_err()
        );
        let unknown = ChunkSums::new(CHUNK as u64, false);
        let err = unknown
            .scan(&data(CHUNK), 0, 0..1, Mode::Verify, "t", 0)
            .unwrap_err();
        assert!(matches!(err, Error::Unwritten { offset: 0, .. }), "{err}");
        unknown.verify(&data(CHUNK), 0, "t", 0).unwrap();
        // Written, then forgotten (its block allocated again): unreadable again.
        unknown
            .scan(&data(CHUNK), 0, 0..CHUNK, Mode::Store, "t", 0)
            .unwrap();
        unknown
            .scan(&data(CHUNK), 0, 0..1, Mode::Verify, "t", 0)
            .unwrap();
        unknown.forget(0, 1);
        assert!(
            unknown
                .scan(&data(CHUNK), 0, 0..1, Mode::Verify, "t", 0)
                .is_err()
        );
    }

    #[test]
    fn partial_chunks_are_the_edges_a_write_keeps() {
        let c = CHUNK as u64;
        let edges = |offset, len| partial_chunks(offset, len).collect::<Vec<_>>();
        assert!(edges(0, CHUNK).is_empty());
        assert_eq!(edges(1, 10), vec![0]);
        assert_eq!(edges(c - 1, 2), vec![0, c]);
        assert_eq!(edges(c, 10), vec![c]);
        assert_eq!(edges(10, 3 * CHUNK), vec![0, 3 * c]);
    }

    #[test]
    fn covering_spans_are_chunk_aligned() {
        assert_eq!(covering(0, 1), (0, CHUNK as u64));
        assert_eq!(covering(4095, 2), (0, 2 * CHUNK as u64));
        assert_eq!(covering(4096, 4096), (4096, 8192));
    }
}
