//! [`FileReader`] (prefetching, reads at any offset) and [`MultiReader`] (a multifile's
//! children as one stream).

use std::collections::VecDeque;

use super::AsyncBufferReader;
use super::writer::BLOCKS_AHEAD;
use crate::buffer::Buffer;
use crate::client::Store;
use crate::client::data::{Pending, Target};
use crate::client::handles::File;
use crate::error::{Error, Result};
use crate::types::{BlockLocation, Stat};
/// Reads a file: as a stream of buffers ([`FileReader::next_buffer`], several reads in
/// flight), at any offset ([`FileReader::read_at`]), or as a tokio [`AsyncRead`]. Every byte
/// is checked against its crc32c; a mismatch is [`Error::ChecksumMismatch`], never data.
#[derive(Debug)]
pub struct FileReader {
    store: Store,
    path: String,
    file_id: u64,
    size: u64,
    block_size: u64,
    blocks: Vec<BlockLocation>,
    issued: u64,
    pos: u64,
    ahead: VecDeque<(u64, Pending<(Buffer, u32)>)>,
    outstanding: usize,
}

impl FileReader {
    pub(crate) fn new(store: Store, path: String, stat: &Stat) -> Self {
        Self {
            block_size: store.block_size(),
            outstanding: store.config().outstanding.max(1),
            store,
            path,
            file_id: stat.file_id,
            size: stat.size,
            blocks: Vec::new(),
            issued: 0,
            pos: 0,
            ahead: VecDeque::new(),
        }
    }

    /// With the locations of the file's first `blocks.len()` blocks known.
    pub(crate) fn with_blocks(mut self, blocks: Vec<BlockLocation>) -> Self {
        self.blocks = blocks;
        self
    }

    /// The file's size when the reader was made.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Offset of the next byte [`FileReader::next_buffer`] returns.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Continues the stream from `pos` (at most the size).
    pub fn seek(&mut self, pos: u64) -> Result<()> {
        if pos > self.size {
            return Err(self.past_end(pos));
        }
        self.ahead.clear();
        self.pos = pos;
        self.issued = pos;
        Ok(())
    }

    fn past_end(&self, offset: u64) -> Error {
        Error::PastEndOfFile {
            path: self.path.clone(),
            offset,
            size: self.size,
        }
    }

    /// The next buffer of the stream (at most one block, at most the configured buffer
    /// size), or `None` at the end.
    pub async fn next_buffer(&mut self) -> Result<Option<Buffer>> {
        while self.ahead.len() < self.outstanding && self.issued < self.size {
            let at = self.issued;
            let len = self.piece(at, self.store.buffers().buffer_size() as u64);
            let pending = self
                .start_read(at, len, self.store.buffers().get(), 0)
                .await?;
            self.ahead.push_back((at, pending));
            self.issued += len as u64;
        }
        let Some((at, pending)) = self.ahead.pop_front() else {
            return Ok(None);
        };
        let buf = match pending.await {
            Ok((buf, _)) => buf,
            Err(e) => {
                self.ahead.clear();
                self.issued = at;
                return Err(self.blame(e));
            }
        };
        self.pos = at + buf.len() as u64;
        Ok(Some(buf))
    }

    /// `len` bytes at `offset` (fewer at the end of the file), independent of the stream
    /// position. An offset past the end is [`Error::PastEndOfFile`].
    pub async fn read_at(&mut self, offset: u64, len: usize) -> Result<Buffer> {
        Ok(self.read_checked(offset, len).await?.0)
    }

    /// As [`FileReader::read_at`], with the crc32c of the bytes returned: the checksums each
    /// piece was checked against on arrival, combined, so a caller that needs one for the
    /// whole does not hash the bytes again.
    pub async fn read_checked(&mut self, offset: u64, len: usize) -> Result<(Buffer, u32)> {
        let len = self.clamp(offset, len)?;
        let buf = if len <= self.store.buffers().buffer_size() {
            self.store.buffers().get()
        } else {
            Buffer::new(len)
        };
        self.read_pieces(offset, len, buf).await
    }

    /// Reads `len` bytes at `offset` into `buf` (from its start; it must hold `len` bytes).
    pub async fn read_into(&mut self, offset: u64, len: usize, buf: Buffer) -> Result<Buffer> {
        let len = self.clamp(offset, len)?;
        Ok(self.read_pieces(offset, len, buf).await?.0)
    }

