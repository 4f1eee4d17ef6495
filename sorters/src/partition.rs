//! Range partitioning: split keys taken from a sample of the input, so each partition of a
//! distributed sort gets about the same number of records whatever the key distribution, and
//! partition `p`'s keys all come before partition `p + 1`'s.

use crail_serializers::{Error, Fixed, Result};

/// Partition `p` holds the keys from split `p - 1` (inclusive) up to split `p` (exclusive).
/// Keys compare as byte strings, as the sorters order them.
#[derive(Debug, Clone)]
pub struct RangePartitioner {
    splits: Vec<Vec<u8>>,
    /// Per value of a key's first two bytes, the partitions such keys can be in (first and
    /// last): most prefixes name one, and the binary search is only for the others.
    table: Vec<(u32, u32)>,
}

/// Bytes of a key the lookup table indexes.
const TABLE_BYTES: usize = 2;

impl RangePartitioner {
    /// `partitions` ranges from sampled keys (any order; an empty sample makes one range
    /// hold everything).
    pub fn from_sample(mut sample: Vec<Vec<u8>>, partitions: u32) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::BadSplits {
                reason: "at least one partition is needed".into(),
            });
        }
        sample.sort_unstable();
        let splits = (1..partitions as usize)
            .filter_map(|i| sample.get(i * sample.len() / partitions as usize).cloned())
            .collect();
        Self::from_splits(splits)
    }

    /// Ranges between `splits`, which must be in order (equal splits make empty ranges):
    /// one more partition than splits.
    pub fn from_splits(splits: Vec<Vec<u8>>) -> Result<Self> {
        if let Some(i) = splits.windows(2).position(|w| w[0] > w[1]) {
            return Err(Error::BadSplits {
                reason: format!("split {} comes after split {}", i, i + 1),
            });
        }
        if splits.len() >= u32::MAX as usize {
            return Err(Error::BadSplits {
                reason: format!("{} splits is too many", splits.len()),
            });
        }
        let count = |f: &dyn Fn(&[u8]) -> bool| splits.partition_point(|s| f(s)) as u32;
        let table = (0..1usize << (8 * TABLE_BYTES))
            .map(|prefix| {
                let low = (prefix as u16).to_be_bytes();
                // Keys starting with `low` are at least `low` and below the next prefix.
                let first = count(&|s| s <= &low[..]);
                let last = match u16::try_from(prefix + 1) {
                    Ok(next) => count(&|s| s < &next.to_be_bytes()[..]),
                    Err(_) => splits.len() as u32,
                };
                (first, last)
            })
            .collect();
        Ok(Self { splits, table })
    }

    /// Partitions.
    pub fn partitions(&self) -> u32 {
        self.splits.len() as u32 + 1
    }

    /// The split keys, in order.
    pub fn splits(&self) -> &[Vec<u8>] {
        &self.splits
    }

    /// The partition of `key`.
    pub fn partition(&self, key: &[u8]) -> u32 {
        let (first, last) = match key {
            [a, b, ..] => self.table[usize::from(u16::from_be_bytes([*a, *b]))],
            _ => (0, self.splits.len() as u32),
        };
        if first == last {
            return first;
        }
        let candidates = &self.splits[first as usize..last as usize];
        first + candidates.partition_point(|s| s.as_slice() <= key) as u32
    }

    /// Groups the fixed-length records of `data` by partition into `out` (grown when short;
    /// bytes past `data.len()` are left as they are), keeping their order within a partition,
    /// with `owners` as room for each record's partition. Returns where each partition's
    /// records start in `out`, one more entry than partitions (the last is `data.len()`).
    /// A task reusing `out` and `owners` writes into memory it has touched before.
    pub fn scatter_into(
        &self,
        data: &[u8],
        format: &Fixed,
        out: &mut Vec<u8>,
        owners: &mut Vec<u32>,
    ) -> Result<Vec<usize>> {
        if out.len() < data.len() {
            out.resize(data.len(), 0);
        }
        self.scatter_to(data, format, out, owners)
    }

    /// As [`RangePartitioner::scatter_into`], into memory the caller manages (aligned for
    /// `O_DIRECT`, say): `out` must hold `data.len()` bytes, else [`Error::BufferSize`].
    pub fn scatter_to(
        &self,
        data: &[u8],
        format: &Fixed,
        out: &mut [u8],
        owners: &mut Vec<u32>,
    ) -> Result<Vec<usize>> {
        let (record, key) = (format.record_len(), format.key_len());
        whole(data.len(), record)?;
        fits(out, data.len())?;
        Ok(self.scatter(
            data.len() / record,
            record,
            |i| &data[i * record..i * record + key],
            |i, to| to.copy_from_slice(&data[i * record..(i + 1) * record]),
            out,
            owners,
        ))
    }

    /// As [`RangePartitioner::scatter_into`], the records given as a column of keys and a
    /// column of values (record `i` is key `i` then value `i`): columnar data is scattered into
    /// records in one pass.
    pub fn scatter_columns_into(
        &self,
        keys: &[u8],
        values: &[u8],
        format: &Fixed,
        out: &mut Vec<u8>,
        owners: &mut Vec<u32>,
    ) -> Result<Vec<usize>> {
        let (k, v) = (format.key_len(), format.record_len() - format.key_len());
        whole(keys.len(), k)?;
        whole(values.len(), v)?;
        // `whole` has refused bytes for an empty key or value.
        let n = match (keys.len().checked_div(k), values.len().checked_div(v)) {
            (Some(keys), Some(values)) if keys != values => {
                return Err(Error::ColumnMismatch {
                    keys: keys as u64,
                    values: values as u64,
                });
            }
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => 0,
        };
        if out.len() < n * (k + v) {
            out.resize(n * (k + v), 0);
        }
        Ok(self.scatter(
            n,
            k + v,
            |i| &keys[i * k..(i + 1) * k],
            |i, to| {
                to[..k].copy_from_slice(&keys[i * k..(i + 1) * k]);
                to[k..].copy_from_slice(&values[i * v..(i + 1) * v]);
            },
            out,
            owners,
        ))
    }

    fn scatter<'a>(
        &self,
        records: usize,
        record: usize,
        key: impl Fn(usize) -> &'a [u8],
        fill: impl Fn(usize, &mut [u8]),
        out: &mut [u8],
        owners: &mut Vec<u32>,
    ) -> Vec<usize> {
        let n = self.partitions() as usize;
        owners.clear();
        owners.extend((0..records).map(|i| self.partition(key(i))));
        let mut starts = vec![0usize; n + 1];
        for &p in owners.iter() {
            starts[p as usize + 1] += record;
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let mut next = starts.clone();
        for (i, &p) in owners.iter().enumerate() {
            let at = next[p as usize];
            fill(i, &mut out[at..at + record]);
            next[p as usize] += record;
        }
        starts
    }
}

