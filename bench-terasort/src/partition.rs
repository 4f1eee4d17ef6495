//! The range partitioner: split keys from a sample of the input, so each reduce partition
//! gets about the same number of records whatever the key distribution.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::{Error, KEY, RECORD, Result, key_of};

/// Keys sampled per partition: enough that partitions come out within a few percent.
const SAMPLES_PER_PARTITION: usize = 1000;

/// Partition `p` holds the keys from split `p - 1` (inclusive) up to split `p`.
#[derive(Debug, Clone)]
pub struct RangePartitioner {
    splits: Vec<u128>,
    /// Per value of a key's first two bytes, the partitions such keys can be in (first and
    /// last): most prefixes name one, and the binary search is only for the others.
    table: Vec<(u32, u32)>,
}

/// Bits of a key the lookup table indexes.
const TABLE_BITS: u32 = 16;

impl RangePartitioner {
    /// `partitions` ranges from sampled keys (any order).
    pub fn from_sample(mut sample: Vec<u128>, partitions: u32) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::Invalid("at least one partition".into()));
        }
        sample.sort_unstable();
        let splits: Vec<u128> = (1..partitions as usize)
            .filter_map(|i| sample.get(i * sample.len() / partitions as usize).copied())
            .collect();
        let shift = 128 - TABLE_BITS;
        let table = (0..1u128 << TABLE_BITS)
            .map(|prefix| {
                let low = prefix << shift;
                let high = low | ((1u128 << shift) - 1);
                let first = splits.partition_point(|s| *s <= low) as u32;
                let last = splits.partition_point(|s| *s <= high) as u32;
                (first, last)
            })
            .collect();
        Ok(Self { splits, table })
    }

    /// Samples the keys of `parts` (their paths and sizes) at evenly spaced records, reading
    /// only those, and makes `partitions` ranges.
    pub fn sample(parts: &[(PathBuf, u64)], partitions: u32) -> Result<Self> {
        let records: u64 = parts.iter().map(|(_, size)| size / RECORD as u64).sum();
        let wanted = (partitions as usize * SAMPLES_PER_PARTITION).min(records as usize);
        let mut sample = Vec::with_capacity(wanted);
        for (path, size) in parts {
            let in_part = size / RECORD as u64;
            let take = (wanted as u64 * in_part).div_ceil(records.max(1));
            if take == 0 {
                continue;
            }
            let file = std::fs::File::open(path).map_err(|cause| Error::Io {
                path: path.clone(),
                cause,
            })?;
            let mut key = [0u8; KEY];
            for i in 0..take {
                let at = i * in_part / take * RECORD as u64;
                file.read_exact_at(&mut key, at)
                    .map_err(|cause| Error::Io {
                        path: path.clone(),
                        cause,
                    })?;
                sample.push(key_of_key(&key));
            }
        }
        Self::from_sample(sample, partitions)
    }

    /// Partitions.
    pub fn partitions(&self) -> u32 {
        self.splits.len() as u32 + 1
    }

    /// The partition of a record (its first 10 bytes are the key).
    pub fn partition(&self, record: &[u8]) -> u32 {
        // The first two bytes alone settle most keys.
        let prefix = usize::from(u16::from_be_bytes([record[0], record[1]]));
        let (first, last) = self.table[prefix];
        if first == last {
            return first;
        }
        let key = key_of(record);
        let candidates = &self.splits[first as usize..last as usize];
        first + candidates.partition_point(|s| *s <= key) as u32
    }
}

fn key_of_key(key: &[u8; KEY]) -> u128 {
    let mut record = [0u8; RECORD];
    record[..KEY].copy_from_slice(key);
    key_of(&record)
}

/// Splits the records of `data` by partition: returns them grouped, partition 0 first, and
/// where each partition's records start (one more entry than partitions, the last the end).
pub fn scatter(data: &[u8], partitioner: &RangePartitioner) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let starts = scatter_into(data, partitioner, &mut out, &mut Vec::new());
    out.truncate(data.len());
    (out, starts)
}

/// As [`scatter`], into `out` (grown when short; bytes past `data.len()` are left as they
/// are) with `owners` as room for each record's partition: a task reusing both writes into
/// memory it touched before.
pub fn scatter_into(
    data: &[u8],
    partitioner: &RangePartitioner,
    out: &mut Vec<u8>,
    owners: &mut Vec<u32>,
) -> Vec<usize> {
    let n = partitioner.partitions() as usize;
    owners.clear();
    owners.extend(data.chunks_exact(RECORD).map(|r| partitioner.partition(r)));
    let mut starts = vec![0usize; n + 1];
    for &p in owners.iter() {
        starts[p as usize + 1] += RECORD;
    }
    for i in 0..n {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    if out.len() < data.len() {
        out.resize(data.len(), 0);
    }
    for (record, &p) in data.chunks_exact(RECORD).zip(owners.iter()) {
        let at = next[p as usize];
        out[at..at + RECORD].copy_from_slice(record);
        next[p as usize] += RECORD;
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first: u8, second: u8) -> Vec<u8> {
        let mut r = vec![0u8; RECORD];
        r[0] = first;
        r[9] = second;
        r
    }

    #[test]
    fn ranges_cover_every_key_in_order() {
        let sample = (0..1000u128).map(|k| k << 80).collect();
        let p = RangePartitioner::from_sample(sample, 4).unwrap();
        assert_eq!(p.partitions(), 4);
        let mut last = 0;
        for first in 0..=255u8 {
            let part = p.partition(&record(first, 0));
            assert!(part >= last && part < 4);
            last = part;
        }
        assert_eq!(p.partition(&record(0, 0)), 0);
        // A sample smaller than the partitions still partitions.
        let tiny = RangePartitioner::from_sample(vec![5], 3).unwrap();
        assert!(tiny.partition(&record(255, 255)) < 3);
        // The table agrees with a plain search, on keys near and at the splits.
        let keys: Vec<u128> = (0..5000u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c) << 48)
            .collect();
        let p = RangePartitioner::from_sample(keys.clone(), 37).unwrap();
        for key in keys.iter().chain(&p.splits.clone()) {
            for k in [
                key.saturating_sub(1 << 48),
                *key,
                key.saturating_add(1 << 48),
            ] {
                let mut r = vec![0u8; RECORD];
                r[..KEY].copy_from_slice(&k.to_be_bytes()[..KEY]);
                assert_eq!(
                    p.partition(&r),
                    p.splits.partition_point(|s| *s <= key_of(&r)) as u32
                );
            }
        }
        assert!(RangePartitioner::from_sample(vec![], 0).is_err());
    }

    #[test]
    fn scatter_groups_records_by_partition() {
        let p = RangePartitioner::from_sample(vec![100u128 << 48, 200u128 << 48], 3).unwrap();
        let mut data = Vec::new();
        for first in [250u8, 10, 150, 20, 255] {
            data.extend(record(0, first));
        }
        let (out, starts) = scatter(&data, &p);
        assert_eq!(out.len(), data.len());
        assert_eq!(starts.len(), 4);
        for part in 0..3 {
            for r in out[starts[part]..starts[part + 1]].chunks_exact(RECORD) {
                assert_eq!(p.partition(r), part as u32);
            }
        }
    }
}
