//! Frames on a node-service connection: the store's frames (`crail_store::wire::frame`) with
//! the node services' kinds, read with the file descriptors that came with them and written
//! by one task per connection that gathers what is queued into few system calls.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};

use bytes::{Bytes, BytesMut};
use crail_store::wire::frame::{self, FLAG_FD, Frame, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::endpoint::{ReadHalf, WriteHalf};

/// Opens a session (client to server, first): `Open`.
pub(crate) const KIND_OPEN: u16 = 128;
/// Answers Open: `Opened`, or a failure.
pub(crate) const KIND_OPENED: u16 = 129;
/// A service request message.
pub(crate) const KIND_REQUEST: u16 = 130;
/// A service reply message (with the error flag: a `Failure`).
pub(crate) const KIND_REPLY: u16 = 131;
/// Raw bytes of an exchange: the body is the bytes.
pub(crate) const KIND_DATA: u16 = 132;
/// A client's sign of life on a connection with nothing else to say (no body): a server closes
/// connections idle for longer than its idle timeout. The server answers each with the same
/// kind and the response flag (a pong), by which the client knows the service still answers.
pub(crate) const KIND_PING: u16 = 133;

/// No frame's body is larger: a message (a shuffle's lent group of 100,000 partitions is about
/// 6 MiB) or a chunk of data.
pub const MAX_BODY: usize = 16 << 20;

/// Data chunks at most this long are copied into the batch with the frames around them;
/// longer ones are written from their own memory.
const COPY_DATA: usize = 16 << 10;

/// Frames queued for the writer task.
#[derive(Debug)]
pub(crate) enum Out {
    /// Whole encoded frames.
    Frames(BytesMut),
    /// One encoded frame (its fd flag set) to go with a file descriptor.
    WithFd(BytesMut, OwnedFd),
    /// A data frame: its header, and the bytes, sent without a copy.
    Data(BytesMut, Bytes),
}

/// Encodes one message frame.
pub(crate) fn message<M: prost::Message>(
    kind: u16,
    flags: u16,
    id: u64,
    msg: &M,
) -> crail_store::Result<BytesMut> {
    let mut out = BytesMut::new();
    frame::encode_kind(&mut out, kind, flags, id, msg, MAX_BODY)?;
    Ok(out)
}

/// A data frame of exchange `id` carrying `bytes` (at most [`MAX_BODY`]).
pub(crate) fn data(id: u64, flags: u16, bytes: Bytes) -> Out {
    let mut header = BytesMut::with_capacity(HEADER_LEN);
    frame::put_header(&mut header, KIND_DATA, flags, id, bytes.len());
    Out::Data(header, bytes)
}

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection between frames.
    Closed,
    /// Nothing came for the reader's idle limit.
    Idle,
    /// Anything else: I/O, a frame past the limit, unknown flags, a missing descriptor.
    Bad(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("connection closed"),
            Self::Idle => f.write_str("idle for too long"),
            Self::Bad(problem) => f.write_str(problem),
        }
    }
}

/// Reads frames off one connection.
#[derive(Debug)]
pub(crate) struct FrameReader {
    half: ReadHalf,
    buf: BytesMut,
    /// Descriptors received, oldest first, for the frames flagged to carry them.
    fds: VecDeque<OwnedFd>,
    /// Whether descriptors are taken (clients); a server never accepts one.
    take_fds: bool,
    /// How long the rest of a frame may take once it began (servers); `None`: no limit.
    stall: Option<std::time::Duration>,
    /// How long a connection may send nothing between frames (servers); `None`: no limit.
    idle: Option<std::time::Duration>,
}

impl FrameReader {
    /// A reader over `half`, starting with the bytes `buf` already holds (what came after the
    /// handshake).
    pub(crate) fn new(half: ReadHalf, buf: BytesMut, take_fds: bool) -> Self {
        Self {
            half,
            buf,
            fds: VecDeque::new(),
            take_fds,
            stall: None,
            idle: None,
        }
    }

    /// Ends with [`ReadError::Idle`] when nothing comes between frames for `after` (zero:
    /// never).
    pub(crate) fn idle_after(mut self, after: std::time::Duration) -> Self {
        self.idle = (!after.is_zero()).then_some(after);
        self
    }

    /// Drops the peer (a `Bad` read) if it stalls inside a frame for `after`.
    pub(crate) fn stall_after(mut self, after: std::time::Duration) -> Self {
        self.stall = Some(after);
        self
    }