/// Checks that `out` can hold `need` bytes of records.
fn fits(out: &[u8], need: usize) -> Result<()> {
    if out.len() < need {
        return Err(Error::BufferSize {
            what: "an output",
            len: out.len(),
            need,
        });
    }
    Ok(())
}

/// Checks that `len` bytes are whole records of `record` bytes.
fn whole(len: usize, record: usize) -> Result<()> {
    let rest = len.checked_rem(record).unwrap_or(len);
    if rest != 0 {
        return Err(Error::Truncated {
            offset: (len - rest) as u64,
            have: rest as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plain(splits: &[Vec<u8>], key: &[u8]) -> u32 {
        splits.partition_point(|s| s.as_slice() <= key) as u32
    }

    #[test]
    fn ranges_cover_every_key_in_order() {
        let sample = (0..1000u32)
            .map(|k| (k << 22).to_be_bytes().to_vec())
            .collect();
        let p = RangePartitioner::from_sample(sample, 4).unwrap();
        assert_eq!(p.partitions(), 4);
        let mut last = 0;
        for first in 0..=255u8 {
            let part = p.partition(&[first, 0, 0]);
            assert!(part >= last && part < 4);
            last = part;
        }
        assert_eq!(p.partition(&[0; 10]), 0);
        assert_eq!(p.partition(&[0xff; 10]), 3);
        // Short keys, the empty key, a sample smaller than the partitions.
        assert_eq!(p.partition(&[]), 0);
        assert_eq!(p.partition(&[0xff]), 3);
        let tiny = RangePartitioner::from_sample(vec![vec![5]], 3).unwrap();
        assert!(tiny.partition(&[255, 255]) < 3);
        let none = RangePartitioner::from_sample(vec![], 3).unwrap();
        assert_eq!(none.partitions(), 1);
        assert!(RangePartitioner::from_sample(vec![], 0).is_err());
        let err = RangePartitioner::from_splits(vec![vec![2], vec![1]]).unwrap_err();
        assert!(
            err.to_string().contains("split 0 comes after split 1"),
            "{err}"
        );
    }

    #[test]
    fn scatter_groups_records_by_partition_in_order() {
        let format = Fixed::new(2, 2).unwrap();
        let p = RangePartitioner::from_splits(vec![vec![100], vec![200]]).unwrap();
        let data: Vec<u8> = [250u8, 10, 150, 20, 255, 10]
            .iter()
            .enumerate()
            .flat_map(|(i, k)| [*k, 0, i as u8, 0])
            .collect();
        let mut out = Vec::new();
        let starts = p
            .scatter_into(&data, &format, &mut out, &mut Vec::new())
            .unwrap();
        assert_eq!(starts, vec![0, 12, 16, 24]);
        let order: Vec<u8> = out.chunks_exact(4).map(|r| r[2]).collect();
        assert_eq!(order, vec![1, 3, 5, 2, 0, 4]);
        let err = p
            .scatter_into(&data[..7], &format, &mut out, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(err, Error::Truncated { offset: 4, have: 3 }),
            "{err}"
        );
        // Into a caller's slice: the same grouping, and a short slice refused.
        let mut slice = vec![0u8; data.len() + 5];
        let starts = p
            .scatter_to(&data, &format, &mut slice, &mut Vec::new())
            .unwrap();
        assert_eq!(starts, vec![0, 12, 16, 24]);
        assert_eq!(&slice[..data.len()], &out[..data.len()]);
        let err = p
            .scatter_to(&data, &format, &mut slice[..20], &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BufferSize {
                    len: 20,
                    need: 24,
                    ..
                }
            ),
            "{err}"
        );
    }

    proptest! {
        // Each case builds a 64Ki-entry table.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The table agrees with a plain search, on random keys and at and around the splits.
        #[test]
        fn agrees_with_a_plain_search(
            sample in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), 0..60),
            keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), 0..60),
            partitions in 1u32..20,
        ) {
            let p = RangePartitioner::from_sample(sample, partitions).unwrap();
            let splits = p.splits().to_vec();
            for key in keys.iter().chain(&splits) {
                prop_assert_eq!(p.partition(key), plain(&splits, key));
                let mut longer = key.clone();
                longer.push(0);
                prop_assert_eq!(p.partition(&longer), plain(&splits, &longer));
            }
        }
    }
}
