//! The radix sorters: entries of (8-byte key prefix, record index), sorted by prefix, then
//! runs of equal prefixes ordered by whole keys.

use rayon::prelude::*;

use crate::streamer::{Streamer, copy_record, prefetch};
use crate::{Keys, Sorter, for_each_run, order_runs, order_ties};

/// Buckets of the MSD pass on fixed records: 10 bits of the key, so a bucket of a gigabyte of
/// uniform keys (about 1 MB) stays in a core's L2 cache while it is sorted.
const BUCKET_BITS: usize = 10;
const BUCKETS: usize = 1 << BUCKET_BITS;

/// The LSD passes stop once the bytes sorted on take this many times more values than there
/// are entries; the few runs still equal on them are ordered by comparison.
const SPREAD: usize = 4;

/// Parallel: an MSD pass on the prefix's top byte into 256 buckets, then LSD passes inside
/// each bucket over the next bytes, as many as tell its entries apart (skipping bytes a bucket
/// never varies in), in parallel across buckets; runs still equal are ordered by comparison.
/// Stable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Radix;

/// `radsort`'s LSD radix sort on the prefix, one thread. Stable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Radsort;

impl Sorter for Radsort {
    fn name(&self) -> &'static str {
        "radsort"
    }

    fn order(&self, keys: &dyn Keys) -> Vec<u32> {
        let mut entries: Vec<(u64, u32)> = (0..keys.len())
            .map(|i| (keys.prefix(i), i as u32))
            .collect();
        radsort::sort_by_key(&mut entries, |e| e.0);
        order_ties(&mut entries, keys);
        entries.into_iter().map(|e| e.1).collect()
    }
}

impl Sorter for Radix {
    fn name(&self) -> &'static str {
        "radix"
    }

    fn order(&self, keys: &dyn Keys) -> Vec<u32> {
        let n = keys.len();
        // MSD pass: each part of the input scatters into 256 buckets of its own (in input
        // order), then bucket b is the concatenation of every part's bucket b, in part order:
        // stable.
        let parts = (rayon::current_num_threads() * 4).max(1);
        let part_len = n.div_ceil(parts).max(1);
        let scattered: Vec<Vec<Vec<(u64, u32)>>> = (0..n)
            .into_par_iter()
            .step_by(part_len)
            .map(|start| {
                let end = (start + part_len).min(n);
                let mut buckets: Vec<Vec<(u64, u32)>> = vec![Vec::new(); 256];
                for i in start..end {
                    let prefix = keys.prefix(i);
                    buckets[(prefix >> 56) as usize].push((prefix, i as u32));
                }
                buckets
            })
            .collect();
        let sorted: Vec<Vec<u32>> = (0..256)
            .into_par_iter()
            .map(|b| {
                let size = scattered.iter().map(|part| part[b].len()).sum();
                let mut bucket = Vec::with_capacity(size);
                for part in &scattered {
                    bucket.extend_from_slice(&part[b]);
                }
                let shift = lsd(&mut bucket);
                order_runs(&mut bucket, shift, keys);
                bucket.into_iter().map(|e| e.1).collect()
            })
            .collect();
        sorted.concat()
    }

    /// Records move twice, both times in bulk: an MSD pass scatters whole records into 1024
    /// buckets by 10 bits of the key, those after the first bits every key shares (see
    /// [`Buckets`]), into `scratch`, stably (each part of the input owns a slice of every
    /// bucket; written past the cache by a [`Streamer`] per slice), then each bucket, about a
    /// MiB that stays in cache, is sorted as entries of (prefix, index) and gathered back into
    /// `data`. Random reads happen only inside a bucket.
    fn sort_records(&self, data: &mut [u8], scratch: &mut [u8], record: usize, key: usize) {
        let n = data.len() / record;
        if n < 2 {
            return;
        }
        let all = crate::FixedKeys { data, record, key };
        let buckets = Buckets::sampled(&all);
        let bucket_of = |r: &[u8]| buckets.of(crate::prefix_of(&r[..key]));
        let parts = (rayon::current_num_threads() * 4).min(n);
        let part_bytes = n.div_ceil(parts) * record;
        let counts: Vec<Vec<usize>> = data
            .par_chunks(part_bytes)
            .map(|part| {
                let mut count = vec![0usize; BUCKETS];
                for r in part.chunks_exact(record) {
                    count[bucket_of(r)] += 1;
                }
                count
            })
            .collect();
        // scratch, bucket-major: bucket 0 of part 0, of part 1, ..., bucket 1 of part 0, ...
        let mut slots: Vec<Vec<&mut [u8]>> =
            counts.iter().map(|_| Vec::with_capacity(BUCKETS)).collect();
        let mut sizes = vec![0usize; BUCKETS];
        let mut rest = &mut scratch[..];
        for (b, size) in sizes.iter_mut().enumerate() {
            for (p, count) in counts.iter().enumerate() {
                let (slot, tail) = std::mem::take(&mut rest).split_at_mut(count[b] * record);
                slots[p].push(slot);
                rest = tail;
                *size += count[b] * record;
            }
        }
        data.par_chunks(part_bytes)
            .zip(slots.into_par_iter())
            .for_each(|(part, slots)| {
                let mut streams: Vec<Streamer> = slots.into_iter().map(Streamer::new).collect();
                for r in part.chunks_exact(record) {
                    streams[bucket_of(r)].push(r);
                }
                streams.into_iter().for_each(Streamer::finish);
            });
        // Each bucket of scratch, sorted, lands at the same place in data.
        let mut pairs = Vec::with_capacity(BUCKETS);
        let (mut src, mut dst) = (&scratch[..], &mut data[..]);
        for size in sizes {
            let (s, s_rest) = src.split_at(size);
            let (d, d_rest) = std::mem::take(&mut dst).split_at_mut(size);
            // The next bucket's records (up to a bucket's worth), to fetch while this one sorts.
            let next = &s_rest[..s_rest.len().min(size)];
            pairs.push((s, d, next));
            src = s_rest;
            dst = d_rest;
        }
        let lead = buckets.shared + BUCKET_BITS as u32;
        pairs.into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(entries, tmp), (src, dst, next)| {
                let keys = crate::FixedKeys {
                    data: src,
                    record,
                    key,
                };
                sort_bucket(&keys, lead, dst, next, entries, tmp);
            },
        );
    }
}