    /// The next frame, with its descriptor when it carries one.
    pub(crate) async fn next(&mut self) -> Result<(Frame, Option<OwnedFd>), ReadError> {
        loop {
            match frame::decode(&mut self.buf, MAX_BODY) {
                Ok(Some(frame)) => {
                    if frame.flags & FLAG_FD == 0 {
                        return Ok((frame, None));
                    }
                    return match self.fds.pop_front() {
                        Some(fd) => Ok((frame, Some(fd))),
                        None => Err(ReadError::Bad(
                            "a frame announced a file descriptor that did not come".into(),
                        )),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Bad(e.to_string())),
            }
            let n = match (self.stall, self.idle) {
                (Some(after), _) if !self.buf.is_empty() => {
                    tokio::time::timeout(after, self.fill())
                        .await
                        .map_err(|_| {
                            ReadError::Bad(format!(
                                "stalled inside a frame for {}ms",
                                after.as_millis()
                            ))
                        })?
                }
                (_, Some(idle)) if self.buf.is_empty() => tokio::time::timeout(idle, self.fill())
                    .await
                    .map_err(|_| ReadError::Idle)?,
                _ => self.fill().await,
            }
            .map_err(|e| ReadError::Bad(e.to_string()))?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::Closed
                } else {
                    ReadError::Bad("connection closed inside a frame".into())
                });
            }
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 16 << 10 {
            self.buf.reserve(64 << 10);
        }
        match &mut self.half {
            ReadHalf::Unix(half) if self.take_fds => {
                // recvmsg needs initialised memory: some room is zeroed (at most 64 KiB, so
                // an announced length reserves no memory that is then touched), then cut back.
                let len = self.buf.len();
                let room = (self.buf.capacity() - len).min(64 << 10);
                self.buf.resize(len + room, 0);
                let mut fd = None;
                let got = crail_store::wire::recv_into_with_fd(
                    half.as_ref(),
                    &mut self.buf[len..],
                    &mut fd,
                )
                .await;
                self.buf.truncate(len + *got.as_ref().unwrap_or(&0));
                self.fds.extend(fd);
                got
            }
            ReadHalf::Unix(half) => half.read_buf(&mut self.buf).await,
            ReadHalf::Tcp(half) => half.read_buf(&mut self.buf).await,
            ReadHalf::Tls(half) => half.read_buf(&mut self.buf).await,
        }
    }
}

/// Writes what `queue` brings until it closes or the connection breaks. Frames queued
/// together leave in one write.
pub(crate) async fn drain(mut half: WriteHalf, mut queue: mpsc::Receiver<Out>) {
    let mut batch = BytesMut::new();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            if let Err(e) = put(&mut half, &mut batch, out).await {
                tracing::debug!("node service connection: write failed: {e}");
                return;
            }
            next = queue.try_recv().ok();
        }
        if let Err(e) = flush(&mut half, &mut batch).await {
            tracing::debug!("node service connection: write failed: {e}");
            return;
        }
    }
    let _ = shutdown(&mut half).await;
}

async fn put(half: &mut WriteHalf, batch: &mut BytesMut, out: Out) -> std::io::Result<()> {
    match out {
        Out::Frames(frames) => batch.extend_from_slice(&frames),
        Out::Data(header, bytes) if bytes.len() <= COPY_DATA => {
            batch.extend_from_slice(&header);
            batch.extend_from_slice(&bytes);
        }
        Out::Data(header, bytes) => {
            batch.extend_from_slice(&header);
            flush(half, batch).await?;
            write(half, &bytes).await?;
        }
        Out::WithFd(frame, fd) => {
            flush(half, batch).await?;
            match half {
                WriteHalf::Unix(unix) => {
                    crail_store::wire::send_with_fd(unix.as_ref(), &frame, fd.as_fd()).await?;
                }
                WriteHalf::Tcp(_) | WriteHalf::Tls(_) => {
                    return Err(std::io::Error::other(
                        "a file descriptor cannot travel over TCP",
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn flush(half: &mut WriteHalf, batch: &mut BytesMut) -> std::io::Result<()> {
    if !batch.is_empty() {
        write(half, batch).await?;
        batch.clear();
    }
    if let WriteHalf::Tls(w) = half {
        // Ciphertext the socket did not take yet leaves with the flush.
        w.flush().await?;
    }
    Ok(())
}

async fn write(half: &mut WriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    match half {
        WriteHalf::Tcp(w) => w.write_all(bytes).await,
        WriteHalf::Tls(w) => w.write_all(bytes).await,
        WriteHalf::Unix(w) => w.write_all(bytes).await,
    }
}

async fn shutdown(half: &mut WriteHalf) -> std::io::Result<()> {
    match half {
        WriteHalf::Tcp(w) => w.shutdown().await,
        WriteHalf::Tls(w) => w.shutdown().await,
        WriteHalf::Unix(w) => w.shutdown().await,
    }
}
