//! A data-plane connection's input and output besides its requests: the attach step of a
//! same-host connection, and the writer that batches replies and sends read payloads straight
//! from the tier.

use std::future::Future;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::tier::Detach;
use crate::error::{Error, Result};
use crate::local::{self, Staging};
use crate::proto as pb;
use crate::wire::frame::{self, FLAG_RESPONSE};
use crate::wire::io::Stream;
use crate::wire::kind::Kind;

/// Largest request message (not payload) a datanode accepts.
pub(super) const MAX_REQUEST_BODY: usize = 64 << 10;

/// Payloads up to this size are copied into the reply batch; larger ones are sent on their own.
pub(super) const INLINE_PAYLOAD: usize = 16 << 10;

pub(super) const FLUSH_AT: usize = 256 << 10;

pub(super) enum Reply<R> {
    Written {
        id: u64,
    },
    Data {
        id: u64,
        read: R,
        crc: u32,
        /// 1 + the staging slot to put the bytes in; 0: after the reply frame.
        slot: u32,
    },
    Failed {
        id: u64,
        error: Error,
    },
    /// The connection cannot go on: say why (request id 0) and close.
    Fatal(Error),
}

pub(super) fn no_staging() -> Error {
    Error::Unsupported {
        feature: "staging slots".into(),
        reason: "this connection has no staging memory (only same-host connections attach it)"
            .into(),
    }
}

pub(super) fn slot_error(staging: &Staging, slot: u32, len: usize) -> Error {
    Error::BadRange {
        offset: u64::from(slot),
        length: len as u64,
        reason: format!(
            "not inside a staging slot ({} slots of {} bytes)",
            staging.slots(),
            staging.slot_size()
        ),
    }
}

/// A stream a connection may attach staging memory on: only the Unix socket does.
pub(crate) trait Attach: Stream {
    /// Runs the attach step if this kind of connection has one.
    fn attach(
        &mut self,
        rbuf: &mut BytesMut,
    ) -> impl Future<Output = Result<Option<Staging>>> + Send;
}

impl Attach for tokio::net::TcpStream {
    async fn attach(&mut self, _rbuf: &mut BytesMut) -> Result<Option<Staging>> {
        Ok(None)
    }
}

impl Attach for crate::wire::tls::TlsStream {
    async fn attach(&mut self, _rbuf: &mut BytesMut) -> Result<Option<Staging>> {
        Ok(None)
    }
}

impl Attach for UnixStream {
    /// The first frame after the handshake must be an Attach with its memory file.
    async fn attach(&mut self, rbuf: &mut BytesMut) -> Result<Option<Staging>> {
        let mut fd = None;
        let frame = loop {
            if let Some(frame) = frame::decode(rbuf, MAX_REQUEST_BODY)? {
                break frame;
            }
            if local::recv_with_fd(self, rbuf, &mut fd).await? == 0 {
                return Err(Error::ConnectionLost {
                    addr: "a local client".into(),
                    reason: "closed before attaching staging memory".into(),
                });
            }
        };
        if Kind::from_u16(frame.kind) != Some(Kind::Attach) {
            return Err(Error::UnexpectedMessage {
                expected: "an attach request first on a local connection".into(),
                kind: u32::from(frame.kind),
            });
        }
        let req: pb::AttachRequest = frame.decode_body("attach request")?;
        let fd = fd.ok_or_else(|| Error::Unsupported {
            feature: "staging memory".into(),
            reason: "no memory file came with the attach request".into(),
        })?;
        let staging = Staging::attach(fd, req.slot_size, req.slots)?;
        let mut out = BytesMut::new();
        encode(&mut out, Kind::Attach, frame.id, &pb::AttachReply {})
            .and(self.write_all(&out).await)?;
        Ok(Some(staging))
    }
}

/// Bytes of read replies a stalled connection copies out of the tier while it waits (beyond
/// this, replies stay queued, their blocks locked, and the connection stops taking requests).
const DETACHED_MAX: usize = 64 << 20;

/// Replies taken off the queue while the socket was stalled, their reads detached.
struct Held<R> {
    replies: std::collections::VecDeque<Reply<R>>,
    bytes: usize,
}

impl<R: AsRef<[u8]> + Detach> Reply<R> {
    /// With its read's bytes in memory of their own.
    fn detached(self) -> Self {
        match self {
            Reply::Data {
                id,
                read,
                crc,
                slot,
            } => Reply::Data {
                id,
                read: read.detach(),
                crc,
                slot,
            },
            other => other,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Reply::Data { read, .. } => read.as_ref().len(),
            _ => 0,
        }
    }
}

impl<R: AsRef<[u8]> + Detach> Held<R> {
    fn take(&mut self, reply: Reply<R>) {
        let reply = reply.detached();
        self.bytes += reply.payload_len();
        self.replies.push_back(reply);
    }

    fn next(&mut self, rx: &mut mpsc::Receiver<Reply<R>>) -> Option<Reply<R>> {
        match self.replies.pop_front() {
            Some(reply) => {
                self.bytes -= reply.payload_len();
                Some(reply)
            }
            None => rx.try_recv().ok(),
        }
    }
}

