//! Sorting serialized records by key, after Crail Spark-IO's sorter plugins.
//!
//! A [`Sorter`] computes the order of records by key from a view of their keys ([`Keys`]);
//! [`sort_fixed`] and [`sort_encoded`] apply it to a buffer of encoded records with one
//! gather. Sorters, by name ([`by_name`]):
//!
//! | name | how | stable | threads |
//! |---|---|---|---|
//! | `radix` | entries of (8-byte key prefix, index); one MSD pass on the top byte splits them into 256 buckets, each sorted by LSD passes over as many following prefix bytes as tell its entries apart (bytes a bucket never varies in are skipped); runs still equal are then ordered by prefix and whole key. Fixed-length records in place ([`sort_fixed_in_place`]): whole records are scattered into 1024 buckets by the key's first 10 bits past the cache; each bucket's entries are sorted by two LSD passes on the next two 11-bit digits where those spread its keys (by the passes above otherwise) and gathered back, runs still equal ordered as the gather reaches them | yes | all (rayon) |
//! | `radsort` | the same entries sorted by `radsort`'s LSD radix sort on the prefix, runs of equal prefixes ordered by the whole key | yes | one |
//! | `comparison` | rayon's parallel merge sort of indices, comparing whole keys | yes | all |
//!
//! Every sorter is stable: records with equal keys keep their input order. Keys compare as
//! byte strings (a shorter key that is a prefix of a longer one comes first), which for
//! big-endian integers is numeric order.

mod partition;
mod radix;
mod streamer;

use std::cmp::Ordering;

use crail_serializers::{Error, Fixed, Framing, Result, Serializer};
use rayon::prelude::*;

pub use partition::RangePartitioner;
pub use radix::{Radix, Radsort};

/// The keys of `len` records.
pub trait Keys: Sync {
    /// How many records.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The key of record `i`.
    fn key(&self, i: usize) -> &[u8];
    /// The first 8 bytes of key `i` as a big-endian number, zero-padded.
    fn prefix(&self, i: usize) -> u64 {
        prefix_of(self.key(i))
    }
}

/// The first 8 bytes of `key`, big-endian, zero-padded.
pub fn prefix_of(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// A sorter of records by key.
pub trait Sorter: Send + Sync + std::fmt::Debug {
    /// Its registry name.
    fn name(&self) -> &'static str;
    /// The order of the records by key: the `i`-th entry is the index of the record that
    /// goes `i`-th. Stable. At most `u32::MAX` records.
    fn order(&self, keys: &dyn Keys) -> Vec<u32>;

    /// Sorts the fixed-length records of `data` (`record` bytes, keys their first
    /// `key` bytes) in place, using `scratch` (at least as long as `data`, overwritten). The
    /// default computes the order, gathers into `scratch` and copies back.
    fn sort_records(&self, data: &mut [u8], scratch: &mut [u8], record: usize, key: usize) {
        let keys = FixedKeys {
            data: &*data,
            record,
            key,
        };
        let order = self.order(&keys);
        let scratch = &mut scratch[..data.len()];
        gather(data, &order, record, scratch);
        data.copy_from_slice(scratch);
    }
}

/// The sorter a name selects: `radix`, `radsort` or `comparison`.
pub fn by_name(name: &str) -> Result<Box<dyn Sorter>> {
    match name {
        "radix" => Ok(Box::new(Radix)),
        "radsort" => Ok(Box::new(Radsort)),
        "comparison" => Ok(Box::new(Comparison)),
        _ => Err(Error::UnknownFormat {
            name: name.to_owned(),
            reason: "no such sorter (radix, radsort or comparison)".into(),
        }),
    }
}

/// Rayon's stable parallel merge sort over indices, comparing whole keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct Comparison;

impl Sorter for Comparison {
    fn name(&self) -> &'static str {
        "comparison"
    }

    fn order(&self, keys: &dyn Keys) -> Vec<u32> {
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.par_sort_by(|&a, &b| keys.key(a as usize).cmp(keys.key(b as usize)));
        order
    }
}

