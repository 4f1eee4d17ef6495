//! Streams over files: [`FileWriter`] and [`FileReader`] (direct: they take and return
//! buffers and keep several block operations in flight), [`MultiReader`] (a multifile's
//! children as one stream), and tokio `AsyncWrite`/`AsyncRead` adapters for code that wants
//! plain byte streams. Blocking `std::io` code wraps the adapters in
//! `tokio_util::io::SyncIoBridge`.
//!
//! Every data-plane request covers at most one block (a buffer never straddles two), so a
//! request goes to exactly one datanode and the datanode never has to split it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::Store;
use super::data::Pending;
use super::handles::{File, WriteLease};
use crate::buffer::Buffer;
use crate::error::{Error, Result};
use crate::types::{BlockLocation, Stat};

/// Blocks located or allocated per namenode round trip when streaming.
const BLOCKS_AHEAD: u64 = 16;

/// Writes a file (or a keyvalue's value) through its [`WriteLease`]: appends from the committed
/// size, or overwrites after [`FileWriter::seek`]. Nothing is visible to readers until
/// [`FileWriter::close`] commits the size; dropping the writer unclosed aborts the write.
///
/// [`FileWriter::write`] copies bytes into pooled buffers and sends each when it fills (or,
/// to a datanode on this host, copies whole buffers' worth straight into its shared memory);
/// [`FileWriter::write_buffer`] sends the caller's buffer as it is. Either way up to
/// `outstanding` block writes are in flight; errors surface on a later call, at the latest
/// [`FileWriter::flush`] or [`FileWriter::close`].
#[derive(Debug)]
pub struct FileWriter {
    store: Store,
    lease: Option<WriteLease>,
    block_size: u64,
    pos: u64,
    end: u64,
    blocks: Vec<BlockLocation>,
    /// The block the writer started in: it allocates ahead by the blocks it has added.
    first_block: u64,
    staging: Option<Buffer>,
    staged_at: u64,
    /// While the writer has only appended: the end of the bytes sent so far and their
    /// crc32c (from where the writer started).
    appended: Option<(u64, u32)>,
    /// One entry per buffer sent (its pieces' replies).
    inflight: FuturesUnordered<Pin<Box<dyn Future<Output = Result<()>> + Send>>>,
    outstanding: usize,
    failed: bool,
}

/// A datanode may ask (in its Welcome) for writes in pieces, all sent at once: a DRAM datanode
/// stores and checksums the first piece while the next ones are on the wire, and the reply to
/// the last piece follows it closely, so one buffer in flight costs little more than a
/// streamed one. Pieces end on file offsets that are multiples of the piece size, hence on
/// 4 KiB chunks; at least this size.
const MIN_PIECE: u64 = 64 << 10;

impl FileWriter {
    pub(crate) fn new(store: Store, lease: WriteLease) -> Self {
        let size = lease.stat().size;
        Self {
            first_block: size / store.block_size().max(1),
            block_size: store.block_size(),
            outstanding: store.config().outstanding.max(1),
            store,
            lease: Some(lease),
            pos: size,
            end: size,
            blocks: Vec::new(),
            staging: None,
            staged_at: size,
            appended: Some((size, 0)),
            inflight: FuturesUnordered::new(),
            failed: false,
        }
    }

    /// Where the next byte goes.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The size the file gets on close (so far).
    pub fn len(&self) -> u64 {
        self.end
    }

    /// Whether nothing has been written and the file was empty.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Bytes copied in by [`FileWriter::write`] and not sent yet (they hold a pool buffer
    /// until the buffer fills or the writer flushes).
    pub fn buffered(&self) -> usize {
        self.staging.as_ref().map_or(0, Buffer::len)
    }

    fn path(&self) -> &str {
        self.lease.as_ref().map_or("", |l| l.path())
    }

    /// Moves the write position to `pos` (at most the current size): the next bytes
    /// overwrite from there.
    pub async fn seek(&mut self, pos: u64) -> Result<()> {
        if pos > self.end {
            return Err(Error::PastEndOfFile {
                path: self.path().to_owned(),
                offset: pos,
                size: self.end,
            });
        }
        self.send_staging().await?;
        self.pos = pos;
        self.staged_at = pos;
        self.appended = None;
        Ok(())
    }

