//! Record formats that engines pick by name, after Crail Spark-IO's serializer plugins.
//!
//! A [`Format`] turns key-value records into bytes and back: [`Fixed`] records of a set key and
//! value length with no per-record metadata (TeraSort: `fixed:10:90`), and [`KeyValue`]
//! records with varint lengths (`kv`). Either can be wrapped in [frames](frame) of whole
//! records, each with a crc32c and optionally compressed (`kv+lz4`, `kv+zstd`, `fixed:10:90+crc`).
//! [`Serializer::by_name`] maps those names to implementations, so an engine selects one
//! from a configuration string.
//!
//! Encoding appends to a caller's buffer ([`Encoder`]); decoding hands out records that borrow
//! the input ([`Decoder`]): no allocation per record either way. [`stream`] moves encoded
//! bytes through the store's file streams.
//!
//! Every decoder treats its input as untrusted: a truncated record, a length beyond the limits
//! or a corrupted frame is a typed [`Error`], never a panic or a read out of bounds.

mod codec;
mod error;
pub mod fixed;
pub mod frame;
pub mod kv;
pub mod stream;

pub use codec::{Decoder, Encoder, FRAME_SIZE, Framing, Serializer};
pub use error::{Error, Result};
pub use fixed::Fixed;
pub use kv::KeyValue;

/// One record: slices of the encoded input (or of the caller's data when encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

/// Largest key a format accepts (and a decoder believes).
pub const MAX_KEY: usize = 16 << 20;
/// Largest value a format accepts (and a decoder believes).
pub const MAX_VALUE: usize = 64 << 20;

/// A record format: how one record is laid out in bytes.
pub trait Format: Send + Sync + std::fmt::Debug {
    /// Its registry name (`fixed:10:90`, `kv`).
    fn name(&self) -> String;

    /// Appends one record to `out`.
    fn encode(&self, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<()>;

    /// The record at the start of `input` and its encoded length; `Ok(None)` when `input`
    /// holds only the beginning of a record (or nothing). Offsets in errors are relative to
    /// `input`.
    fn decode<'a>(&self, input: &'a [u8]) -> Result<Option<(Record<'a>, usize)>>;

    /// Key and value lengths, for fixed-length formats.
    fn fixed_lens(&self) -> Option<(usize, usize)> {
        None
    }
}
