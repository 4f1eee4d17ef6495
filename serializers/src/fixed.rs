//! Fixed-length records: the key's bytes then the value's, nothing else (TeraSort's 10 + 90).

use crate::{Error, Format, MAX_KEY, MAX_VALUE, Record, Result};

/// Records of exactly `key` + `value` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    key: usize,
    value: usize,
}

impl Fixed {
    /// A format of `key`-byte keys and `value`-byte values (at least one byte in all).
    pub fn new(key: usize, value: usize) -> Result<Self> {
        let bad = |reason: &str| Error::UnknownFormat {
            name: format!("fixed:{key}:{value}"),
            reason: reason.into(),
        };
        if key + value == 0 {
            return Err(bad("a record needs at least one byte"));
        }
        if key > MAX_KEY || value > MAX_VALUE {
            return Err(bad("key or value beyond the limits"));
        }
        Ok(Self { key, value })
    }

    /// Key length.
    pub fn key_len(&self) -> usize {
        self.key
    }

    /// Record length.
    pub fn record_len(&self) -> usize {
        self.key + self.value
    }
}

impl Format for Fixed {
    fn name(&self) -> String {
        format!("fixed:{}:{}", self.key, self.value)
    }

    fn encode(&self, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if key.len() != self.key || value.len() != self.value {
            return Err(Error::WrongSize {
                format: self.name(),
                key: key.len(),
                value: value.len(),
            });
        }
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode<'a>(&self, input: &'a [u8]) -> Result<Option<(Record<'a>, usize)>> {
        let len = self.record_len();
        let Some(record) = input.get(..len) else {
            return Ok(None);
        };
        let (key, value) = record.split_at(self.key);
        Ok(Some((Record { key, value }, len)))
    }

    fn fixed_lens(&self) -> Option<(usize, usize)> {
        Some((self.key, self.value))
    }
}