/// Records sampled to find the bits every key shares.
const SAMPLE: usize = 4096;

/// Which bucket a key prefix goes to: the 10 bits after the `shared` bits a sample of the keys
/// all had. Keys of a range partition share their first bits (a TeraSort reduce's of 32
/// partitions, five): bucketing on those would fill a thirty-second of the buckets, each 32
/// times the size the cache holds. A key outside the sample's shared bits goes to the first
/// or the last bucket (by whether it is below or above them), so buckets stay in key order
/// whatever the sample missed.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    shared: u32,
    first: u64,
    last: u64,
}

impl Buckets {
    fn sampled(keys: &crate::FixedKeys) -> Self {
        let n = keys.len();
        let (lo, hi) = (0..n)
            .step_by((n / SAMPLE).max(1))
            .chain(n.checked_sub(1))
            .map(|i| keys.prefix(i))
            .fold((u64::MAX, 0), |(lo, hi), p| (lo.min(p), hi.max(p)));
        let shared = (lo ^ hi)
            .leading_zeros()
            .min(64 - BUCKET_BITS as u32 - 2 * DIGIT_BITS);
        let low_bits = u64::MAX.checked_shr(shared).unwrap_or(0);
        let first = lo & !low_bits;
        Self {
            shared,
            first,
            last: first | low_bits,
        }
    }

    #[inline]
    fn of(&self, prefix: u64) -> usize {
        if prefix < self.first {
            0
        } else if prefix > self.last {
            BUCKETS - 1
        } else {
            ((prefix << self.shared) >> (64 - BUCKET_BITS)) as usize
        }
    }
}

/// Bits of each LSD digit inside a bucket: 2048 counters, 8 KiB, stay in L1.
const DIGIT_BITS: u32 = 11;
const DIGITS: usize = 1 << DIGIT_BITS;

#[inline]
fn digit(prefix: u64, shift: u32) -> usize {
    ((prefix >> shift) as usize) & (DIGITS - 1)
}

