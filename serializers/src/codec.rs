//! [`Serializer`]: a format plus its framing, chosen by name; its [`Encoder`] and [`Decoder`].

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{Error, Fixed, Format, KeyValue, Record, Result, frame};

/// How encoded records are grouped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Records back to back.
    None,
    /// Frames of whole records with a crc32c each.
    Crc,
    /// As `Crc`, the payload lz4-compressed.
    Lz4,
    /// As `Crc`, the payload zstd-compressed (smaller than lz4, slower to write).
    Zstd,
}

impl Framing {
    fn compression(self) -> frame::Compression {
        match self {
            Framing::None | Framing::Crc => frame::Compression::None,
            Framing::Lz4 => frame::Compression::Lz4,
            Framing::Zstd => frame::Compression::Zstd,
        }
    }
}

/// A record format and its framing: what engines name in their configuration.
#[derive(Debug, Clone)]
pub struct Serializer {
    format: Arc<dyn Format>,
    framing: Framing,
    frame_size: usize,
}

/// Records per frame are gathered up to this many bytes.
pub const FRAME_SIZE: usize = 64 << 10;

impl Serializer {
    /// `format` with `framing`.
    pub fn new(format: Arc<dyn Format>, framing: Framing) -> Self {
        Self {
            format,
            framing,
            frame_size: FRAME_SIZE,
        }
    }

    /// The serializer a name selects: `fixed:KEY:VALUE` (byte lengths), `kv`, each optionally
    /// followed by `+crc` (checksummed frames), `+lz4` or `+zstd` (checksummed, compressed
    /// frames).
    pub fn by_name(name: &str) -> Result<Self> {
        let bad = |reason: &str| Error::UnknownFormat {
            name: name.to_owned(),
            reason: reason.into(),
        };
        let (base, framing) = match name.split_once('+') {
            None => (name, Framing::None),
            Some((base, "crc")) => (base, Framing::Crc),
            Some((base, "lz4")) => (base, Framing::Lz4),
            Some((base, "zstd")) => (base, Framing::Zstd),
            Some(_) => return Err(bad("the framing after + must be crc, lz4 or zstd")),
        };
        let format: Arc<dyn Format> = match base.split(':').collect::<Vec<_>>()[..] {
            ["kv"] => Arc::new(KeyValue),
            ["fixed", key, value] => {
                let parse = |s: &str| {
                    s.parse::<usize>()
                        .map_err(|_| bad("fixed needs two byte lengths, as in fixed:10:90"))
                };
                Arc::new(Fixed::new(parse(key)?, parse(value)?).map_err(|e| match e {
                    Error::UnknownFormat { reason, .. } => bad(&reason),
                    other => other,
                })?)
            }
            _ => return Err(bad("no such format")),
        };
        Ok(Self::new(format, framing))
    }

    /// The name that selects it.
    pub fn name(&self) -> String {
        let framing = match self.framing {
            Framing::None => "",
            Framing::Crc => "+crc",
            Framing::Lz4 => "+lz4",
            Framing::Zstd => "+zstd",
        };
        format!("{}{framing}", self.format.name())
    }

    /// The record format.
    pub fn format(&self) -> &dyn Format {
        &*self.format
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Gathers frames up to `bytes` of records (at least 1 KiB) instead of 64 KiB.
    pub fn with_frame_size(mut self, bytes: usize) -> Self {
        self.frame_size = bytes.max(1024);
        self
    }

    /// An encoder into a growing buffer.
    pub fn encoder(&self) -> Encoder {
        Encoder {
            ser: self.clone(),
            fixed: self.format.fixed_lens(),
            out: Vec::new(),
            open: Vec::new(),
        }
    }

    /// A decoder of chunks of type `C` (byte vectors, the store's buffers, ...).
    pub fn decoder<C: AsRef<[u8]>>(&self) -> Decoder<C> {
        Decoder {
            ser: self.clone(),
            fixed: self.format.fixed_lens(),
            chunks: VecDeque::new(),
            pos: 0,
            carry: Vec::new(),
            carry_done: false,
            frame: Vec::new(),
            frame_pos: 0,
            frame_at: 0,
            offset: 0,
            current: None,
        }
    }
}

/// Encodes records into a buffer the caller drains with [`take`](Encoder::take).
#[derive(Debug)]
pub struct Encoder {
    ser: Serializer,
    /// Key and value lengths of a fixed format: encoded here without a call through the
    /// format (a record is then two copies).
    fixed: Option<(usize, usize)>,
    /// Encoded bytes ready to go (whole frames when framed).
    out: Vec<u8>,
    /// Framed: the records of the frame being gathered.
    open: Vec<u8>,
}

impl Encoder {
    /// Appends one record.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let framed = self.ser.framing != Framing::None;
        let target = if framed {
            &mut self.open
        } else {
            &mut self.out
        };
        match self.fixed {
            Some((k, v)) if key.len() == k && value.len() == v => {
                target.extend_from_slice(key);
                target.extend_from_slice(value);
            }
            _ => self.ser.format.encode(key, value, target)?,
        }
        if !framed {
            return Ok(());
        }
        if self.open.len() >= self.ser.frame_size {
            self.close_frame()?;
        }
        Ok(())
    }