/// Sends replies in batches, read payloads straight from the tier. Nothing waits for the
/// socket with a block locked: a payload the socket does not take at once is copied out
/// (detached) before the wait, and so is every read reply that queues up meanwhile (up to
/// [`DETACHED_MAX`] bytes), so a reader that stops reading holds up no writer.
pub(super) async fn write_replies<R: AsRef<[u8]> + Detach, W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Reply<R>>,
    staging: Option<Arc<Staging>>,
) {
    let mut out = BytesMut::with_capacity(64 << 10);
    let mut held = Held {
        replies: std::collections::VecDeque::new(),
        bytes: 0,
    };
    loop {
        let first = match held.next(&mut rx) {
            Some(reply) => reply,
            None => match rx.recv().await {
                Some(reply) => reply,
                None => break,
            },
        };
        let mut next = Some(first);
        let mut fatal = false;
        while let Some(reply) = next.take() {
            let sent = match reply {
                Reply::Written { id } => encode(&mut out, Kind::Write, id, &pb::WriteReply {}),
                Reply::Failed { id, error } => {
                    frame::encode_error(&mut out, id, &error);
                    Ok(())
                }
                Reply::Fatal(error) => {
                    frame::encode_error(&mut out, 0, &error);
                    fatal = true;
                    Ok(())
                }
                Reply::Data {
                    id,
                    read,
                    crc,
                    slot,
                } => {
                    let payload = read.as_ref();
                    let header = pb::ReadReply {
                        length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                        crc32c: crc,
                        slot,
                    };
                    // Checked when the request came: the staging exists and the slot fits.
                    let staged = match (slot, &staging) {
                        (0, _) => None,
                        (slot, Some(st)) => Some(st.copy_in(slot - 1, payload)),
                        (_, None) => Some(Err(no_staging())),
                    };
                    match staged {
                        Some(Ok(())) => encode(&mut out, Kind::Read, id, &header),
                        Some(Err(error)) => {
                            frame::encode_error(&mut out, id, &error);
                            Ok(())
                        }
                        None => match encode(&mut out, Kind::Read, id, &header) {
                            Ok(()) if payload.len() <= INLINE_PAYLOAD => {
                                out.extend_from_slice(payload);
                                Ok(())
                            }
                            Ok(()) => {
                                send_payload(&mut wr, &mut out, read, &mut rx, &mut held).await
                            }
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        },
                    }
                }
            };
            if sent.is_err() || fatal {
                break;
            }
            if out.len() >= FLUSH_AT && flush(&mut wr, &mut out, &mut rx, &mut held).await.is_err()
            {
                return;
            }
            next = held.next(&mut rx);
        }
        if flush(&mut wr, &mut out, &mut rx, &mut held).await.is_err() || fatal {
            let _ = wr.shutdown().await;
            return;
        }
    }
    let _ = flush(&mut wr, &mut out, &mut rx, &mut held).await;
    let _ = wr.shutdown().await;
}

/// Sends the batch in `out`, then `read`'s payload: what the socket takes at once from the
/// tier, the rest detached first.
async fn send_payload<R: AsRef<[u8]> + Detach, W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut BytesMut,
    read: R,
    rx: &mut mpsc::Receiver<Reply<R>>,
    held: &mut Held<R>,
) -> std::io::Result<()> {
    let batch = write_ready(wr, out).await?;
    let done = match batch == out.len() {
        true => write_ready(wr, read.as_ref()).await?,
        false => 0,
    };
    let payload_len = read.as_ref().len();
    if batch == out.len() && done == payload_len {
        out.clear();
        return wr.flush().await;
    }
    let read = read.detach();
    out.advance(batch);
    write_waiting(wr, out, rx, held).await?;
    out.clear();
    write_waiting(wr, &read.as_ref()[done..], rx, held).await?;
    wr.flush().await
}

/// Writes what the socket takes of `bytes` without waiting; returns how much.
async fn write_ready<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> std::io::Result<usize> {
    let mut done = 0;
    std::future::poll_fn(|cx| {
        while done < bytes.len() {
            match std::pin::Pin::new(&mut *wr).poll_write(cx, &bytes[done..]) {
                std::task::Poll::Ready(Ok(0)) => {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                std::task::Poll::Ready(Ok(n)) => done += n,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => break,
            }
        }
        std::task::Poll::Ready(Ok(done))
    })
    .await
}

/// Writes `bytes`, waiting for the socket as long as it takes; meanwhile the replies that queue
/// up are taken off the queue with their reads detached.
async fn write_waiting<R: AsRef<[u8]> + Detach, W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    rx: &mut mpsc::Receiver<Reply<R>>,
    held: &mut Held<R>,
) -> std::io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        tokio::select! {
            biased;
            written = wr.write(&bytes[done..]) => match written? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => done += n,
            },
            Some(reply) = rx.recv(), if held.bytes < DETACHED_MAX => held.take(reply),
        }
    }
    Ok(())
}

pub(super) fn encode<M: prost::Message>(
    out: &mut BytesMut,
    kind: Kind,
    id: u64,
    msg: &M,
) -> std::io::Result<()> {
    frame::encode(out, kind, FLAG_RESPONSE, id, msg, MAX_REQUEST_BODY)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Sends the batch in `out` (detaching the reads that queue up meanwhile).
async fn flush<R: AsRef<[u8]> + Detach, W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut BytesMut,
    rx: &mut mpsc::Receiver<Reply<R>>,
    held: &mut Held<R>,
) -> std::io::Result<()> {
    if !out.is_empty() {
        write_waiting(wr, out, rx, held).await?;
        out.clear();
    }
    // Over TLS, ciphertext the socket did not take yet leaves with the flush.
    wr.flush().await
}
