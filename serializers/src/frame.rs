//! Frames: whole records in a block with a checksum, optionally lz4- or zstd-compressed.
//!
//! ```text
//! 0..2    magic C5 F1
//! 2       flags: bit 0 set = the payload is an lz4 block, bit 1 = a zstd frame (not both);
//!         other bits 0
//! 3       0
//! 4..8    raw length: bytes of records in the frame (u32, little endian)
//! 8..12   stored length: payload bytes that follow the header
//! 12..16  crc32c of bytes 0..12 then the payload
//! ```
//!
//! A frame holds whole records only, so a reader can decode it alone; a payload compression
//! does not shrink is stored raw. The decoder checks the header, the lengths against the
//! limits and the checksum before it decompresses anything.

use crate::{Error, MAX_KEY, MAX_VALUE, Result};

/// Header bytes.
pub const HEADER: usize = 16;
const MAGIC: [u8; 2] = [0xc5, 0xf1];
const LZ4: u8 = 1;
const ZSTD: u8 = 2;
/// zstd's level: its default, about lz4's speed at a better ratio on record data.
const ZSTD_LEVEL: i32 = 3;

/// How a frame's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as it is.
    None,
    /// An lz4 block.
    Lz4,
    /// A zstd frame.
    Zstd,
}
/// Largest raw frame: one record of the largest key and value, with its lengths.
pub const MAX_RAW: usize = MAX_KEY + MAX_VALUE + 32;

/// Appends a frame of the records in `raw` to `out`, compressed as `compression` says where
/// that shrinks it.
pub fn write(raw: &[u8], compression: Compression, out: &mut Vec<u8>) -> Result<()> {
    if raw.len() > MAX_RAW {
        return Err(Error::TooLong {
            offset: 0,
            what: "frame",
            len: raw.len() as u64,
            limit: MAX_RAW as u64,
        });
    }
    let start = out.len();
    out.resize(start + HEADER, 0);
    let mut flags = 0;
    let (flag, bound) = match compression {
        Compression::None => (0, 0),
        Compression::Lz4 => (LZ4, lz4_flex::block::get_maximum_output_size(raw.len())),
        Compression::Zstd => (ZSTD, zstd::zstd_safe::compress_bound(raw.len())),
    };
    if flag != 0 {
        out.resize(start + HEADER + bound, 0);
        let into = &mut out[start + HEADER..];
        let compressed = match compression {
            Compression::Lz4 => lz4_flex::block::compress_into(raw, into).ok(),
            _ => zstd::bulk::compress_to_buffer(raw, into, ZSTD_LEVEL).ok(),
        };
        match compressed {
            Some(n) if n < raw.len() => {
                out.truncate(start + HEADER + n);
                flags = flag;
            }
            _ => out.truncate(start + HEADER),
        }
    }
    if flags == 0 {
        out.extend_from_slice(raw);
    }
    let stored = out.len() - start - HEADER;
    let header = &mut out[start..start + HEADER];
    header[..2].copy_from_slice(&MAGIC);
    header[2] = flags;
    header[3] = 0;
    header[4..8].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&(stored as u32).to_le_bytes());
    let crc = checksum(&out[start..start + 12], &out[start + HEADER..]);
    out[start + 12..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// crc32c of the header's first 12 bytes followed by the payload.
fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(header);
    digest.update(payload);
    // The algorithm is 32 bits wide; the crate returns it in a u64.
    digest.finalize() as u32
}

/// The length of the frame at the start of `input` (header and payload) once `input` holds
/// all of it; `Ok(None)` before. Checks the header.
pub fn frame_len(input: &[u8]) -> Result<Option<usize>> {
    let Some(header) = input.get(..HEADER) else {
        return Ok(None);
    };
    let (_, stored) = parse_header(header)?;
    let len = HEADER + stored;
    Ok((input.len() >= len).then_some(len))
}

fn parse_header(header: &[u8]) -> Result<(usize, usize)> {
    let corrupt = |reason: String| Error::CorruptFrame { offset: 0, reason };
    if header[..2] != MAGIC {
        return Err(corrupt(format!(
            "bad magic {:02x}{:02x}",
            header[0], header[1]
        )));
    }
    let flags = header[2];
    if flags & !(LZ4 | ZSTD) != 0 || flags == LZ4 | ZSTD || header[3] != 0 {
        return Err(corrupt(format!("unknown flags {flags:#04x}")));
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]) as usize
    };
    let (raw, stored) = (word(4), word(8));
    if raw > MAX_RAW {
        return Err(Error::TooLong {
            offset: 0,
            what: "frame",
            len: raw as u64,
            limit: MAX_RAW as u64,
        });
    }
    let max_stored = match flags {
        LZ4 => lz4_flex::block::get_maximum_output_size(raw),
        ZSTD => zstd::zstd_safe::compress_bound(raw),
        _ => raw,
    };
    if stored > max_stored || (flags == 0 && stored != raw) {
        return Err(corrupt(format!(
            "stored length {stored} does not fit raw length {raw}"
        )));
    }
    Ok((raw, stored))
}

/// Checks the whole frame in `frame` (as [`frame_len`] measured it) and puts its records in
/// `out` (replacing what was there).
pub fn read(frame: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let header = frame.get(..HEADER).ok_or(Error::Truncated {
        offset: 0,
        have: frame.len() as u64,
    })?;
    let (raw, stored) = parse_header(header)?;
    let payload = frame.get(HEADER..HEADER + stored).ok_or(Error::Truncated {
        offset: 0,
        have: frame.len() as u64,
    })?;
    let want = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if checksum(&header[..12], payload) != want {
        return Err(Error::CorruptFrame {
            offset: 0,
            reason: "checksum mismatch".into(),
        });
    }
    out.clear();
    let flags = header[2];
    if flags == 0 {
        out.extend_from_slice(payload);
        return Ok(());
    }
    out.resize(raw, 0);
    let decompressed = if flags == LZ4 {
        lz4_flex::block::decompress_into(payload, out).map_err(|e| format!("lz4: {e}"))
    } else {
        zstd::bulk::decompress_to_buffer(payload, out.as_mut_slice())
            .map_err(|e| format!("zstd: {e}"))
    };
    match decompressed {
        Ok(n) if n == raw => Ok(()),
        Ok(n) => Err(Error::CorruptFrame {
            offset: 0,
            reason: format!("decompressed to {n} bytes, not {raw}"),
        }),
        Err(reason) => Err(Error::CorruptFrame { offset: 0, reason }),
    }
}
