//! The one error type of the crate: each a single line naming where in the stream it happened.

/// What went wrong encoding or decoding records.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ended inside a record or frame.
    #[error(
        "truncated input: the record or frame at offset {offset} is incomplete ({have} bytes of it present)"
    )]
    Truncated {
        /// Where the incomplete record or frame starts.
        offset: u64,
        /// Bytes of it that were there.
        have: u64,
    },
    /// A length beyond the format's limits.
    #[error("{what} of {len} bytes at offset {offset} exceeds the limit of {limit} bytes")]
    TooLong {
        /// Where the record or frame starts.
        offset: u64,
        /// Which length: key, value, frame.
        what: &'static str,
        /// The length found or given.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A varint length that runs past 64 bits.
    #[error("malformed length at offset {offset}")]
    BadLength {
        /// Where the record starts.
        offset: u64,
    },
    /// A frame whose header or checksum does not hold.
    #[error("corrupt frame at offset {offset}: {reason}")]
    CorruptFrame {
        /// Where the frame starts.
        offset: u64,
        /// What did not hold.
        reason: String,
    },
    /// A record whose key or value does not fit a fixed-length format.
    #[error("a record of key {key} and value {value} bytes does not fit {format}")]
    WrongSize {
        /// The format's name.
        format: String,
        /// Key length given.
        key: usize,
        /// Value length given.
        value: usize,
    },
    /// A caller's buffer that cannot hold the records it is for.
    #[error("{what} of {len} bytes does not fit the {need} bytes of records")]
    BufferSize {
        /// Which buffer: "an output", "a scratch buffer".
        what: &'static str,
        /// Its length.
        len: usize,
        /// Bytes it must hold.
        need: usize,
    },
    /// A name the registry does not know.
    #[error(
        "unknown serializer {name:?}: {reason} (known: fixed:KEY:VALUE, kv; add +crc, +lz4 or +zstd for frames)"
    )]
    UnknownFormat {
        /// The name asked for.
        name: String,
        /// Why it did not parse.
        reason: String,
    },
    /// Split keys of a range partitioner that cannot partition.
    #[error("bad range splits: {reason}")]
    BadSplits {
        /// What is wrong with them.
        reason: String,
    },
    /// Key and value columns of different record counts.
    #[error("{keys} keys but {values} values")]
    ColumnMismatch {
        /// Keys given.
        keys: u64,
        /// Values given.
        values: u64,
    },
    /// The store failed underneath a stream.
    #[error("{0}")]
    Store(#[from] crail_store::Error),
}

impl Error {
    /// The same error with its offset moved by `base` (from a buffer to the stream).
    pub fn shifted(self, base: u64) -> Self {
        match self {
            Self::Truncated { offset, have } => Self::Truncated {
                offset: offset + base,
                have,
            },
            Self::TooLong {
                offset,
                what,
                len,
                limit,
            } => Self::TooLong {
                offset: offset + base,
                what,
                len,
                limit,
            },
            Self::BadLength { offset } => Self::BadLength {
                offset: offset + base,
            },
            Self::CorruptFrame { offset, reason } => Self::CorruptFrame {
                offset: offset + base,
                reason,
            },
            other => other,
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
