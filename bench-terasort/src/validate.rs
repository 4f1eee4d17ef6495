//! What `valsort` checks, over a directory of parts: every record in key order within its
//! part and across part boundaries (parts in name order), the record count, duplicate keys,
//! and the checksum of all records (the sum of each record's crc32), which a sort must keep.

use std::io::Read;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::{Error, KEY, RECORD, Result, parts};

/// Bytes read from a part at once.
const READ: usize = RECORD * 80 * 1024;

/// What validating a directory found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Records.
    pub records: u64,
    /// The sum of every record's crc32 (128 bits, as valsort keeps it), in hex.
    pub checksum: String,
    /// Records whose key equals the one before.
    pub duplicates: u64,
    /// Records whose key is smaller than the one before.
    pub unordered: u64,
    /// The first of them: its part's name and its index in the part.
    pub first_unordered: Option<(String, u64)>,
}

impl Summary {
    /// Whether every record is in order.
    pub fn sorted(&self) -> bool {
        self.unordered == 0
    }
}

/// One part's findings.
#[derive(Debug, Default, Clone)]
struct Part {
    records: u64,
    checksum: u128,
    duplicates: u64,
    unordered: u64,
    first_unordered: Option<u64>,
    first: Option<[u8; KEY]>,
    last: Option<[u8; KEY]>,
}

/// Checks the parts of `dir` (files named `part-*`, in name order), reading them in parallel.
pub fn validate(dir: &Path) -> Result<Summary> {
    validate_with(dir, |_| {})
}

/// As [`validate`], calling `progress` with the bytes of each piece read.
pub fn validate_with(dir: &Path, progress: impl Fn(u64) + Sync) -> Result<Summary> {
    let parts = parts(dir)?;
    let found: Vec<Part> = parts
        .par_iter()
        .map(|(path, _)| check_part(path, &progress))
        .collect::<Result<_>>()?;
    let mut summary = Summary {
        records: 0,
        checksum: String::new(),
        duplicates: 0,
        unordered: 0,
        first_unordered: None,
    };
    let mut checksum = 0u128;
    let mut last: Option<[u8; KEY]> = None;
    for ((path, _), part) in parts.iter().zip(&found) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The boundary with the part before.
        if let (Some(before), Some(first)) = (last, part.first) {
            if first < before {
                summary.unordered += 1;
                summary
                    .first_unordered
                    .get_or_insert_with(|| (name.clone(), 0));
            } else if first == before {
                summary.duplicates += 1;
            }
        }
        if let Some(at) = part.first_unordered {
            summary.first_unordered.get_or_insert((name, at));
        }
        summary.records += part.records;
        summary.duplicates += part.duplicates;
        summary.unordered += part.unordered;
        checksum = checksum.wrapping_add(part.checksum);
        last = part.last.or(last);
    }
    summary.checksum = format!("{checksum:x}");
    Ok(summary)
}

fn check_part(path: &Path, progress: &(impl Fn(u64) + Sync)) -> Result<Part> {
    let io = |e: std::io::Error| Error::Io {
        path: path.to_owned(),
        cause: e,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; READ];
    let mut part = Part::default();
    let mut prev: Option<[u8; KEY]> = None;
    let mut filled = 0usize;
    loop {
        let n = file.read(&mut buf[filled..]).map_err(io)?;
        filled += n;
        if n != 0 && filled < buf.len() {
            continue;
        }
        let whole = filled - filled % RECORD;
        for record in buf[..whole].chunks_exact(RECORD) {
            let key: [u8; KEY] = record[..KEY].try_into().unwrap_or([0; KEY]);
            if let Some(p) = prev {
                if key < p {
                    part.unordered += 1;
                    part.first_unordered.get_or_insert(part.records);
                } else if key == p {
                    part.duplicates += 1;
                }
            }
            part.first.get_or_insert(key);
            prev = Some(key);
            part.checksum += u128::from(crc32fast::hash(record));
            part.records += 1;
        }
        progress(whole as u64);
        if n == 0 {
            if filled != whole {
                return Err(Error::Truncated {
                    path: path.to_owned(),
                    size: part.records * RECORD as u64 + (filled - whole) as u64,
                });
            }
            break;
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    part.last = prev;
    Ok(part)
}
