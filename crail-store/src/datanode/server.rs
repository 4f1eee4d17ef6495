//! The data-plane server: accept loop and connections, generic over the tier.
//!
//! A connection has two halves. The reader takes requests in order: a write's payload goes
//! from the socket straight into the tier's write target (the DRAM region itself, or the flash
//! tier's aligned staging buffer); a read runs inline (DRAM: a lock and a checksum pass) or as
//! its own task (flash: it waits for the device). The writer sends replies as they complete,
//! a read's bytes straight from the tier. Replies carry request ids, so order does not matter
//! and several requests are in flight per connection. The reply queue is bounded: a client that
//! stops reading stops being read.
//!
//! Bad requests fail alone: a range outside the storage, a wrong checksum, an unknown message
//! kind each get a typed error reply, and the connection goes on. Only a request whose payload
//! cannot be skipped (undecodable, or longer than a block) closes the connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};

use super::tier::Tier;
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::wire::frame::{self, FLAG_RESPONSE, Frame};
use crate::wire::handshake::{self, Secret};
use crate::wire::io;
use crate::wire::kind::Kind;

const READ_BUFFER: usize = 64 << 10;
/// Largest request message (not payload) a datanode accepts.
const MAX_REQUEST_BODY: usize = 4 << 10;
/// Replies queued per connection before its reader waits.
const REPLY_QUEUE: usize = 64;
/// Payloads up to this size are copied into the reply batch; larger ones are sent on their own.
const INLINE_PAYLOAD: usize = 16 << 10;
const FLUSH_AT: usize = 256 << 10;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every connection needs to know.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) secret: Option<Secret>,
    pub(crate) handshake_timeout: Duration,
    /// How long a write's payload may take to arrive (its block is locked meanwhile).
    pub(crate) payload_timeout: Duration,
    pub(crate) block_size: u64,
    pub(crate) max_connections: usize,
    /// This datanode's id now (the heartbeat loop changes it when registering again).
    pub(crate) id: Arc<AtomicU64>,
}

/// Serves `tier` on `listener` until `shutdown`.
pub(crate) async fn serve<T: Tier>(
    listener: TcpListener,
    tier: Arc<T>,
    settings: Arc<Settings>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let (stop_tx, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = limit.clone().try_acquire_owned().ok();
        let conn = Conn {
            tier: tier.clone(),
            settings: settings.clone(),
            reads: Arc::new(Semaphore::new(REPLY_QUEUE)),
        };
        let (stop, done) = (stop_tx.subscribe(), done_tx.clone());
        tokio::spawn(async move {
            conn.run(stream, peer, permit, stop).await;
            drop(done);
        });
    }
    drop(stop_tx);
    drop(done_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("data connections still open after {SHUTDOWN_GRACE:?}");
    }
    Ok(())
}

enum Reply<R> {
    Written {
        id: u64,
    },
    Data {
        id: u64,
        read: R,
        crc: u32,
    },
    Failed {
        id: u64,
        error: Error,
    },
    /// The connection cannot go on: say why (request id 0) and close.
    Fatal(Error),
}

struct Conn<T> {
    tier: Arc<T>,
    settings: Arc<Settings>,
    /// Reads running as tasks of their own, at most `REPLY_QUEUE` per connection: each holds a
    /// staging buffer, so a client pipelining tiny reads cannot make the datanode allocate
    /// without bound.
    reads: Arc<Semaphore>,
}