    fn close_frame(&mut self) -> Result<()> {
        if !self.open.is_empty() {
            frame::write(&self.open, self.ser.framing.compression(), &mut self.out)?;
            self.open.clear();
        }
        Ok(())
    }

    /// Bytes ready to be taken.
    pub fn ready(&self) -> usize {
        self.out.len()
    }

    /// The bytes ready so far (records of an unfinished frame stay behind).
    pub fn take(&mut self) -> Vec<u8> {
        let capacity = self.out.capacity();
        std::mem::replace(&mut self.out, Vec::with_capacity(capacity))
    }

    /// As [`take`](Encoder::take), going on in `spare` (cleared): a caller that recycles its
    /// buffers encodes into memory already faulted in.
    pub fn swap(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        std::mem::replace(&mut self.out, spare)
    }

    /// Closes the open frame and returns everything not yet taken.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        self.close_frame()?;
        Ok(std::mem::take(&mut self.out))
    }
}

/// Where the located record lies.
#[derive(Debug, Clone, Copy)]
enum Located {
    Chunk(usize, usize),
    Carry(usize),
    Frame(usize, usize),
}

/// Decodes records from a stream that arrives in chunks of any size. Records (and frames)
/// may straddle chunks: a straddling one is assembled in a carry buffer, every other record
/// borrows its chunk. Feed it with [`push`](Decoder::push) whenever
/// [`next_record`](Decoder::next_record) says it needs input, and call [`finish`](Decoder::finish) at the
/// end of the stream.
#[derive(Debug)]
pub struct Decoder<C> {
    ser: Serializer,
    /// Key and value lengths of a fixed format: records are located without a call through
    /// the format.
    fixed: Option<(usize, usize)>,
    /// Chunks pushed and not used up, oldest first.
    chunks: VecDeque<C>,
    /// Next unread byte of the oldest chunk.
    pos: usize,
    /// A record or frame that started in an earlier chunk.
    carry: Vec<u8>,
    /// `carry` holds a unit already handed out: cleared before the next.
    carry_done: bool,
    /// Framed: the current frame's records.
    frame: Vec<u8>,
    frame_pos: usize,
    /// Stream offset of the current frame.
    frame_at: u64,
    /// Stream offset of the next unit (record or frame) not yet located.
    offset: u64,
    current: Option<Located>,
}

impl<C: AsRef<[u8]>> Decoder<C> {
    /// Adds the next chunk of the stream (after any not yet used up).
    pub fn push(&mut self, chunk: C) {
        self.chunks.push_back(chunk);
    }

