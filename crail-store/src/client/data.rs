//! The client side of the data plane: one pipelined connection per datanode.
//!
//! Calls enqueue a request for the connection's writer task and get a [`Pending`] reply future
//! back at once, so a stream keeps several block operations in flight without spawning. A
//! write's payload travels as [`Bytes`] (a pooled [`Buffer`] frozen without a copy) and is
//! written to the socket from where it lies. A read names a caller's buffer: the reader task
//! receives the payload straight into it, checks its crc32c, and hands the buffer back.
//!
//! To a datanode on this host the connection is a Unix socket with staging memory attached
//! (see [`crate::local`]): each request takes a slot, the payload goes through the slot, and
//! the slot comes back with the reply. Everything else is the same.
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
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::rpc::{Connected, Endpoint, IdleClock, connect_and_greet};
use crate::buffer::Buffer;
use crate::error::{Error, Result};
use crate::local::{self, Staging};
use crate::proto as pb;
use crate::wire::frame;
use crate::wire::handshake;
use crate::wire::io::{self, Stream};
use crate::wire::kind::Kind;

mod tasks;
use tasks::{read_replies, write_requests};

const MAX_REPLY_BODY: usize = 64 << 10;
const INLINE_PAYLOAD: usize = 16 << 10;
const QUEUE: usize = 256;

enum Out {
    Write {
        id: u64,
        datanode: u64,
        /// A grant for each block the write touches.
        grants: Vec<pb::Grant>,
        offset: u64,
        crc: u32,
        len: u32,
        /// Empty when the bytes are in staging slot `slot - 1`.
        payload: Bytes,
        slot: u32,
        /// A scattered write's (offset, length, crc32c) triples; empty for a contiguous one.
        pieces: Vec<u32>,
    },
    Read {
        id: u64,
        datanode: u64,
        grant: pb::Grant,
        offset: u64,
        len: u32,
        slot: u32,
    },
}

/// The block a request is for, as its location names it: the datanode's id and the grant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) datanode: u64,
    /// Storage offset of the block.
    pub(crate) block: u64,
    pub(crate) grant: crate::types::Grant,
}

impl Target {
    pub(crate) fn of(location: &crate::types::BlockLocation) -> Self {
        Self {
            datanode: location.datanode.0,
            block: location.offset,
            grant: location.grant,
        }
    }

    pub(crate) fn wire_grant(&self) -> pb::Grant {
        self.grant.to_wire(self.block)
    }
}

enum Waiter {
    /// A write of `len` bytes.
    Write(oneshot::Sender<Result<()>>, Option<Slot>, usize),
    Read {
        buf: Buffer,
        at: usize,
        len: usize,
        offset: u64,
        /// Gets the buffer and the crc32c of the bytes read into it.
        tx: oneshot::Sender<Result<(Buffer, u32)>>,
        /// Where the payload arrives, on a same-host connection.
        slot: Option<Slot>,
    },
}

impl Waiter {
    fn fail(self, error: Error) {
        match self {
            Waiter::Write(tx, ..) => {
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
    /// Staging memory, on a same-host connection.
    staging: Option<Staging>,
}

/// The staging slots of a same-host connection not in use.
#[derive(Debug)]
struct Slots {
    free: Mutex<Vec<u32>>,
    available: Semaphore,
}

/// A staging slot in use; it goes back to the pool when dropped (after the reply, or with the
/// connection).
struct Slot {
    slots: Arc<Slots>,
    index: u32,
}

impl Slots {
    fn new(count: u32) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new((0..count).rev().collect()),
            available: Semaphore::new(count as usize),
        })
    }