impl<T: Tier> Conn<T> {
    async fn run(
        self,
        mut stream: TcpStream,
        peer: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
        mut stop: broadcast::Receiver<()>,
    ) {
        let _ = stream.set_nodelay(true);
        if permit.is_none() {
            let busy = Error::ServerBusy {
                limit: self.settings.max_connections as u64,
            };
            handshake::send_error(&mut stream, &busy).await;
            return;
        }
        let mut rbuf = BytesMut::with_capacity(READ_BUFFER);
        let s = &self.settings;
        let handshake = handshake::server(
            &mut stream,
            &mut rbuf,
            s.secret.as_ref(),
            "datanode",
            s.handshake_timeout,
        );
        let client = tokio::select! {
            result = handshake => result,
            _ = stop.recv() => return,
        };
        if let Err(e) = client {
            tracing::debug!(%peer, error = %e, "data handshake failed");
            return;
        }
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        let writer = tokio::spawn(write_replies(wr, rx));
        tokio::select! {
            end = self.read_requests(&rd, rbuf, &tx) => {
                if let Err(error) = end {
                    tracing::debug!(%peer, %error, "data connection closed");
                    let _ = tx.send(Reply::Fatal(error)).await;
                }
            }
            _ = stop.recv() => {
                let _ = tx.send(Reply::Fatal(Error::ShuttingDown)).await;
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    /// Reads and handles requests until the peer closes (`Ok`) or the stream cannot go on.
    async fn read_requests(
        &self,
        rd: &OwnedReadHalf,
        mut rbuf: BytesMut,
        tx: &mpsc::Sender<Reply<T::Read>>,
    ) -> Result<()> {
        loop {
            let Some(frame) = frame::decode(&mut rbuf, MAX_REQUEST_BODY)? else {
                if io::read_some(rd.as_ref(), &mut rbuf).await? == 0 {
                    return Ok(());
                }
                continue;
            };
            let id = frame.id;
            let reply = match Kind::from_u16(frame.kind) {
                _ if frame.flags & FLAG_RESPONSE != 0 => Some(Reply::Failed {
                    id,
                    error: Error::UnexpectedMessage {
                        expected: "a request".into(),
                        kind: u32::from(frame.kind),
                    },
                }),
                Some(Kind::Write) => Some(self.write(&frame, rd, &mut rbuf).await?),
                Some(Kind::Read) => self.read(&frame, tx).await,
                Some(_) => Some(Reply::Failed {
                    id,
                    error: Error::UnexpectedMessage {
                        expected: "a data request (write or read)".into(),
                        kind: u32::from(frame.kind),
                    },
                }),
                None => Some(Reply::Failed {
                    id,
                    error: Error::UnknownMessage {
                        kind: u32::from(frame.kind),
                    },
                }),
            };
            if let Some(reply) = reply
                && tx.send(reply).await.is_err()
            {
                return Ok(());
            }
        }
    }

    /// Checks that the location is this datanode's current one and that `[offset, offset +
    /// len)` is inside the storage and inside one block.
    fn check_range(&self, datanode: u64, offset: u64, len: usize) -> Result<()> {
        let current = self.settings.id.load(Ordering::Relaxed);
        if datanode != current {
            return Err(Error::StaleLocation {
                expected: datanode,
                current,
            });
        }
        let bad = |reason: String| Error::BadRange {
            offset,
            length: len as u64,
            reason,
        };
        let capacity = self.tier.capacity();
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| bad("overflows".into()))?;
        if end > capacity {
            return Err(bad(format!("past the capacity of {capacity} bytes")));
        }
        let bs = self.settings.block_size;
        if len > 0 && offset / bs != (end - 1) / bs {
            return Err(bad(format!(
                "crosses a block boundary (blocks of {bs} bytes)"
            )));
        }
        Ok(())
    }

    /// A write: the payload follows the frame on the stream. `Err` only when the stream cannot
    /// be trusted any more; a refused write is an `Ok(Failed)` reply.
    async fn write(
        &self,
        frame: &Frame,
        rd: &OwnedReadHalf,
        rbuf: &mut BytesMut,
    ) -> Result<Reply<T::Read>> {
        let id = frame.id;
        // Undecodable: the payload length is unknown, the stream cannot be resynchronised.
        let req: pb::WriteRequest = frame.decode_body("write request")?;
        let len = req.length as usize;
        if len as u64 > self.settings.block_size {
            return Err(Error::BadRange {
                offset: req.offset,
                length: len as u64,
                reason: format!(
                    "payload longer than a block ({} bytes)",
                    self.settings.block_size
                ),
            });
        }
        let deadline = self.settings.payload_timeout;
        let target = match self.check_range(req.datanode, req.offset, len) {
            Ok(()) if len == 0 => return Ok(Reply::Written { id }),
            // Bounded: the block may be locked by replies a slow client does not read.
            Ok(()) => tokio::time::timeout(deadline, self.tier.begin_write(req.offset, len))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        what: "waiting for the block's lock".into(),
                        after_ms: deadline.as_millis().try_into().unwrap_or(u64::MAX),
                    })
                }),
            Err(e) => Err(e),
        };
        let mut target = match target {
            Ok(target) => target,
            Err(error) => {
                with_deadline(deadline, async {
                    Ok(io::skip_payload(rd.as_ref(), rbuf, len).await?)
                })
                .await?;
                return Ok(Reply::Failed { id, error });
            }
        };
        // Dropping `target` on error marks the half-written range corrupt.
        with_deadline(deadline, async {
            Ok(io::read_payload(rd.as_ref(), rbuf, target.as_mut()).await?)
        })
        .await?;
        Ok(match self.tier.finish_write(target, req.crc32c).await {
            Ok(()) => Reply::Written { id },
            Err(error) => Reply::Failed { id, error },
        })
    }

    /// A read: answered now (`Some`) or by a task of its own (`None`).
    async fn read(
        &self,
        frame: &Frame,
        tx: &mpsc::Sender<Reply<T::Read>>,
    ) -> Option<Reply<T::Read>> {
        let id = frame.id;
        let req: pb::ReadRequest = match frame.decode_body("read request") {
            Ok(req) => req,
            Err(error) => return Some(Reply::Failed { id, error }),
        };
        let len = req.length as usize;
        if let Err(error) = self.check_range(req.datanode, req.offset, len) {
            return Some(Reply::Failed { id, error });
        }
        let tier = self.tier.clone();
        let work = async move {
            match tier.read(req.offset, len).await {
                Ok((read, crc)) => Reply::Data { id, read, crc },
                Err(error) => Reply::Failed { id, error },
            }
        };
        if T::SPAWN_READS {
            let Ok(permit) = self.reads.clone().acquire_owned().await else {
                return None;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(work.await).await;
                drop(permit);
            });
            None
        } else {
            Some(work.await)
        }
    }
}