/// Orders entries of equal prefix by their whole keys (stably): after a sort by prefix, only
/// runs of equal prefixes can be out of order.
pub(crate) fn order_ties(entries: &mut [(u64, u32)], keys: &(impl Keys + ?Sized)) {
    order_runs(entries, 0, keys);
}

/// Orders runs of entries that agree on `prefix >> shift` by whole prefix, then by whole key
/// (stably): what is left to do after a sort on the prefix's top `64 - shift` bits.
pub(crate) fn order_runs(entries: &mut [(u64, u32)], shift: u32, keys: &(impl Keys + ?Sized)) {
    for_each_run(entries, shift, keys, |_| {});
}

/// As [`order_runs`], handing each run to `visit` once it is ordered, in entry order (every
/// entry belongs to one run), so a caller can consume them in the same pass.
pub(crate) fn for_each_run(
    entries: &mut [(u64, u32)],
    shift: u32,
    keys: &(impl Keys + ?Sized),
    mut visit: impl FnMut(&[(u64, u32)]),
) {
    let high = |e: &(u64, u32)| e.0.checked_shr(shift).unwrap_or(0);
    let mut start = 0;
    while start < entries.len() {
        let top = high(&entries[start]);
        let mut end = start + 1;
        while end < entries.len() && high(&entries[end]) == top {
            end += 1;
        }
        let run = &mut entries[start..end];
        if run.len() > 1 {
            run.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| compare_after_prefix(keys, a.1, b.1))
            });
        }
        visit(run);
        start = end;
    }
}

fn compare_after_prefix(keys: &(impl Keys + ?Sized), a: u32, b: u32) -> Ordering {
    keys.key(a as usize).cmp(keys.key(b as usize))
}

/// The keys of fixed-length records laid end to end.
#[derive(Debug, Clone, Copy)]
pub struct FixedKeys<'a> {
    data: &'a [u8],
    record: usize,
    key: usize,
}

impl<'a> FixedKeys<'a> {
    /// The keys of the records of `format` in `data` (whole records only).
    pub fn new(data: &'a [u8], format: &Fixed) -> Result<Self> {
        let record = format.record_len();
        if !data.len().is_multiple_of(record) {
            let whole = data.len() - data.len() % record;
            return Err(Error::Truncated {
                offset: whole as u64,
                have: (data.len() - whole) as u64,
            });
        }
        Ok(Self {
            data,
            record,
            key: format.key_len(),
        })
    }
}

impl Keys for FixedKeys<'_> {
    fn len(&self) -> usize {
        self.data.len() / self.record
    }

    fn key(&self, i: usize) -> &[u8] {
        let at = i * self.record;
        &self.data[at..at + self.key]
    }

    fn prefix(&self, i: usize) -> u64 {
        let at = i * self.record;
        if self.key >= 8 {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&self.data[at..at + 8]);
            u64::from_be_bytes(bytes)
        } else {
            prefix_of(&self.data[at..at + self.key])
        }
    }
}

/// Sorts fixed-length records: `data` holds whole records of `format`; returns them in key
/// order, gathered in parallel.
pub fn sort_fixed(sorter: &dyn Sorter, data: &[u8], format: &Fixed) -> Result<Vec<u8>> {
    let mut out = vec![0u8; data.len()];
    sort_fixed_into(sorter, data, format, &mut out)?;
    Ok(out)
}

/// As [`sort_fixed`], into `out` (as long as `data`): a caller sorting batch after batch
/// reuses one buffer instead of faulting in fresh memory each time.
pub fn sort_fixed_into(
    sorter: &dyn Sorter,
    data: &[u8],
    format: &Fixed,
    out: &mut [u8],
) -> Result<()> {
    let keys = FixedKeys::new(data, format)?;
    check_count(keys.len())?;
    check_same_len("an output", out.len(), data.len())?;
    let order = sorter.order(&keys);
    gather(data, &order, format.record_len(), out);
    Ok(())
}