    /// The next record, or `None` when the decoder needs the next chunk.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        if self.advance()? {
            Ok(self.current())
        } else {
            Ok(None)
        }
    }

    /// Locates the next record: `true` if there is one ([`current`](Decoder::current) returns
    /// it), `false` when the decoder needs the next chunk.
    pub fn advance(&mut self) -> Result<bool> {
        self.current = None;
        loop {
            if self.frame_pos < self.frame.len() {
                let rest = &self.frame[self.frame_pos..];
                let Some(len) = self
                    .record_len(rest)
                    .map_err(|e| e.shifted(self.frame_at))?
                else {
                    return Err(Error::CorruptFrame {
                        offset: self.frame_at,
                        reason: format!("it ends inside a record ({} bytes left)", rest.len()),
                    });
                };
                self.current = Some(Located::Frame(self.frame_pos, len));
                self.frame_pos += len;
                return Ok(true);
            }
            let Some(unit) = self.next_unit()? else {
                return Ok(false);
            };
            if self.ser.framing == Framing::None {
                self.current = Some(unit);
                return Ok(true);
            }
            let at = self.offset - self.unit_len(unit) as u64;
            let bytes = match unit {
                Located::Chunk(start, len) => match self.chunks.front() {
                    Some(c) => &c.as_ref()[start..start + len],
                    None => &[][..],
                },
                _ => &self.carry[..],
            };
            frame::read(bytes, &mut self.frame).map_err(|e| e.shifted(at))?;
            self.frame_pos = 0;
            self.frame_at = at;
        }
    }

    fn unit_len(&self, unit: Located) -> usize {
        match unit {
            Located::Chunk(_, len) | Located::Frame(_, len) | Located::Carry(len) => len,
        }
    }

    /// The record [`advance`](Decoder::advance) located.
    pub fn current(&self) -> Option<Record<'_>> {
        let bytes = match self.current? {
            Located::Chunk(start, len) => &self.chunks.front()?.as_ref()[start..start + len],
            Located::Carry(len) => &self.carry[..len],
            Located::Frame(start, len) => &self.frame[start..start + len],
        };
        if let Some((key, _)) = self.fixed {
            let (key, value) = bytes.split_at(key.min(bytes.len()));
            return Some(Record { key, value });
        }
        // Located records decoded once already: this cannot fail.
        self.ser.format.decode(bytes).ok().flatten().map(|(r, _)| r)
    }

    /// The length of the unit (record, or frame) at the start of `input` once complete.
    fn measure(&self, input: &[u8]) -> Result<Option<usize>> {
        match self.ser.framing {
            Framing::None => self.record_len(input),
            _ => frame::frame_len(input),
        }
    }

    /// The length of the record at the start of `input` once complete.
    fn record_len(&self, input: &[u8]) -> Result<Option<usize>> {
        match self.fixed {
            Some((key, value)) => Ok((input.len() >= key + value).then_some(key + value)),
            None => Ok(self.ser.format.decode(input)?.map(|(_, len)| len)),
        }
    }

    /// The next whole unit, in the oldest chunk or assembled in the carry buffer; `None`
    /// when the chunks are used up.
    fn next_unit(&mut self) -> Result<Option<Located>> {
        if self.carry_done {
            self.carry.clear();
            self.carry_done = false;
        }
        let offset = self.offset;
        loop {
            if !self.carry.is_empty() {
                // Complete the unit that straddles chunks, a few bytes at a time (at least
                // doubling), and give back what went past its end: only bytes of the last
                // take can have, as the unit was incomplete before it.
                if let Some(len) = self.measure(&self.carry).map_err(|e| e.shifted(offset))? {
                    self.pos = self.pos.saturating_sub(self.carry.len() - len);
                    self.carry.truncate(len);
                    self.carry_done = true;
                    self.offset += len as u64;
                    return Ok(Some(Located::Carry(len)));
                }
            }
            let Some(front) = self.chunks.front() else {
                return Ok(None);
            };
            let rest = &front.as_ref()[self.pos..];
            if rest.is_empty() {
                self.chunks.pop_front();
                self.pos = 0;
                continue;
            }
            if !self.carry.is_empty() {
                let take = self.carry.len().max(64).min(rest.len());
                self.carry.extend_from_slice(&rest[..take]);
                self.pos += take;
                continue;
            }
            match self.measure(rest).map_err(|e| e.shifted(offset))? {
                Some(len) => {
                    let start = self.pos;
                    self.pos += len;
                    self.offset += len as u64;
                    return Ok(Some(Located::Chunk(start, len)));
                }
                None => {
                    self.carry.extend_from_slice(rest);
                    self.chunks.pop_front();
                    self.pos = 0;
                }
            }
        }
    }

    /// Ends the stream: an error if it stopped inside a record or frame.
    pub fn finish(&mut self) -> Result<()> {
        if self.carry_done {
            self.carry.clear();
            self.carry_done = false;
        }
        let unread: usize = self.chunks.iter().map(|c| c.as_ref().len()).sum();
        let left = self.carry.len() + unread - self.pos.min(unread);
        if left > 0 || self.frame_pos < self.frame.len() {
            return Err(Error::Truncated {
                offset: self.offset,
                have: left as u64,
            });
        }
        Ok(())
    }

    /// Bytes of the stream located so far (records or frames handed out).
    pub fn position(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_select_formats_and_framings() {
        for name in [
            "kv",
            "kv+lz4",
            "kv+zstd",
            "kv+crc",
            "fixed:10:90",
            "fixed:4:0+lz4",
        ] {
            assert_eq!(Serializer::by_name(name).unwrap().name(), name);
        }
        assert_eq!(
            Serializer::by_name("fixed:10:90")
                .unwrap()
                .format()
                .fixed_lens(),
            Some((10, 90))
        );
        for (name, says) in [
            ("json", "no such format"),
            ("kv+gzip", "crc, lz4 or zstd"),
            ("fixed:10", "no such format"),
            ("fixed:a:90", "two byte lengths"),
            ("fixed:0:0", "at least one byte"),
        ] {
            let err = Serializer::by_name(name).unwrap_err().to_string();
            assert!(err.contains(says), "{name}: {err}");
        }
    }
}
