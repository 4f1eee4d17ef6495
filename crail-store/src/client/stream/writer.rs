//! [`FileWriter`]: appends or overwrites through pooled buffers, blocks allocated ahead.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::AsyncFileWriter;
use crate::buffer::Buffer;
use crate::client::Store;
use crate::client::data::{Pending, Target};
use crate::client::handles::WriteLease;
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::types::{BlockLocation, Stat};

/// Blocks located or allocated per namenode round trip when streaming.
pub(super) const BLOCKS_AHEAD: u64 = 16;

/// Pieces sent in one scattered write request (at most 15 bytes of request each).
const SCATTER_PIECES: usize = 2048;

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
    pub(super) store: Store,
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

    /// The lease's owner committed `size` bytes (space it placed this writer's bytes in, say):
    /// [`FileWriter::seek`] may go up to there, and blocks below it are located, not
    /// allocated.
    pub fn extend_to(&mut self, size: u64) {
        self.end = self.end.max(size);
        // Those blocks are the owner's, not this writer's additions: none allocated ahead.
        self.first_block = self.first_block.max(size.div_ceil(self.block_size.max(1)));
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

    /// Writes `runs` of (file offset, bytes, their crc32c), each at most the current size:
    /// the runs on one datanode go in one request per block's worth of bytes (a scattered
    /// write, through shared memory to a datanode on this host), with the caller's checksums. A run that
    /// crosses a block is split (its parts hashed here). Bytes written with
    /// [`FileWriter::write`] before go first; afterwards the position is the last run's end.
    pub async fn write_runs(&mut self, runs: &[(u64, &[u8], u32)]) -> Result<()> {
        self.check()?;
        self.send_staging().await?;
        self.appended = None;
        let bs = self.block_size.max(1);
        // Split at block edges.
        let mut pieces: Vec<(u64, &[u8], u32)> = Vec::with_capacity(runs.len());
        for &(at, bytes, crc) in runs {
            let end = at.saturating_add(bytes.len() as u64);
            if end > self.end {
                return Err(Error::PastEndOfFile {
                    path: self.path().to_owned(),
                    offset: end,
                    size: self.end,
                });
            }
            if bytes.is_empty() {
                continue;
            }
            if at / bs == (end - 1) / bs {
                pieces.push((at, bytes, crc));
                continue;
            }
            let (mut at, mut bytes) = (at, bytes);
            while !bytes.is_empty() {
                let n = (bs - at % bs).min(bytes.len() as u64) as usize;
                let (part, rest) = bytes.split_at(n);
                pieces.push((at, part, crate::crc::crc32c(part)));
                at += n as u64;
                bytes = rest;
            }
        }
        // The pieces of one datanode go together: up to a block's bytes (what one request
        // may carry) and SCATTER_PIECES pieces per request, whatever blocks they are in.
        type Batch<'a> = (Vec<(u64, &'a [u8], u32)>, u64, Vec<pb::Grant>);
        let mut batches: HashMap<(SocketAddr, u64), Batch<'_>> = HashMap::new();
        for &(at, bytes, crc) in &pieces {
            let loc = match self.location(at / bs).await {
                Ok(loc) => loc,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            };
            let key = (loc.address, loc.datanode.0);
            let full = batches.get(&key).is_some_and(|(batch, sum, _)| {
                batch.len() >= SCATTER_PIECES || sum + bytes.len() as u64 > bs
            });
            if full && let Some((batch, _, grants)) = batches.remove(&key) {
                self.send_batch(key, batch, grants).await?;
            }
            let (batch, sum, grants) = batches.entry(key).or_default();
            batch.push((loc.offset + at % bs, bytes, crc));
            *sum += bytes.len() as u64;
            // Sorted and deduplicated when sent; consecutive pieces share their block often.
            if grants.last().is_none_or(|g| g.block != loc.offset) {
                grants.push(Target::of(&loc).wire_grant());
            }
        }
        for (key, (batch, _, grants)) in batches {
            self.send_batch(key, batch, grants).await?;
        }
        if let Some(&(at, bytes, _)) = pieces.last() {
            self.pos = at + bytes.len() as u64;
            self.staged_at = self.pos;
        }
        Ok(())
    }

    /// Sends `batch` (storage offset, bytes, crc32c; each inside one block of datanode `dn` at
    /// `address`, whose grants are `grants`) as scattered writes: one request, or more where
    /// offsets lie more than 4 GiB apart.
    async fn send_batch(
        &mut self,
        (address, dn): (SocketAddr, u64),
        mut batch: Vec<(u64, &[u8], u32)>,
        mut grants: Vec<pb::Grant>,
    ) -> Result<()> {
        batch.sort_unstable_by_key(|p| p.0);
        grants.sort_unstable_by_key(|g| g.block);
        grants.dedup_by_key(|g| g.block);
        let bs = self.block_size;
        let sent = async {
            let conn = self.store.datanode(address).await?;
            let mut rest = batch.as_slice();
            while let Some(&(base, _, _)) = rest.first() {
                let n = rest
                    .iter()
                    .take_while(|p| p.0 - base <= u64::from(u32::MAX))
                    .count();
                let (now, later) = rest.split_at(n);
                rest = later;
                let pieces: Vec<(u32, &[u8], u32)> = now
                    .iter()
                    .map(|&(at, bytes, crc)| ((at - base) as u32, bytes, crc))
                    .collect();
                // The grants of this request's blocks: those from its first piece's to its
                // last's.
                let last = now.last().map_or(base, |p| p.0);
                let from = grants.partition_point(|g| g.block < base - base % bs);
                let to = grants.partition_point(|g| g.block <= last);
                let mine = grants[from..to.max(from)].to_vec();
                let reply = conn.write_scattered(dn, mine, base, &pieces).await;
                self.inflight.push(Box::pin(reply));
                self.settle(self.outstanding - 1).await?;
            }
            Ok(())
        }
        .await;
        if sent.is_err() {
            self.failed = true;
        }
        sent
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
        let len = len as u64;
        self.appended = match self.appended {
            Some((end, sum)) if end == at => Some((end + len, crate::crc::combine(sum, crc, len))),
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
            let reply = conn.write_from(Target::of(&loc), base, data, crc).await;
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
            let to = Target::of(&loc);
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
                pieces.push(conn.write(to, base + done as u64, bytes, crc).await);
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