    async fn take(self: &Arc<Self>) -> Slot {
        // Never closed, so this only waits.
        if let Ok(permit) = self.available.acquire().await {
            permit.forget();
        }
        let index = self.free.lock().pop().unwrap_or_default();
        Slot {
            slots: self.clone(),
            index,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.free.lock().push(self.index);
        self.slots.available.add_permits(1);
    }
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
    slots: Option<Arc<Slots>>,
    /// Request size the datanode wants writes split into (0: whole buffers).
    write_piece: usize,
    /// When to stop reusing the connection: idle for half the datanode's idle timeout.
    idle: IdleClock,
}

impl std::fmt::Debug for DataConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataConn")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

impl DataConn {
    /// Connects over TCP and runs the handshake.
    pub(crate) async fn open(
        addr: SocketAddr,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Self> {
        let (stream, rbuf, welcome) =
            connect_and_greet(&addr.to_string(), endpoint, "datanode ").await?;
        let mut conn = match stream {
            Connected::Plain(tcp) => {
                Self::start(addr, tcp, rbuf, None, timeout, endpoint.busy_poll)
            }
            Connected::Tls(tls) => Self::start(addr, tls, rbuf, None, timeout, endpoint.busy_poll),
        };
        conn.write_piece = welcome.write_piece as usize;
        conn.idle = IdleClock::new(welcome.idle_timeout_ms);
        Ok(conn)
    }

    /// Connects to the datanode's same-host socket, runs the handshake and attaches staging
    /// memory with slots of `block_size` bytes. Fails at once if the datanode is not on this
    /// host (or serves no fast path).
    pub(crate) async fn open_local(
        addr: SocketAddr,
        endpoint: &Endpoint,
        timeout: Duration,
        block_size: u64,
    ) -> Result<Self> {
        let connect = async {
            let mut stream = local::connect(addr).await.map_err(|cause| Error::Connect {
                addr: format!("{addr} (same-host socket)"),
                cause,
            })?;
            let mut rbuf = BytesMut::with_capacity(64 << 10);
            let (secret, name) = (endpoint.secret.as_ref(), &endpoint.name);
            let welcome = handshake::client(
                &mut stream,
                &mut rbuf,
                secret,
                name,
                endpoint.connect_timeout,
            )
            .await?;
            let (slot_size, slots) = local::client_slots(block_size);
            let staging = Staging::create(slot_size, slots)?;
            let mut out = BytesMut::new();
            let attach = pb::AttachRequest { slot_size, slots };
            frame::encode(&mut out, Kind::Attach, 0, 1, &attach, MAX_REPLY_BODY)?;
            local::send_with_fd(&stream, &out, staging.fd()).await?;
            let reply = loop {
                if let Some(frame) = frame::decode(&mut rbuf, MAX_REPLY_BODY)? {
                    break frame;
                }
                if io::read_some(&stream, &mut rbuf).await? == 0 {
                    return Err(Error::ConnectionLost {
                        addr: addr.to_string(),
                        reason: "closed while attaching staging memory".into(),
                    });
                }
            };
            if reply.is_error() {
                return Err(reply.into_error());
            }
            if Kind::from_u16(reply.kind) != Some(Kind::Attach) {
                return Err(Error::malformed("attach reply", "another kind of message"));
            }
            Ok::<_, Error>((stream, rbuf, staging, welcome))
        };
        let (stream, rbuf, staging, welcome) =
            tokio::time::timeout(endpoint.connect_timeout, connect)
                .await
                .map_err(|_| Error::Timeout {
                    what: format!("connecting to datanode {addr} (same host)"),
                    after_ms: endpoint
                        .connect_timeout
                        .as_millis()
                        .try_into()
                        .unwrap_or(u64::MAX),
                })??;
        let mut conn = Self::start(
            addr,
            stream,
            rbuf,
            Some(staging),
            timeout,
            endpoint.busy_poll,
        );
        conn.idle = IdleClock::new(welcome.idle_timeout_ms);
        Ok(conn)
    }

    fn start<S: Stream>(
        addr: SocketAddr,
        stream: S,
        rbuf: BytesMut,
        staging: Option<Staging>,
        timeout: Duration,
        busy_poll: Duration,
    ) -> Self {
        let slots = staging.as_ref().map(|s| Slots::new(s.slots()));
        let shared = Arc::new(Shared {
            addr,
            table: Mutex::new(Table::default()),
            staging,
        });
        let (rd, wr) = stream.split();
        let (tx, rx) = mpsc::channel(QUEUE);
        let poll = io::BusyPoll::new(busy_poll);
        tokio::spawn(read_replies(rd, rbuf, shared.clone(), timeout, poll));
        tokio::spawn(write_requests(wr, rx, shared.clone()));
        Self {
            shared,
            tx,
            next_id: AtomicU64::new(1),
            slots,
            write_piece: 0,
            idle: IdleClock::new(0),
        }
    }

    /// The request size a buffer's write is best split into (0: whole). Through shared
    /// memory it is always whole: copying into the slot is the transfer.
    pub(crate) fn write_piece(&self) -> usize {
        self.write_piece
    }

    /// Whether payloads go through shared memory (the datanode is on this host).
    pub(crate) fn is_local(&self) -> bool {
        self.slots.is_some()
    }

    /// Whether the connection is gone, or idle so long the datanode may be closing it: a new
    /// one is needed.
    pub(crate) fn is_closed(&self) -> bool {
        self.is_broken() || self.idle.stale()
    }

    /// Whether the connection is gone (not merely idle long).
    pub(crate) fn is_broken(&self) -> bool {
        self.shared.table.lock().closed.is_some() || self.tx.is_closed()
    }

    /// Records a waiter and returns its request id; on a closed connection fails it instead.
    fn register(&self, waiter: Waiter) -> Option<u64> {
        self.idle.used();
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

    /// Sends `payload`, whose crc32c is `crc`, for storage offset `offset` (inside block
    /// `to`).
    pub(crate) async fn write(
        &self,
        to: Target,
        offset: u64,
        payload: Bytes,
        crc: u32,
    ) -> Pending<()> {
        if self.is_local() {
            return self.write_from(to, offset, &payload, crc).await;
        }
        let grants = vec![to.wire_grant()];
        self.queue_write(to.datanode, grants, offset, crc, payload, None, Vec::new())
            .await
    }

    /// Writes `pieces` (offset from `offset`, bytes, their crc32c) in one request, each piece
    /// inside one block of the datanode registered as `datanode`, together at most a block;
    /// `grants` has one for each block touched. On a same-host connection they are copied
    /// into one staging slot; elsewhere into one payload.
    pub(crate) async fn write_scattered(
        &self,
        datanode: u64,
        grants: Vec<pb::Grant>,
        offset: u64,
        pieces: &[(u32, &[u8], u32)],
    ) -> Pending<()> {
        let triples: Vec<u32> = pieces
            .iter()
            .flat_map(|&(at, bytes, crc)| [at, bytes.len() as u32, crc])
            .collect();
        let len: usize = pieces.iter().map(|p| p.1.len()).sum();
        let (Some(slots), Some(staging)) = (&self.slots, &self.shared.staging) else {
            let mut payload = BytesMut::with_capacity(len);
            for piece in pieces {
                payload.extend_from_slice(piece.1);
            }
            return self
                .queue_write(datanode, grants, offset, 0, payload.freeze(), None, triples)
                .await;
        };
        let slot = slots.take().await;
        let mut at = 0usize;
        for piece in pieces {
            if let Err(e) = staging.copy_in_at(slot.index, at, piece.1) {
                let (tx, pending) = self.pending();
                Waiter::Write(tx, None, 0).fail(e);
                return pending;
            }
            at += piece.1.len();
        }
        self.queue_write(
            datanode,
            grants,
            offset,
            0,
            Bytes::new(),
            Some((slot, len)),
            triples,
        )
        .await
    }

    /// As [`DataConn::write`], from borrowed bytes: on a same-host connection they are copied
    /// straight into a staging slot (the only copy the client makes), so the caller's memory
    /// is free again when this returns. Elsewhere they are copied into a new buffer and sent.
    pub(crate) async fn write_from(
        &self,
        to: Target,
        offset: u64,
        payload: &[u8],
        crc: u32,
    ) -> Pending<()> {
        let grants = vec![to.wire_grant()];
        let (Some(slots), Some(staging)) = (&self.slots, &self.shared.staging) else {
            let payload = Bytes::copy_from_slice(payload);
            return self
                .queue_write(to.datanode, grants, offset, crc, payload, None, Vec::new())
                .await;
        };
        let slot = slots.take().await;
        if let Err(e) = staging.copy_in(slot.index, payload) {
            let (tx, pending) = self.pending();
            Waiter::Write(tx, None, 0).fail(e);
            return pending;
        }
        let staged = Some((slot, payload.len()));
        self.queue_write(
            to.datanode,
            grants,
            offset,
            crc,
            Bytes::new(),
            staged,
            Vec::new(),
        )
        .await
    }

    /// Queues a write of `payload`, or of the `len` bytes in `staged`'s slot.
    #[allow(clippy::too_many_arguments)]
    async fn queue_write(
        &self,
        datanode: u64,
        grants: Vec<pb::Grant>,
        offset: u64,
        crc: u32,
        payload: Bytes,
        staged: Option<(Slot, usize)>,
        pieces: Vec<u32>,
    ) -> Pending<()> {
        let (tx, pending) = self.pending();
        let (slot, len) = match staged {
            Some((slot, len)) => (Some(slot), len),
            None => (None, payload.len()),
        };
        let slot_no = slot.as_ref().map_or(0, |s| s.index + 1);
        let waiter = Waiter::Write(tx, slot, len);
        self.queue(waiter, |id| Out::Write {
            id,
            datanode,
            grants,
            offset,
            crc,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            payload,
            slot: slot_no,
            pieces,
        })
        .await;
        pending
    }

    /// Records `waiter` and queues the request `out(id)` for the writer task.
    async fn queue(&self, waiter: Waiter, out: impl FnOnce(u64) -> Out) {
        if let Some(id) = self.register(waiter) {
            self.send(out(id), id).await;
        }
    }

    /// A reply channel and the future that waits on it.
    fn pending<T>(&self) -> (oneshot::Sender<Result<T>>, Pending<T>) {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            rx,
            addr: self.shared.addr,
        };
        (tx, pending)
    }

    async fn take_slot(&self) -> Option<Slot> {
        match &self.slots {
            Some(slots) => Some(slots.take().await),
            None => None,
        }
    }

    /// Reads `len` bytes at storage offset `offset` (inside block `from`) into `buf[at..at +
    /// len]` (which must fit). The buffer comes back with its length set to `at + len`, with
    /// the crc32c of the bytes read (checked against the datanode's).
    pub(crate) async fn read(
        &self,
        from: Target,
        offset: u64,
        len: usize,
        buf: Buffer,
        at: usize,
    ) -> Pending<(Buffer, u32)> {
        let (tx, pending) = self.pending();
        if at + len > buf.capacity() {
            let _ = tx.send(Err(Error::BadRange {
                offset,
                length: len as u64,
                reason: "does not fit the buffer".into(),
            }));
            return pending;
        }
        let slot = self.take_slot().await;
        let slot_no = slot.as_ref().map_or(0, |s| s.index + 1);
        let waiter = Waiter::Read {
            buf,
            at,
            len,
            offset,
            tx,
            slot,
        };
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.queue(waiter, |id| Out::Read {
            id,
            datanode: from.datanode,
            grant: from.wire_grant(),
            offset,
            len,
            slot: slot_no,
        })
        .await;
        pending
    }
}

impl Drop for DataConn {
    fn drop(&mut self) {
        self.shared
            .close(Closed::Lost("connection closed by this client".into()));
    }
}
