//! Input byte for byte as the sort benchmark's `gensort` (version 1.5) writes it in its
//! default (binary) mode.
//!
//! gensort draws 128-bit numbers from a linear congruential generator,
//! `x' = A * x + C (mod 2^128)`, starting from 0; the generator's `k`-th number is reached for
//! any `k` in 128 steps by composing its powers of two (so parts are made independently, in
//! parallel). Record `n` is made of the ten numbers `n + 1` to `n + 10`: its bytes `10 i` to
//! `10 i + 9` are the 10 most significant bytes of number `n + 1 + i` xor'ed with a constant of
//! part `i` (none for the key, part 0). So the first record's key is gensort's famous
//! `JimGrayRIP`.
//!
//! valsort's checksum is the sum of every record's crc32 (zlib's), 128 bits wide, printed in
//! lower-case hex.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::{Error, RECORD, Result, part_name};

/// The generator's multiplier.
const A: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;
/// Its increment.
const C: u128 = 0x4A69_6D47_7261_7952_4950_2020_2020_2001;
/// What each 10-byte part of a record is xor'ed with (only the top 80 bits count).
const XOR: [u128; 10] = [
    0,
    0xF0E8_E4E2_E1D8_D4D2_D1CC_0000_0000_0000,
    0xCAC9_C6C5_C3B8_B4B2_B1AC_0000_0000_0000,
    0xAAA9_A6A5_A39C_9A99_9695_0000_0000_0000,
    0x938E_8D8B_8778_7472_716C_0000_0000_0000,
    0x6A69_6665_635C_5A59_5655_0000_0000_0000,
    0x534E_4D4B_473C_3A39_3635_0000_0000_0000,
    0x332E_2D2B_271E_1D1B_170F_0000_0000_0000,
    0xC8C4_C2C1_9894_9291_8CE0_0000_0000_0000,
    0x170F_332E_2D2B_271E_1D1B_0000_0000_0000,
];
/// Records per part when the caller does not say: 128 MiB parts.
const PART_RECORDS: u64 = (128 << 20) / RECORD as u64;
/// Bytes written per `progress` call.
const REPORT: usize = RECORD * 10_000;

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

/// Records `first..first + count`, appended to `out`; returns the sum of their crc32s.
pub fn records(first: u64, count: u64, out: &mut Vec<u8>) -> u128 {
    // The ten numbers of the next record, oldest first, in a ring.
    let mut ring = [0u128; 10];
    ring[0] = skip_ahead(u128::from(first) + 1);
    for i in 1..10 {
        ring[i] = next(ring[i - 1]);
    }
    let mut head = 0;
    let mut sum = 0u128;
    let mut buf = [0u8; RECORD];
    for _ in 0..count {
        for (part, xor) in XOR.iter().enumerate() {
            let x = ring[(head + part) % 10] ^ xor;
            buf[10 * part..10 * part + 10].copy_from_slice(&x.to_be_bytes()[..10]);
        }
        sum += u128::from(crc32fast::hash(&buf));
        out.extend_from_slice(&buf);
        // The oldest number's slot takes the one after the newest.
        let newest = ring[(head + 9) % 10];
        ring[head] = next(newest);
        head = (head + 1) % 10;
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
    fn skipping_ahead_is_stepping_and_matches_gensorts_tables() {
        let mut x = 0u128;
        for n in 0..300u128 {
            assert_eq!(skip_ahead(n), x, "{n}");
            x = next(x);
        }
        // rand16.c's table of the generator's powers: f(0) = c, f^2(0) and f^4(0).
        assert_eq!(skip_ahead(1), C);
        assert_eq!(skip_ahead(2), 0x95e0_e482_62b3_edfe_0447_9485_c755_b646);
        assert_eq!(skip_ahead(4), 0x882a_02c3_1536_2b60_765f_1000_68b3_3a1c);
        assert_eq!(A.wrapping_mul(A), 0x17bc_e35b_df69_743c_529e_d9eb_20e0_ae99);
    }

    #[test]
    fn records_are_gensorts() {
        let mut out = Vec::new();
        let sum = records(0, 3, &mut out);
        // The first 32 bytes of `gensort 3 f` (gensort 1.5, built from its source here).
        assert_eq!(&out[..10], b"JimGrayRIP");
        assert_eq!(
            out[..32],
            [
                0x4a, 0x69, 0x6d, 0x47, 0x72, 0x61, 0x79, 0x52, 0x49, 0x50, 0x65, 0x08, 0x00, 0x60,
                0x83, 0x6b, 0x39, 0x2c, 0xd5, 0x8b, 0x8f, 0x5e, 0x55, 0x96, 0x18, 0x55, 0xe7, 0x9b,
                0x87, 0xf0, 0x22, 0x83
            ]
        );
        assert!(sum > 0);
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
