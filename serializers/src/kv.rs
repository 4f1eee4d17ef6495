//! Length-prefixed key-value records: `varint(key len) varint(value len) key value`, LEB128
//! varints (one byte for lengths under 128).

use crate::{Error, Format, MAX_KEY, MAX_VALUE, Record, Result};

/// Key-value records of any lengths up to [`MAX_KEY`] and [`MAX_VALUE`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyValue;

fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A varint at the start of `input` and its length; `Ok(None)` if `input` ends inside it.
fn get_varint(input: &[u8]) -> Result<Option<(u64, usize)>> {
    let mut n = 0u64;
    for (i, &b) in input.iter().enumerate() {
        if i == 10 || (i == 9 && b > 1) {
            return Err(Error::BadLength { offset: 0 });
        }
        n |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(Some((n, i + 1)));
        }
    }
    Ok(None)
}

impl Format for KeyValue {
    fn name(&self) -> String {
        "kv".into()
    }

    fn encode(&self, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<()> {
        for (what, len, limit) in [
            ("key", key.len(), MAX_KEY),
            ("value", value.len(), MAX_VALUE),
        ] {
            if len > limit {
                return Err(Error::TooLong {
                    offset: out.len() as u64,
                    what,
                    len: len as u64,
                    limit: limit as u64,
                });
            }
        }
        out.reserve(key.len() + value.len() + 6);
        put_varint(key.len() as u64, out);
        put_varint(value.len() as u64, out);
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode<'a>(&self, input: &'a [u8]) -> Result<Option<(Record<'a>, usize)>> {
        let Some((key_len, a)) = get_varint(input)? else {
            return Ok(None);
        };
        let Some((value_len, b)) = get_varint(&input[a..])? else {
            return Ok(None);
        };
        for (what, len, limit) in [("key", key_len, MAX_KEY), ("value", value_len, MAX_VALUE)] {
            if len > limit as u64 {
                return Err(Error::TooLong {
                    offset: 0,
                    what,
                    len,
                    limit: limit as u64,
                });
            }
        }
        // Both lengths are within the limits, so these sums cannot overflow.
        let start = a + b;
        let (key_len, value_len) = (key_len as usize, value_len as usize);
        let end = start + key_len + value_len;
        let Some(body) = input.get(start..end) else {
            return Ok(None);
        };
        let (key, value) = body.split_at(key_len);
        Ok(Some((Record { key, value }, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_overlong_ones() {
        for n in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            put_varint(n, &mut out);
            assert_eq!(get_varint(&out).unwrap(), Some((n, out.len())));
            assert_eq!(get_varint(&out[..out.len() - 1]).unwrap(), None);
        }
        assert!(get_varint(&[0xff; 11]).is_err());
        assert!(get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).is_err());
    }

    #[test]
    fn lengths_beyond_the_limits_are_errors_not_allocations() {
        let mut out = Vec::new();
        put_varint(u64::MAX, &mut out);
        put_varint(1, &mut out);
        let err = KeyValue.decode(&out).unwrap_err();
        assert!(matches!(err, Error::TooLong { what: "key", .. }), "{err}");
    }
}