    /// `len` bounded by the end of the file; an offset past it is an error.
    fn clamp(&self, offset: u64, len: usize) -> Result<usize> {
        if offset > self.size {
            return Err(self.past_end(offset));
        }
        Ok(len.min(usize::try_from(self.size - offset).unwrap_or(usize::MAX)))
    }

    async fn read_pieces(
        &mut self,
        offset: u64,
        len: usize,
        mut buf: Buffer,
    ) -> Result<(Buffer, u32)> {
        buf.clear();
        let (mut done, mut crc) = (0usize, 0u32);
        while done < len {
            let at = offset + done as u64;
            let n = self.piece(at, (len - done) as u64);
            let (read, piece_crc) = self
                .start_read(at, n, buf, done)
                .await?
                .await
                .map_err(|e| self.blame(e))?;
            buf = read;
            crc = crate::crc::combine(crc, piece_crc, n as u64);
            done += n;
        }
        buf.set_len(len);
        Ok((buf, crc))
    }

    /// Reads the whole file into memory.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>> {
        self.seek(0)?;
        let mut out = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        while let Some(buf) = self.next_buffer().await? {
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Turns the reader into a tokio [`AsyncRead`] from the current position.
    pub fn into_async_read(self) -> AsyncBufferReader {
        AsyncBufferReader::new(self)
    }

    /// Bytes of the piece starting at `at`: up to `max`, the block's end, the file's end.
    fn piece(&self, at: u64, max: u64) -> usize {
        let to_boundary = self.block_size - at % self.block_size;
        let n = max.min(to_boundary).min(self.size - at);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    async fn start_read(
        &mut self,
        at: u64,
        len: usize,
        buf: Buffer,
        into: usize,
    ) -> Result<Pending<(Buffer, u32)>> {
        let loc = self.location(at / self.block_size).await?;
        let conn = self.store.datanode(loc.address).await?;
        Ok(conn
            .read(
                Target::of(&loc),
                loc.offset + at % self.block_size,
                len,
                buf,
                into,
            )
            .await)
    }

    /// Puts the file's path on errors that come from a datanode.
    fn blame(&self, e: Error) -> Error {
        match e {
            Error::ChecksumMismatch {
                location,
                offset,
                expected,
                actual,
            } => Error::ChecksumMismatch {
                location: format!("{} ({location})", self.path),
                offset,
                expected,
                actual,
            },
            other => other,
        }
    }

    async fn location(&mut self, index: u64) -> Result<BlockLocation> {
        let known = self.blocks.len() as u64;
        if index >= known {
            let total = self.size.div_ceil(self.block_size);
            let count = (index + 1 - known)
                .max(BLOCKS_AHEAD)
                .min(total.saturating_sub(known));
            let got = self
                .store
                .block_locations(self.file_id, known, count.max(1))
                .await?;
            self.blocks.extend(got);
        }
        self.blocks
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .cloned()
            .ok_or_else(|| Error::malformed("locate reply", "fewer blocks than asked"))
    }
}

/// A multifile's children, in name order, read as one stream.
#[derive(Debug)]
pub struct MultiReader {
    children: VecDeque<File>,
    current: Option<FileReader>,
}

impl MultiReader {
    pub(crate) fn new(children: Vec<File>) -> Self {
        Self {
            children: children.into(),
            current: None,
        }
    }

    /// The next buffer of the merged stream, or `None` after the last child.
    pub async fn next_buffer(&mut self) -> Result<Option<Buffer>> {
        loop {
            if let Some(reader) = &mut self.current {
                if let Some(buf) = reader.next_buffer().await? {
                    return Ok(Some(buf));
                }
                self.current = None;
            }
            match self.children.pop_front() {
                Some(child) => self.current = Some(child.reader()),
                None => return Ok(None),
            }
        }
    }

    /// Reads every child into memory, one after the other.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(buf) = self.next_buffer().await? {
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Turns the reader into a tokio [`AsyncRead`].
    pub fn into_async_read(self) -> AsyncBufferReader {
        AsyncBufferReader::new(self)
    }
}
