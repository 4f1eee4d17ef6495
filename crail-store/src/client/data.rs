//! The client side of the data plane: one pipelined connection per datanode.
//!
//! Calls enqueue a request for the connection's writer task and get a [`Pending`] reply future
//! back at once, so a stream keeps several block operations in flight without spawning. A
//! write's payload travels as [`Bytes`] (a pooled [`Buffer`] frozen without a copy) and is
//! written to the socket from where it lies. A read names a caller's buffer: the reader task
//! receives the payload straight into it, checks its crc32c, and hands the buffer back.
//!
//! Liveness is per connection, not per call: if requests are outstanding and the datanode
//! sends nothing for the data timeout, the connection is closed and every call on it fails
//! with [`Error::Timeout`]. A datanode that dies fails them at once with
//! [`Error::ConnectionLost`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::rpc::{Endpoint, connect_and_greet};
use crate::buffer::Buffer;
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::wire::frame;
use crate::wire::io;
use crate::wire::kind::Kind;

const MAX_REPLY_BODY: usize = 64 << 10;
const INLINE_PAYLOAD: usize = 16 << 10;
const QUEUE: usize = 256;

enum Out {
    Write {
        id: u64,
        datanode: u64,
        offset: u64,
        crc: u32,
        payload: Bytes,
    },
    Read {
        id: u64,
        datanode: u64,
        offset: u64,
        len: u32,
    },
}

enum Waiter {
    Write(oneshot::Sender<Result<()>>),
    Read {
        buf: Buffer,
        at: usize,
        len: usize,
        offset: u64,
        tx: oneshot::Sender<Result<Buffer>>,
    },
}

impl Waiter {
    fn fail(self, error: Error) {
        match self {
            Waiter::Write(tx) => {
                let _ = tx.send(Err(error));
            }
            Waiter::Read { tx, .. } => {
                let _ = tx.send(Err(error));
            }
        }
    }
}

#[derive(Default)]
struct Table {
    waiting: HashMap<u64, Waiter>,
    closed: Option<Closed>,
}

#[derive(Clone)]
enum Closed {
    Server(pb::ErrorReply),
    Lost(String),
    Silent(Duration),
}

struct Shared {
    addr: SocketAddr,
    table: Mutex<Table>,
}

impl Shared {
    fn error(&self, why: &Closed) -> Error {
        match why {
            Closed::Server(reply) => Error::from_reply(reply.clone()),
            Closed::Lost(reason) => Error::ConnectionLost {
                addr: self.addr.to_string(),
                reason: reason.clone(),
            },
            Closed::Silent(after) => Error::Timeout {
                what: format!("data requests to {}", self.addr),
                after_ms: after.as_millis().try_into().unwrap_or(u64::MAX),
            },
        }
    }

    fn close(&self, why: Closed) {
        let waiting = {
            let mut table = self.table.lock();
            if table.closed.is_none() {
                table.closed = Some(why.clone());
            }
            std::mem::take(&mut table.waiting)
        };
        for (_, waiter) in waiting {
            waiter.fail(self.error(&why));
        }
    }

    fn take(&self, id: u64) -> Option<Waiter> {
        self.table.lock().waiting.remove(&id)
    }
}

/// The reply of a data-plane call, on its way.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    rx: oneshot::Receiver<Result<T>>,
    addr: SocketAddr,
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ConnectionLost {
                addr: self.addr.to_string(),
                reason: "connection closed".into(),
            })),
        }
    }
}

