//! Input byte for byte as the sort benchmark's `gensort` writes it in its default (binary)
//! mode.
//!
//! gensort draws one 128-bit number per record from a linear congruential generator,
//! `x' = A * x + 1 (mod 2^128)`, starting from 0: record `n` uses the generator's `n + 1`-th
//! number, reached for any `n` in 128 steps by composing the generator's powers of two (so
//! parts are made independently, in parallel). A record is:
//!
//! | bytes | what |
//! |---|---|
//! | 0-9 | the key: the number's 10 most significant bytes |
//! | 10-11 | `00 11` |
//! | 12-43 | the record number, 32 upper-case hex digits |
//! | 44-47 | `88 99 AA BB` |
//! | 48-95 | the number's 12 least significant hex digits, each written 4 times |
//! | 96-99 | `CC DD EE FF` |
//!
//! valsort's checksum is the sum of every record's crc32 (zlib's), 128 bits wide.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::{Error, RECORD, Result, part_name};

/// The generator's multiplier.
const A: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;
/// Its increment.
const C: u128 = 1;
/// Records per part when the caller does not say: 128 MiB parts.
const PART_RECORDS: u64 = (128 << 20) / RECORD as u64;
/// Bytes written per `progress` call.
const REPORT: usize = RECORD * 10_000;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The generator's state after `n` steps from 0.
pub fn skip_ahead(n: u128) -> u128 {
    // (a, c): the map x -> a x + c applied 2^i times, squared bit by bit.
    let (mut a, mut c) = (A, C);
    let mut x = 0u128;
    let mut n = n;
    while n != 0 {
        if n & 1 == 1 {
            x = a.wrapping_mul(x).wrapping_add(c);
        }
        c = a.wrapping_mul(c).wrapping_add(c);
        a = a.wrapping_mul(a);
        n >>= 1;
    }
    x
}

/// The generator's next number.
fn next(x: u128) -> u128 {
    A.wrapping_mul(x).wrapping_add(C)
}

/// Writes record number `n`, whose random number is `rand`, into `out`.
pub fn record(rand: u128, n: u128, out: &mut [u8; RECORD]) {
    let bytes = rand.to_be_bytes();
    out[..10].copy_from_slice(&bytes[..10]);
    out[10] = 0x00;
    out[11] = 0x11;
    for (i, slot) in out[12..44].iter_mut().enumerate() {
        *slot = HEX[((n >> (124 - 4 * i)) & 0xF) as usize];
    }
    out[44..48].copy_from_slice(&[0x88, 0x99, 0xAA, 0xBB]);
    for i in 0..12 {
        let digit = HEX[((rand >> (44 - 4 * i)) & 0xF) as usize];
        out[48 + 4 * i..52 + 4 * i].fill(digit);
    }
    out[96..].copy_from_slice(&[0xCC, 0xDD, 0xEE, 0xFF]);
}

/// Records `first..first + count`, appended to `out`; returns the sum of their crc32s.
pub fn records(first: u64, count: u64, out: &mut Vec<u8>) -> u128 {
    let mut rand = skip_ahead(u128::from(first));
    let mut sum = 0u128;
    let mut buf = [0u8; RECORD];
    for n in first..first + count {
        rand = next(rand);
        record(rand, u128::from(n), &mut buf);
        sum += u128::from(crc32fast::hash(&buf));
        out.extend_from_slice(&buf);
    }
    sum
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Records.
    pub records: u64,
    /// Parts.
    pub parts: usize,
    /// valsort's checksum of all records, in hex.
    pub checksum: String,
}

/// Creates directory `dir` (it must not exist) and writes records `first..first + count`
/// into `parts` parts (default: 128 MiB each) of as equal sizes as records allow, in
/// parallel. `progress` hears of the bytes written as they are.
pub fn generate(
    dir: &Path,
    first: u64,
    count: u64,
    parts: Option<usize>,
    progress: impl Fn(u64) + Sync,
) -> Result<Generated> {
    if count == 0 {
        return Err(Error::Invalid("no records to generate".into()));
    }
    if first.checked_add(count).is_none() {
        return Err(Error::Invalid("records past 2^64".into()));
    }
    let parts = match parts {
        Some(0) => return Err(Error::Invalid("--parts must be at least 1".into())),
        Some(p) => (p as u64).min(count),
        None => count.div_ceil(PART_RECORDS),
    };
    crate::create_output(dir)?;
    let sums: Vec<u128> = (0..parts)
        .into_par_iter()
        .map(|i| {
            let from = first + count * i / parts;
            let to = first + count * (i + 1) / parts;
            let path = dir.join(part_name(i as usize));
            write_part(&path, from, to - from, &progress).map_err(|cause| Error::Io { path, cause })
        })
        .collect::<Result<_>>()?;
    let checksum = sums.iter().fold(0u128, |a, s| a.wrapping_add(*s));
    Ok(Generated {
        records: count,
        parts: parts as usize,
        checksum: format!("{checksum:x}"),
    })
}

fn write_part(
    path: &Path,
    first: u64,
    count: u64,
    progress: &(impl Fn(u64) + Sync),
) -> std::io::Result<u128> {
    let mut file = std::fs::File::create(path)?;
    let per_batch = (REPORT / RECORD) as u64;
    let mut buf = Vec::with_capacity(REPORT);
    let mut sum = 0u128;
    let mut at = first;
    while at < first + count {
        let n = per_batch.min(first + count - at);
        buf.clear();
        sum += records(at, n, &mut buf);
        file.write_all(&buf)?;
        progress(buf.len() as u64);
        at += n;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_ahead_is_stepping() {
        let mut x = 0u128;
        for n in 0..300u128 {
            assert_eq!(skip_ahead(n), x, "{n}");
            x = next(x);
        }
    }

    #[test]
    fn a_record_has_gensorts_layout() {
        let mut out = Vec::new();
        records(0x1234, 1, &mut out);
        assert_eq!(out.len(), RECORD);
        assert_eq!(&out[10..12], &[0x00, 0x11]);
        assert_eq!(&out[12..44], b"00000000000000000000000000001234");
        assert_eq!(&out[44..48], &[0x88, 0x99, 0xAA, 0xBB]);
        assert_eq!(&out[96..], &[0xCC, 0xDD, 0xEE, 0xFF]);
        for group in out[48..96].chunks(4) {
            assert!(group.iter().all(|b| *b == group[0] && HEX.contains(b)));
        }
        // Consecutive runs are one stream.
        let mut whole = Vec::new();
        let sum = records(10, 20, &mut whole);
        let mut pieces = Vec::new();
        let a = records(10, 7, &mut pieces);
        let b = records(17, 13, &mut pieces);
        assert_eq!(whole, pieces);
        assert_eq!(sum, a + b);
    }
}