    /// Appends (or overwrites) `data`, copying it into stream buffers; to a datanode on this
    /// host, a piece that fills a buffer or reaches the end of its block goes straight into
    /// the connection's shared memory instead (one copy, not two).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.check()?;
        while !data.is_empty() {
            if self.staging.is_none() {
                let to_boundary = self.block_size - self.pos % self.block_size;
                let n = data
                    .len()
                    .min(usize::try_from(to_boundary).unwrap_or(usize::MAX));
                let whole = n as u64 == to_boundary || n >= self.store.buffers().buffer_size();
                if whole && self.send_local(self.pos, &data[..n]).await? {
                    data = &data[n..];
                    self.pos += n as u64;
                    self.end = self.end.max(self.pos);
                    continue;
                }
            }
            let staging = match &mut self.staging {
                Some(buf) => buf,
                None => {
                    self.staged_at = self.pos;
                    self.staging.insert(self.store.buffers().get())
                }
            };
            // A buffer never crosses a block boundary.
            let to_boundary = self.block_size - self.pos % self.block_size;
            let room = staging
                .remaining()
                .min(usize::try_from(to_boundary).unwrap_or(usize::MAX));
            let n = staging.extend_from_slice(&data[..data.len().min(room)]);
            data = &data[n..];
            self.pos += n as u64;
            self.end = self.end.max(self.pos);
            if n == room {
                self.send_staging().await?;
            }
        }
        Ok(())
    }

    /// Writes `data` as it is (no copy); it may span blocks. Bytes written with
    /// [`FileWriter::write`] before go first.
    pub async fn write_buffer(&mut self, data: Bytes) -> Result<()> {
        self.check()?;
        self.send_staging().await?;
        let mut at = 0usize;
        while at < data.len() {
            let to_boundary = self.block_size - self.pos % self.block_size;
            let n = (data.len() - at).min(usize::try_from(to_boundary).unwrap_or(usize::MAX));
            let piece = data.slice(at..at + n);
            let pos = self.pos;
            self.send(pos, piece).await?;
            at += n;
            self.pos += n as u64;
            self.end = self.end.max(self.pos);
        }
        self.staged_at = self.pos;
        Ok(())
    }

    /// Sends buffered bytes without waiting for them (beyond `outstanding` writes in flight),
    /// giving back the pool buffer they held once acknowledged.
    pub async fn send_buffered(&mut self) -> Result<()> {
        self.check()?;
        self.send_staging().await
    }

    /// Sends buffered bytes and waits until every write is acknowledged.
    pub async fn flush(&mut self) -> Result<()> {
        self.check()?;
        self.send_staging().await?;
        self.settle(0).await
    }

    /// Extends the write lease, for a writer that may sit idle longer than the namenode's
    /// lease timeout (allocating blocks renews it too).
    pub async fn renew(&mut self) -> Result<()> {
        match &self.lease {
            Some(lease) => lease.renew().await,
            None => Err(self.lost()),
        }
    }

    /// Flushes and commits what is written so far, keeping the lease: the file's size becomes
    /// [`FileWriter::len`] for readers that look it up from now on, and writing goes on.
    /// Returns the new stat. After a failed write nothing new is committed.
    pub async fn sync(&mut self) -> Result<Stat> {
        self.flush().await?;
        let end = self.end;
        match self.lease.as_mut() {
            Some(lease) => lease.commit(end).await,
            None => Err(self.lost()),
        }
    }

    /// Flushes and commits: the file's size becomes [`FileWriter::len`]. Returns the new stat.
    /// After any failed write nothing is committed: the write is aborted and the error
    /// returned.
    pub async fn close(mut self) -> Result<Stat> {
        if let Err(e) = self.flush().await {
            if let Some(lease) = self.lease.take() {
                let _ = lease.abort().await;
            }
            return Err(e);
        }
        match self.lease.take() {
            Some(lease) => lease.close(self.end).await,
            None => Err(self.lost()),
        }
    }

    /// Gives up: nothing written since the lease was taken is committed.
    pub async fn abort(mut self) -> Result<()> {
        match self.lease.take() {
            Some(lease) => lease.abort().await,
            None => Ok(()),
        }
    }

    /// The crc32c of every byte written since the writer was made, if it has only appended
    /// (never sought) and every write is stored (after a successful [`FileWriter::flush`] or
    /// [`FileWriter::sync`]; `None` after a failed write): checksums of the bytes already
    /// computed for the datanodes, combined, so a caller that needs one for the whole does
    /// not hash the bytes again.
    pub fn appended_crc(&self) -> Option<u32> {
        match self.appended {
            Some((end, crc))
                if end == self.pos
                    && self.buffered() == 0
                    && self.inflight.is_empty()
                    && !self.failed =>
            {
                Some(crc)
            }
            _ => None,
        }
    }

    /// Notes that `[at, at + len)`, whose crc32c is `crc`, is sent.
    fn hashed(&mut self, at: u64, len: usize, crc: u32) {
        self.appended = match self.appended {
            Some((end, sum)) if end == at => {
                Some((end + len as u64, crate::crc::combine(sum, crc, len as u64)))
            }
            _ => None,
        };
    }

    /// Turns the writer into a tokio [`AsyncWrite`]; `shutdown` commits the file.
    pub fn into_async_write(self) -> AsyncFileWriter {
        AsyncFileWriter::new(self)
    }

    fn lost(&self) -> Error {
        Error::LeaseLost {
            path: self.path().to_owned(),
        }
    }

    fn check(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Io {
                cause: std::io::Error::other(format!(
                    "{}: an earlier write failed; abort and write again",
                    self.path()
                )),
            });
        }
        Ok(())
    }

    async fn send_staging(&mut self) -> Result<()> {
        if let Some(buf) = self.staging.take() {
            if buf.is_empty() {
                return Ok(());
            }
            let at = self.staged_at;
            self.staged_at = at + buf.len() as u64;
            self.send(at, buf.freeze()).await?;
        }
        Ok(())
    }

    /// Sends `data` for `[at, at + len)` (inside one block) if the block's datanode is on this
    /// host, copying it into shared memory before returning, then waits while too many writes
    /// are in flight. Returns whether it was sent.
    async fn send_local(&mut self, at: u64, data: &[u8]) -> Result<bool> {
        let sent = async {
            let loc = self.location(at / self.block_size).await?;
            let conn = self.store.datanode(loc.address).await?;
            if !conn.is_local() {
                return Ok(false);
            }
            let base = loc.offset + at % self.block_size;
            let crc = crate::crc::crc32c(data);
            self.hashed(at, data.len(), crc);
            let reply = conn.write_from(loc.datanode.0, base, data, crc).await;
            self.inflight.push(Box::pin(reply));
            self.settle(self.outstanding - 1).await.map(|()| true)
        };
        let result = sent.await;
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Sends bytes for `[at, at + len)` (inside one block), then waits while too many writes
    /// are in flight.
    async fn send(&mut self, at: u64, data: Bytes) -> Result<()> {
        let sent = async {
            let loc = self.location(at / self.block_size).await?;
            let conn = self.store.datanode(loc.address).await?;
            let base = loc.offset + at % self.block_size;
            let mut pieces: Vec<Pending<()>> = Vec::new();
            let mut done = 0usize;
            // Pieces overlap storing one with sending the next, which only a lone write
            // needs: with several buffers in flight they overlap already, and splitting them
            // costs a request and a wakeup per piece (measured: 52-77% of plain TCP with
            // pieces, 67-94% without, 4 x 1 MiB in flight, docs/benchmarks.md).
            let size = conn.write_piece() as u64;
            let size = if size == 0 || self.outstanding > 1 {
                u64::MAX
            } else {
                size.max(MIN_PIECE) & !4095
            };
            while done < data.len() {
                let pos = at + done as u64;
                let to_edge = size - pos % size;
                let piece = (data.len() - done).min(usize::try_from(to_edge).unwrap_or(usize::MAX));
                let bytes = data.slice(done..done + piece);
                let crc = crate::crc::crc32c(&bytes);
                self.hashed(pos, piece, crc);
                pieces.push(
                    conn.write(loc.datanode.0, base + done as u64, bytes, crc)
                        .await,
                );
                done += piece;
            }
            self.inflight.push(Box::pin(async move {
                for piece in pieces {
                    piece.await?;
                }
                Ok(())
            }));
            self.settle(self.outstanding - 1).await
        };
        let result = sent.await;
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    async fn settle(&mut self, keep: usize) -> Result<()> {
        while self.inflight.len() > keep {
            if let Some(Err(e)) = self.inflight.next().await {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn location(&mut self, index: u64) -> Result<BlockLocation> {
        let known = self.blocks.len() as u64;
        if index >= known {
            let Some(lease) = &self.lease else {
                return Err(self.lost());
            };
            let wanted = index + 1 - known;
            // Allocate ahead as the writer grows the file (as many blocks as it has added,
            // up to BLOCKS_AHEAD): streaming writes save round trips, small files hold nothing
            // extra, and a writer never holds more than its own size of unused blocks (close
            // frees them). Counting only its own blocks matters to appenders that never close
            // (a shuffle's map writers, each adding a segment to a large group file): counted
            // by the file's size, each would leave up to BLOCKS_AHEAD unused blocks behind. If
            // the store cannot give that many, ask for exactly what this write needs.
            let added = known.saturating_sub(self.first_block);
            let ahead = wanted.max(added.clamp(1, BLOCKS_AHEAD));
            let got = match lease.allocate(known, ahead).await {
                Err(Error::StoreFull { .. }) if wanted < ahead => {
                    lease.allocate(known, wanted).await?
                }
                other => other?,
            };
            self.blocks.extend(got);
        }
        self.blocks
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .cloned()
            .ok_or_else(|| Error::malformed("allocate reply", "fewer blocks than asked"))
    }
}

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
                loc.datanode.0,
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

/// A source of buffers the async adapter can drive.
pub(crate) trait BufferSource: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Result<Option<Buffer>>> + Send;
}

impl BufferSource for FileReader {
    fn next(&mut self) -> impl Future<Output = Result<Option<Buffer>>> + Send {
        self.next_buffer()
    }
}

impl BufferSource for MultiReader {
    fn next(&mut self) -> impl Future<Output = Result<Option<Buffer>>> + Send {
        self.next_buffer()
    }
}

/// A tokio [`AsyncRead`] over a [`FileReader`] or [`MultiReader`]. A task keeps the reader's
/// requests in flight while the consumer copies out of the current buffer.
#[derive(Debug)]
pub struct AsyncBufferReader {
    rx: mpsc::Receiver<Result<Buffer>>,
    current: Option<Buffer>,
    at: usize,
    /// Once the stream failed, every later read fails too (never a clean, short EOF).
    failed: Option<String>,
}

impl AsyncBufferReader {
    fn new<S: BufferSource>(mut source: S) -> Self {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let next = source.next().await;
                let end = !matches!(next, Ok(Some(_)));
                let item = match next {
                    Ok(Some(buf)) => Ok(buf),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        });
        Self {
            rx,
            current: None,
            at: 0,
            failed: None,
        }
    }
}

impl AsyncRead for AsyncBufferReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(why) = &self.failed {
                return Poll::Ready(Err(std::io::Error::other(why.clone())));
            }
            if let Some(buf) = &self.current
                && self.at < buf.len()
            {
                let n = (buf.len() - self.at).min(out.remaining());
                out.put_slice(&buf[self.at..self.at + n]);
                self.at += n;
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(buf)) => {
                    self.current = Some(buf);
                    self.at = 0;
                }
                Some(Err(e)) => self.failed = Some(e.to_string()),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[derive(Debug)]
enum Command {
    Data(Buffer),
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<Stat>>),
}

/// A tokio [`AsyncWrite`] over a [`FileWriter`]: `flush` waits for every write, `shutdown`
/// commits the file. A task owns the writer and keeps its requests in flight. Dropped without
/// `shutdown`, the write is aborted.
#[derive(Debug)]
pub struct AsyncFileWriter {
    tx: Option<tokio_util::sync::PollSender<Command>>,
    current: Option<Buffer>,
    pool: crate::buffer::BufferPool,
    waiting: Option<Waiting>,
    closed: Option<Stat>,
}

#[derive(Debug)]
enum Waiting {
    Flush(oneshot::Receiver<Result<()>>),
    Close(oneshot::Receiver<Result<Stat>>),
}

impl AsyncFileWriter {
    fn new(mut writer: FileWriter) -> Self {
        let pool = writer.store.buffers().clone();
        let (tx, mut rx) = mpsc::channel::<Command>(2);
        tokio::spawn(async move {
            let mut error: Option<String> = None;
            while let Some(command) = rx.recv().await {
                match command {
                    Command::Data(buf) => {
                        if error.is_none()
                            && let Err(e) = writer.write_buffer(buf.freeze()).await
                        {
                            error = Some(e.to_string());
                        }
                    }
                    Command::Flush(done) => {
                        let result = match &error {
                            Some(e) => Err(Error::Io {
                                cause: std::io::Error::other(e.clone()),
                            }),
                            None => writer.flush().await,
                        };
                        let _ = done.send(result);
                    }
                    Command::Close(done) => {
                        let result = match &error {
                            Some(e) => Err(Error::Io {
                                cause: std::io::Error::other(e.clone()),
                            }),
                            None => writer.close().await,
                        };
                        let _ = done.send(result);
                        return;
                    }
                }
            }
            // Dropped without shutdown: abort.
            let _ = writer.abort().await;
        });
        Self {
            tx: Some(tokio_util::sync::PollSender::new(tx)),
            current: None,
            pool,
            waiting: None,
            closed: None,
        }
    }

    /// The file's stat after a successful `shutdown`.
    pub fn stat(&self) -> Option<&Stat> {
        self.closed.as_ref()
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, command: Command) -> Poll<std::io::Result<()>> {
        let Some(tx) = &mut self.tx else {
            return Poll::Ready(Err(std::io::Error::other("writer is closed")));
        };
        ready!(tx.poll_reserve(cx)).map_err(|_| std::io::Error::other("writer task is gone"))?;
        tx.send_item(command)
            .map_err(|_| std::io::Error::other("writer task is gone"))?;
        Poll::Ready(Ok(()))
    }

    fn poll_push_current(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.current.as_ref().is_some_and(|b| !b.is_empty()) {
            let Some(tx) = &mut self.tx else {
                return Poll::Ready(Err(std::io::Error::other("writer is closed")));
            };
            ready!(tx.poll_reserve(cx))
                .map_err(|_| std::io::Error::other("writer task is gone"))?;
            if let Some(buf) = self.current.take() {
                tx.send_item(Command::Data(buf))
                    .map_err(|_| std::io::Error::other("writer task is gone"))?;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for AsyncFileWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.current.as_ref().is_some_and(|b| b.remaining() == 0) {
            ready!(self.poll_push_current(cx))?;
        }
        let pool = self.pool.clone();
        let buf = self.current.get_or_insert_with(|| pool.get());
        Poll::Ready(Ok(buf.extend_from_slice(data)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(Waiting::Flush(rx)) = &mut self.waiting {
                let result = ready!(Pin::new(rx).poll(cx));
                self.waiting = None;
                return Poll::Ready(match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(std::io::Error::other(e)),
                    Err(_) => Err(std::io::Error::other("writer task is gone")),
                });
            }
            ready!(self.poll_push_current(cx))?;
            let (done, rx) = oneshot::channel();
            ready!(self.poll_send(cx, Command::Flush(done)))?;
            self.waiting = Some(Waiting::Flush(rx));
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.closed.is_some() {
                return Poll::Ready(Ok(()));
            }
            if let Some(Waiting::Close(rx)) = &mut self.waiting {
                let result = ready!(Pin::new(rx).poll(cx));
                self.waiting = None;
                self.tx = None;
                return Poll::Ready(match result {
                    Ok(Ok(stat)) => {
                        self.closed = Some(stat);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(std::io::Error::other(e)),
                    Err(_) => Err(std::io::Error::other("writer task is gone")),
                });
            }
            ready!(self.poll_push_current(cx))?;
            let (done, rx) = oneshot::channel();
            ready!(self.poll_send(cx, Command::Close(done)))?;
            self.waiting = Some(Waiting::Close(rx));
        }
    }
}
