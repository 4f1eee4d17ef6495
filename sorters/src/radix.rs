//! The radix sorters: entries of (8-byte key prefix, record index), sorted by prefix, then
//! runs of equal prefixes ordered by whole keys.

use rayon::prelude::*;

use crate::{Keys, Sorter, order_ties};

/// Buckets of the MSD pass on fixed records: the key's first 10 bits, so a bucket of a
/// gigabyte of uniform keys (about 1 MB) stays in a core's L2 cache while it is sorted.
const BUCKETS: usize = 1024;

/// Parallel: an MSD pass on the prefix's top byte into 256 buckets, then LSD passes over the
/// other seven bytes inside each bucket (skipping bytes a bucket never varies in), in
/// parallel across buckets. Stable.
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
                lsd(&mut bucket);
                order_ties(&mut bucket, keys);
                bucket.into_iter().map(|e| e.1).collect()
            })
            .collect();
        sorted.concat()
    }

    /// Records move twice, both times in bulk: an MSD pass scatters whole records into 256
    /// buckets by the key's first byte (into `scratch`, stably: each part of the input owns
    /// a slice of every bucket), then each bucket, a few MiB that stay in cache, is sorted
    /// as entries of (prefix, index) and gathered back into `data`. Random reads happen only
    /// inside a bucket.
    fn sort_records(&self, data: &mut [u8], scratch: &mut [u8], record: usize, key: usize) {
        let n = data.len() / record;
        if n < 2 {
            return;
        }
        // The key's first 10 bits (zero-padded).
        let bucket_of = |r: &[u8]| match key {
            0 => 0,
            1 => usize::from(r[0]) << 2,
            _ => usize::from(r[0]) << 2 | usize::from(r[1] >> 6),
        };
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
            .for_each(|(part, mut slots)| {
                let mut at = vec![0usize; BUCKETS];
                for r in part.chunks_exact(record) {
                    let b = bucket_of(r);
                    copy_record(&mut slots[b][at[b]..at[b] + record], r);
                    at[b] += record;
                }
            });
        // Each bucket of scratch, sorted, lands at the same place in data.
        let mut pairs = Vec::with_capacity(BUCKETS);
        let (mut src, mut dst) = (&scratch[..], &mut data[..]);
        for size in sizes {
            let (s, s_rest) = src.split_at(size);
            let (d, d_rest) = std::mem::take(&mut dst).split_at_mut(size);
            pairs.push((s, d));
            src = s_rest;
            dst = d_rest;
        }
        pairs.into_par_iter().for_each(|(src, dst)| {
            let keys = crate::FixedKeys {
                data: src,
                record,
                key,
            };
            let mut entries: Vec<(u64, u32)> = (0..src.len() / record)
                .map(|i| (keys.prefix(i), i as u32))
                .collect();
            lsd(&mut entries);
            order_ties(&mut entries, &keys);
            for (slot, e) in dst.chunks_exact_mut(record).zip(&entries) {
                let at = e.1 as usize * record;
                copy_record(slot, &src[at..at + record]);
            }
        });
    }
}

/// Stable LSD radix sort of `entries` by prefix, bytes 7 (least significant) to 0. A byte every
/// entry shares (the bucket's first byte, for one) costs no pass.
fn lsd(entries: &mut Vec<(u64, u32)>) {
    if entries.len() < 2 {
        return;
    }
    if entries.len() < 64 {
        entries.sort_by_key(|e| e.0);
        return;
    }
    let mut counts = [[0usize; 256]; 8];
    for e in entries.iter() {
        for (byte, count) in counts.iter_mut().enumerate() {
            count[((e.0 >> (56 - 8 * byte)) & 0xff) as usize] += 1;
        }
    }
    let mut from = std::mem::take(entries);
    let mut to = vec![(0u64, 0u32); from.len()];
    for byte in (0..8).rev() {
        let count = &counts[byte];
        if count.contains(&from.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut sum = 0;
        for (slot, &c) in next.iter_mut().zip(count.iter()) {
            *slot = sum;
            sum += c;
        }
        let shift = 56 - 8 * byte;
        for e in &from {
            let d = ((e.0 >> shift) & 0xff) as usize;
            to[next[d]] = *e;
            next[d] += 1;
        }
        std::mem::swap(&mut from, &mut to);
    }
    *entries = from;
}

/// Copies one record; TeraSort's 100 bytes as a fixed-size move the compiler inlines, rather
/// than a call to memcpy per record.
#[inline]
fn copy_record(dst: &mut [u8], src: &[u8]) {
    match (
        <&mut [u8; 100]>::try_from(&mut *dst),
        <&[u8; 100]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}