async fn with_deadline<F: Future<Output = Result<()>>>(after: Duration, work: F) -> Result<()> {
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| Error::Timeout {
            what: "receiving a write payload".into(),
            after_ms: after.as_millis().try_into().unwrap_or(u64::MAX),
        })?
}

async fn write_replies<R: AsRef<[u8]>>(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Reply<R>>) {
    let mut out = BytesMut::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
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
                Reply::Data { id, read, crc } => {
                    let payload = read.as_ref();
                    let header = pb::ReadReply {
                        length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                        crc32c: crc,
                    };
                    match encode(&mut out, Kind::Read, id, &header) {
                        Ok(()) if payload.len() <= INLINE_PAYLOAD => {
                            out.extend_from_slice(payload);
                            Ok(())
                        }
                        Ok(()) => flush(&mut wr, &mut out)
                            .await
                            .and(wr.write_all(payload).await),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    }
                }
            };
            if sent.is_err() || fatal {
                break;
            }
            if out.len() >= FLUSH_AT && flush(&mut wr, &mut out).await.is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if flush(&mut wr, &mut out).await.is_err() || fatal {
            let _ = wr.shutdown().await;
            return;
        }
    }
    let _ = flush(&mut wr, &mut out).await;
    let _ = wr.shutdown().await;
}

fn encode<M: prost::Message>(
    out: &mut BytesMut,
    kind: Kind,
    id: u64,
    msg: &M,
) -> std::io::Result<()> {
    frame::encode(out, kind, FLAG_RESPONSE, id, msg, MAX_REQUEST_BODY)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

async fn flush(wr: &mut OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        wr.write_all(out).await?;
        out.clear();
    }
    Ok(())
}