/// One connection to a datanode. Dropping the last handle closes it.
pub(crate) struct DataConn {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Out>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for DataConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataConn")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

impl DataConn {
    /// Connects and runs the handshake.
    pub(crate) async fn open(
        addr: SocketAddr,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Self> {
        let (stream, rbuf) = connect_and_greet(&addr.to_string(), endpoint, "datanode ").await?;
        let shared = Arc::new(Shared {
            addr,
            table: Mutex::new(Table::default()),
        });
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(read_replies(rd, rbuf, shared.clone(), timeout));
        tokio::spawn(write_requests(wr, rx, shared.clone()));
        Ok(Self {
            shared,
            tx,
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether the connection is gone (a new one is needed).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.table.lock().closed.is_some() || self.tx.is_closed()
    }

    /// Records a waiter and returns its request id; on a closed connection fails it instead.
    fn register(&self, waiter: Waiter) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut table = self.shared.table.lock();
        if let Some(why) = &table.closed {
            let error = self.shared.error(why);
            drop(table);
            waiter.fail(error);
            return None;
        }
        table.waiting.insert(id, waiter);
        Some(id)
    }

    async fn send(&self, out: Out, id: u64) {
        if self.tx.send(out).await.is_err()
            && let Some(waiter) = self.shared.take(id)
        {
            waiter.fail(Error::ConnectionLost {
                addr: self.shared.addr.to_string(),
                reason: "connection closed".into(),
            });
        }
    }

    /// Sends `payload` for storage offset `offset` (inside one block) of the datanode
    /// registered as `datanode`.
    pub(crate) async fn write(&self, datanode: u64, offset: u64, payload: Bytes) -> Pending<()> {
        let crc = crate::crc::crc32c(&payload);
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            rx,
            addr: self.shared.addr,
        };
        if let Some(id) = self.register(Waiter::Write(tx)) {
            let out = Out::Write {
                id,
                datanode,
                offset,
                crc,
                payload,
            };
            self.send(out, id).await;
        }
        pending
    }

    /// Reads `len` bytes at storage offset `offset` into `buf[at..at + len]` (which must fit).
    /// The buffer comes back with its length set to `at + len`.
    pub(crate) async fn read(
        &self,
        datanode: u64,
        offset: u64,
        len: usize,
        buf: Buffer,
        at: usize,
    ) -> Pending<Buffer> {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            rx,
            addr: self.shared.addr,
        };
        let waiter = Waiter::Read {
            buf,
            at,
            len,
            offset,
            tx,
        };
        if at + len > waiter_capacity(&waiter) {
            waiter.fail(Error::BadRange {
                offset,
                length: len as u64,
                reason: "does not fit the buffer".into(),
            });
            return pending;
        }
        if let Some(id) = self.register(waiter) {
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            let out = Out::Read {
                id,
                datanode,
                offset,
                len,
            };
            self.send(out, id).await;
        }
        pending
    }
}

fn waiter_capacity(waiter: &Waiter) -> usize {
    match waiter {
        Waiter::Read { buf, .. } => buf.capacity(),
        Waiter::Write(_) => 0,
    }
}

impl Drop for DataConn {
    fn drop(&mut self) {
        self.shared
            .close(Closed::Lost("connection closed by this client".into()));
    }
}

async fn write_requests(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Out>, shared: Arc<Shared>) {
    let mut out = BytesMut::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Out::Read {
                    id,
                    datanode,
                    offset,
                    len,
                } => encode(
                    &mut out,
                    Kind::Read,
                    id,
                    &pb::ReadRequest {
                        offset,
                        length: len,
                        datanode,
                    },
                ),
                Out::Write {
                    id,
                    datanode,
                    offset,
                    crc,
                    payload,
                } => {
                    let header = pb::WriteRequest {
                        offset,
                        length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                        crc32c: crc,
                        datanode,
                    };
                    encode(&mut out, Kind::Write, id, &header);
                    if payload.len() <= INLINE_PAYLOAD {
                        out.extend_from_slice(&payload);
                    } else if let Err(e) = flush(&mut wr, &mut out)
                        .await
                        .and(wr.write_all(&payload).await)
                    {
                        shared.close(Closed::Lost(e.to_string()));
                        return;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = flush(&mut wr, &mut out).await {
            shared.close(Closed::Lost(e.to_string()));
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn encode<M: prost::Message>(out: &mut BytesMut, kind: Kind, id: u64, msg: &M) {
    // Request messages are a few fixed-size integers: far below any frame limit.
    let _ = frame::encode(out, kind, 0, id, msg, MAX_REPLY_BODY);
}

async fn flush(wr: &mut OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        wr.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

async fn read_replies(
    rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    shared: Arc<Shared>,
    silence: Duration,
) {
    let why = loop {
        match next_reply(&rd, &mut rbuf, &shared, silence).await {
            Ok(true) => {}
            Ok(false) => break Closed::Lost("closed by the datanode".into()),
            Err(why) => break why,
        }
    };
    shared.close(why);
}

/// Handles one reply. `Ok(false)`: the datanode closed the connection.
async fn next_reply(
    rd: &OwnedReadHalf,
    rbuf: &mut BytesMut,
    shared: &Shared,
    silence: Duration,
) -> std::result::Result<bool, Closed> {
    let frame = loop {
        match frame::decode(rbuf, MAX_REPLY_BODY) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(e) => return Err(Closed::Lost(format!("bad reply frame: {e}"))),
        }
        // Always bounded: a request registered while this read waits is covered too. Silence
        // with nothing outstanding is fine; with requests outstanding it kills the connection.
        let got = match tokio::time::timeout(silence, io::read_some(rd.as_ref(), rbuf)).await {
            Ok(got) => got,
            Err(_) if shared.table.lock().waiting.is_empty() => continue,
            Err(_) => return Err(Closed::Silent(silence)),
        };
        match got {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(Closed::Lost(e.to_string())),
        }
    };
    if frame.is_error() {
        if frame.id == 0 {
            return Err(match frame.decode_body::<pb::ErrorReply>("error reply") {
                Ok(reply) => Closed::Server(reply),
                Err(e) => Closed::Lost(e.to_string()),
            });
        }
        if let Some(waiter) = shared.take(frame.id) {
            waiter.fail(frame.into_error());
        }
        return Ok(true);
    }
    match Kind::from_u16(frame.kind) {
        Some(Kind::Write) => {
            match shared.take(frame.id) {
                Some(Waiter::Write(tx)) => {
                    let _ = tx.send(Ok(()));
                }
                Some(other) => other.fail(Error::malformed("reply", "a write reply to a read")),
                None => {}
            }
            Ok(true)
        }
        Some(Kind::Read) => {
            let reply: pb::ReadReply = frame
                .decode_body("read reply")
                .map_err(|e| Closed::Lost(e.to_string()))?;
            let len = reply.length as usize;
            match shared.take(frame.id) {
                Some(Waiter::Read {
                    mut buf,
                    at,
                    len: wanted,
                    offset,
                    tx,
                }) if wanted == len => {
                    let dst = &mut buf.whole_mut()[at..at + len];
                    tokio::time::timeout(silence, io::read_payload(rd.as_ref(), rbuf, dst))
                        .await
                        .map_err(|_| Closed::Silent(silence))?
                        .map_err(lost)?;
                    let crc = crate::crc::crc32c(dst);
                    buf.set_len(at + len);
                    let result = if crc == reply.crc32c {
                        Ok(buf)
                    } else {
                        Err(Error::ChecksumMismatch {
                            location: format!("read from datanode {}", shared.addr),
                            offset,
                            expected: reply.crc32c,
                            actual: crc,
                        })
                    };
                    let _ = tx.send(result);
                }
                Some(waiter) => {
                    tokio::time::timeout(silence, io::skip_payload(rd.as_ref(), rbuf, len))
                        .await
                        .map_err(|_| Closed::Silent(silence))?
                        .map_err(lost)?;
                    waiter.fail(Error::malformed(
                        "read reply",
                        "length differs from the request",
                    ));
                }
                None => tokio::time::timeout(silence, io::skip_payload(rd.as_ref(), rbuf, len))
                    .await
                    .map_err(|_| Closed::Silent(silence))?
                    .map_err(lost)?,
            }
            Ok(true)
        }
        _ => Err(Closed::Lost(format!(
            "unexpected reply kind {}",
            frame.kind
        ))),
    }
}

fn lost(e: std::io::Error) -> Closed {
    Closed::Lost(e.to_string())
}