/// Copies the records of `data` into `out` in `order`, in parallel.
fn gather(data: &[u8], order: &[u32], record: usize, out: &mut [u8]) {
    // Batches of records per task keep rayon's overhead per record small.
    const BATCH: usize = 1024;
    out.par_chunks_mut(record * BATCH)
        .zip(order.par_chunks(BATCH))
        .for_each(|(dst, batch)| {
            // Touch the record a few places ahead, so its cache lines are on their way while
            // this one is copied (random reads are what a gather waits on).
            const AHEAD: usize = 12;
            let mut touched = 0u8;
            for (j, (slot, &i)) in dst.chunks_exact_mut(record).zip(batch).enumerate() {
                if let Some(&ahead) = batch.get(j + AHEAD) {
                    let at = ahead as usize * record;
                    touched ^= data[at] ^ data[at + record - 1];
                }
                let at = i as usize * record;
                slot.copy_from_slice(&data[at..at + record]);
            }
            std::hint::black_box(touched);
        });
}

/// Sorts the fixed-length records of `format` in `data` in place by key; `scratch` must be at
/// least as long as `data` (its contents are overwritten). A caller sorting batch after batch
/// keeps both buffers, so no memory is faulted in per batch. The fastest way to sort fixed
/// records.
pub fn sort_fixed_in_place(
    sorter: &dyn Sorter,
    data: &mut [u8],
    scratch: &mut [u8],
    format: &Fixed,
) -> Result<()> {
    let keys = FixedKeys::new(data, format)?;
    check_count(keys.len())?;
    if scratch.len() < data.len() {
        return Err(Error::BufferSize {
            what: "a scratch buffer",
            len: scratch.len(),
            need: data.len(),
        });
    }
    sorter.sort_records(data, scratch, format.record_len(), format.key_len());
    Ok(())
}

/// Memory for [`sort_fixed_in_place`]'s buffers: anonymous, zeroed, and advised to use
/// transparent huge pages where the kernel allows, so the radix passes' scattered writes and
/// reads miss the TLB far less than with 4 KiB pages. Keep it and reuse it batch after batch.
pub fn sort_buffer(len: usize) -> std::io::Result<memmap2::MmapMut> {
    let map = memmap2::MmapMut::map_anon(len.max(1))?;
    // Only advice: where the kernel says no (THP off), the buffer works with small pages.
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(map)
}

/// A buffer that must be as long as the data it sorts.
fn check_same_len(what: &'static str, len: usize, data: usize) -> Result<()> {
    if len == data {
        return Ok(());
    }
    Err(Error::BufferSize {
        what,
        len,
        need: data,
    })
}

fn check_count(n: usize) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(Error::TooLong {
            offset: 0,
            what: "batch of records",
            len: n as u64,
            limit: u64::from(u32::MAX),
        });
    }
    Ok(())
}

/// Keys of variable-length records: where each record and its key lie in the buffer.
#[derive(Debug)]
struct Indexed<'a> {
    data: &'a [u8],
    /// (record start, record length, key start, key length) per record.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl Keys for Indexed<'_> {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn key(&self, i: usize) -> &[u8] {
        let (_, _, key, len) = self.spans[i];
        &self.data[key..key + len]
    }
}

/// Sorts the records of an unframed `serializer` in `data` (whole records only) by key;
/// returns the same encoded records in key order.
pub fn sort_encoded(sorter: &dyn Sorter, data: &[u8], serializer: &Serializer) -> Result<Vec<u8>> {
    if serializer.framing() != Framing::None {
        return Err(Error::UnknownFormat {
            name: serializer.name(),
            reason: "sorting works on unframed records: decode the frames first".into(),
        });
    }
    let format = serializer.format();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Some((record, len)) = format
            .decode(&data[at..])
            .map_err(|e| e.shifted(at as u64))?
        else {
            return Err(Error::Truncated {
                offset: at as u64,
                have: (data.len() - at) as u64,
            });
        };
        let key = record.key.as_ptr() as usize - data.as_ptr() as usize;
        spans.push((at, len, key, record.key.len()));
        at += len;
    }
    check_count(spans.len())?;
    let keys = Indexed { data, spans };
    let order = sorter.order(&keys);
    let mut out = Vec::with_capacity(data.len());
    for i in order {
        let (start, len, _, _) = keys.spans[i as usize];
        out.extend_from_slice(&data[start..start + len]);
    }
    Ok(out)
}
