//! The range partitioner's splits, from a sample of the input parts' keys.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub use crail_sdk::crail_sorters::RangePartitioner;

use crate::{Error, KEY, RECORD, Result};

/// Keys sampled per partition: enough that partitions come out within a few percent.
const SAMPLES_PER_PARTITION: usize = 1000;

/// Samples the keys of `parts` (their paths and sizes) at evenly spaced records, reading only
/// those, and makes `partitions` ranges.
pub fn sample(parts: &[(PathBuf, u64)], partitions: u32) -> Result<RangePartitioner> {
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
        for i in 0..take {
            let mut key = vec![0u8; KEY];
            let at = i * in_part / take * RECORD as u64;
            file.read_exact_at(&mut key, at)
                .map_err(|cause| Error::Io {
                    path: path.clone(),
                    cause,
                })?;
            sample.push(key);
        }
    }
    RangePartitioner::from_sample(sample, partitions)
        .map_err(|e| Error::Invalid(format!("cannot partition: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_ranges_are_even() {
        let dir = std::env::temp_dir().join(format!("terasort-sample-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("part-0");
        let mut data = Vec::new();
        crate::gensort::records(0, 10_000, &mut data);
        std::fs::write(&path, &data).unwrap();
        let p = sample(&[(path, data.len() as u64)], 4).unwrap();
        assert_eq!(p.partitions(), 4);
        let mut counts = [0usize; 4];
        for r in data.chunks_exact(RECORD) {
            counts[p.partition(&r[..KEY]) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (2000..3000).contains(c)),
            "{counts:?}"
        );
        assert!(sample(&[], 0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