/// Sorts one bucket, the records of `keys`, into `dst`; `entries` and `tmp` are the task's
/// buffers, reused from bucket to bucket. The pass that makes the entries also counts the two
/// 11-bit digits below the key's first `lead` bits (those the bucket's keys share, if it holds
/// no outliers); where those spread the keys (always, for keys like TeraSort's), two LSD
/// passes sort on them, and runs still equal are ordered by comparison as the gather reaches
/// them. Otherwise [`lsd`] picks the bytes to sort on.
fn sort_bucket(
    keys: &crate::FixedKeys,
    lead: u32,
    dst: &mut [u8],
    next: &[u8],
    entries: &mut Vec<(u64, u32)>,
    tmp: &mut Vec<(u64, u32)>,
) {
    let (record, n) = (keys.record, keys.len());
    // The two digits right after the first `lead` bits, as shifts of the prefix.
    let high = 64 - lead - DIGIT_BITS;
    let low = high - DIGIT_BITS;
    entries.clear();
    let mut counts = [[0u32; DIGITS]; 2];
    let (mut any, mut all) = (0u64, u64::MAX);
    for i in 0..n {
        let prefix = keys.prefix(i);
        any |= prefix;
        all &= prefix;
        counts[0][digit(prefix, high)] += 1;
        counts[1][digit(prefix, low)] += 1;
        entries.push((prefix, i as u32));
    }
    // The digits do the sort where the bits above them never vary in the bucket and the
    // values they take tell its entries apart several times over.
    let distinct = |count: &[u32; DIGITS]| count.iter().filter(|&&c| c > 0).count();
    let fits = n >= 256
        && (any ^ all).leading_zeros() >= lead
        && distinct(&counts[0]) * distinct(&counts[1]) >= n * SPREAD;
    let (sorted, shift): (&mut [(u64, u32)], u32) = if fits {
        if tmp.len() < n {
            tmp.resize(n, (0, 0));
        }
        let (mut from, mut to) = (&mut entries[..], &mut tmp[..n]);
        for (count, shift) in [(&counts[1], low), (&counts[0], high)] {
            if count.contains(&(n as u32)) {
                continue;
            }
            counting_pass(from, to, count, |prefix| digit(prefix, shift));
            std::mem::swap(&mut from, &mut to);
        }
        (from, low)
    } else {
        let shift = lsd(entries);
        (&mut entries[..], shift)
    };
    // The gather; each run of entries equal on the sorted bits is ordered as it comes.
    let mut slots = dst.chunks_exact_mut(record);
    let mut ahead = 0;
    for_each_run(sorted, shift, keys, |run| {
        // The run first: zip asks it before taking a slot, so no slot is lost at its end.
        for (e, slot) in run.iter().zip(&mut slots) {
            let at = e.1 as usize * record;
            copy_record(slot, &keys.data[at..at + record]);
            // Two lines of the next bucket per record: it is in cache when its turn comes.
            for _ in 0..2 {
                if let Some(byte) = next.get(ahead) {
                    prefetch(byte);
                }
                ahead += 64;
            }
        }
    });
}

/// One stable counting pass: `from`'s entries into `to` by the digit `digit_of` gives each,
/// with `count` the number of entries per digit.
fn counting_pass<const N: usize>(
    from: &[(u64, u32)],
    to: &mut [(u64, u32)],
    count: &[u32; N],
    digit_of: impl Fn(u64) -> usize,
) {
    let mut next = [0u32; N];
    let mut sum = 0;
    for (slot, &c) in next.iter_mut().zip(count.iter()) {
        *slot = sum;
        sum += c;
    }
    for e in from {
        let d = digit_of(e.0);
        to[next[d] as usize] = *e;
        next[d] += 1;
    }
}

/// Stable LSD radix sort of `entries` by the prefix's top bytes; returns how many low bits it
/// left unsorted, for [`order_runs`]. Bytes every entry shares (the bucket's first byte, for
/// one) cost no pass, and it stops after enough varying bytes to tell `entries.len()` entries
/// apart (two for up to 65536), since runs still equal on those are short: sorting the low
/// bytes of every entry would cost a pass each for the few entries that need it.
fn lsd(entries: &mut Vec<(u64, u32)>) -> u32 {
    if entries.len() < 64 {
        entries.sort_by_key(|e| e.0);
        return 0;
    }
    let n = entries.len();
    // Histograms of the top four bytes, and of the low four only if they are needed.
    let mut counts = [[0u32; 256]; 8];
    let count = |counts: &mut [[u32; 256]; 8], bytes: std::ops::Range<usize>| {
        for e in entries.iter() {
            for byte in bytes.clone() {
                counts[byte][((e.0 >> (56 - 8 * byte)) & 0xff) as usize] += 1;
            }
        }
    };
    count(&mut counts, 0..4);
    let mut low_counted = false;
    // The bytes to sort on: from the first that varies, until the values they take could
    // tell n entries apart several times over.
    let all = n as u32;
    let first = match (0..4).find(|&b| !counts[b].contains(&all)) {
        Some(first) => first,
        None => {
            count(&mut counts, 4..8);
            low_counted = true;
            match (4..8).find(|&b| !counts[b].contains(&all)) {
                Some(first) => first,
                None => return 0,
            }
        }
    };
    let mut wanted = 0;
    let mut values = 1usize;
    while first + wanted < 8 && values < n.saturating_mul(SPREAD) {
        if first + wanted == 4 && !low_counted {
            count(&mut counts, 4..8);
            low_counted = true;
        }
        let distinct = counts[first + wanted].iter().filter(|&&c| c > 0).count();
        values = values.saturating_mul(distinct);
        wanted += 1;
    }
    let last = first + wanted - 1;
    let mut from = std::mem::take(entries);
    let mut to = vec![(0u64, 0u32); n];
    for byte in (first..=last).rev() {
        let count = &counts[byte];
        if count.contains(&all) {
            continue;
        }
        let shift = 56 - 8 * byte;
        counting_pass(&from, &mut to, count, |prefix| {
            ((prefix >> shift) & 0xff) as usize
        });
        std::mem::swap(&mut from, &mut to);
    }
    *entries = from;
    (56 - 8 * last) as u32
}
