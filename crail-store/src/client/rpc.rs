//! A pipelined RPC connection. Any number of tasks call at once: each call appends its frame to
//! a shared outbox and waits for the reply with its request id. One writer task flushes the
//! outbox (many frames per write when calls pile up); one reader task routes replies. When the
//! connection breaks, every waiting call gets the error at once instead of its timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot};

use crate::error::{Error, Result};
use crate::proto as pb;
use crate::wire::frame::{self, Frame};
use crate::wire::handshake::{self, Secret};
use crate::wire::io::{self, Stream};
use crate::wire::kind::Rpc;
use crate::wire::tls::{Tls, TlsStream, host_of};

/// How to reach a server.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: String,
    pub(crate) local_host: Option<IpAddr>,
    pub(crate) secret: Option<Secret>,
    pub(crate) name: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) rpc_timeout: Duration,
    pub(crate) max_frame: usize,
    /// How long a reader keeps polling its socket after a small reply (see `io::BusyPoll`).
    pub(crate) busy_poll: Duration,
    /// TLS on every TCP connection, when the cluster has it.
    pub(crate) tls: Option<Arc<Tls>>,
}

/// When a connection stops being worth reusing: idle for half the time its server lets a
/// connection idle (so it is replaced before the server closes it, never while a request
/// crosses the close).
#[derive(Debug)]
pub(crate) struct IdleClock {
    after: Option<Duration>,
    last: Mutex<std::time::Instant>,
}

impl IdleClock {
    /// For a server that closes connections idle for `server_ms` (0: never).
    pub(crate) fn new(server_ms: u64) -> Self {
        Self {
            after: (server_ms > 0).then(|| Duration::from_millis(server_ms / 2)),
            last: Mutex::new(std::time::Instant::now()),
        }
    }

    /// A request is being sent.
    pub(crate) fn used(&self) {
        if self.after.is_some() {
            *self.last.lock() = std::time::Instant::now();
        }
    }

    /// Whether it was idle too long.
    pub(crate) fn stale(&self) -> bool {
        self.after
            .is_some_and(|after| self.last.lock().elapsed() >= after)
    }
}

/// A connection just opened and greeted: in the clear or over TLS.
pub(crate) enum Connected {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl Connected {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.tcp(),
        }
    }
}

type Reply = Result<Frame>;

#[derive(Debug, Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the connection is gone: why.
    closed: Option<Closed>,
}

#[derive(Debug, Clone)]
enum Closed {
    /// The server said why (an error frame for no request: shutting down, bad frame...).
    Server(pb::ErrorReply),
    Lost(String),
}

#[derive(Debug)]
struct Shared {
    addr: String,
    outbox: Mutex<BytesMut>,
    wake_writer: Notify,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
}

impl Shared {
    fn error(&self, closed: &Closed) -> Error {
        match closed {
            Closed::Server(reply) => Error::from_reply(reply.clone()),
            Closed::Lost(reason) => Error::ConnectionLost {
                addr: self.addr.clone(),
                reason: reason.clone(),
            },
        }
    }

    /// Marks the connection closed and fails every waiting call.
    fn close(&self, why: Closed) {
        let waiting = {
            let mut pending = self.pending.lock();
            if pending.closed.is_none() {
                pending.closed = Some(why.clone());
            }
            std::mem::take(&mut pending.waiting)
        };
        for (_, tx) in waiting {
            let _ = tx.send(Err(self.error(&why)));
        }
        self.wake_writer.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.pending.lock().closed.is_some()
    }
}

/// Removes a call's entry if the call is dropped (cancelled or timed out) before its reply.
struct Waiting<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.pending.lock().waiting.remove(&self.id);
    }
}

/// One connection; cheap to share behind an `Arc`. Dropping it closes the socket.
#[derive(Debug)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    rpc_timeout: Duration,
    max_frame: usize,
    local_ip: Option<IpAddr>,
    idle: IdleClock,
}

impl Connection {
    /// Connects, runs the handshake and starts the reader and writer tasks.
    pub(crate) async fn open(endpoint: &Endpoint) -> Result<Self> {
        let (stream, rbuf, welcome) = connect_and_greet(&endpoint.addr, endpoint, "").await?;
        let local_ip = stream.tcp().local_addr().ok().map(|a| a.ip());
        let shared = Arc::new(Shared {
            addr: endpoint.addr.clone(),
            outbox: Mutex::new(BytesMut::with_capacity(64 << 10)),
            wake_writer: Notify::new(),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
        });
        match stream {
            Connected::Plain(tcp) => start(tcp, rbuf, &shared, endpoint),
            Connected::Tls(tls) => start(tls, rbuf, &shared, endpoint),
        }
        Ok(Self {
            shared,
            rpc_timeout: endpoint.rpc_timeout,
            max_frame: endpoint.max_frame,
            local_ip,
            idle: IdleClock::new(welcome.idle_timeout_ms),
        })
    }

    /// Whether the connection is gone, or idle so long the namenode may be closing it: a new
    /// one is needed.
    pub(crate) fn is_closed(&self) -> bool {
        self.is_broken() || self.idle.stale()
    }

    /// Whether the connection is gone (not merely idle long).
    pub(crate) fn is_broken(&self) -> bool {
        self.shared.is_closed()
    }

    /// The address this client reaches the namenode from.
    pub(crate) fn local_ip(&self) -> Option<IpAddr> {
        self.local_ip
    }

    /// Sends `request` and waits for its reply (or the typed error the server answered).
    pub(crate) async fn call<R: Rpc>(&self, request: &R) -> Result<R::Reply> {
        let shared = &*self.shared;
        self.idle.used();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = shared.pending.lock();
            if let Some(closed) = &pending.closed {
                return Err(shared.error(closed));
            }
            pending.waiting.insert(id, tx);
        }
        let _waiting = Waiting { shared, id };
        frame::encode(
            &mut shared.outbox.lock(),
            R::KIND,
            0,
            id,
            request,
            self.max_frame,
        )?;
        shared.wake_writer.notify_one();
        let frame = match tokio::time::timeout(self.rpc_timeout, rx).await {
            Ok(Ok(reply)) => reply?,
            Ok(Err(_)) => {
                return Err(Error::ConnectionLost {
                    addr: shared.addr.clone(),
                    reason: "reply channel dropped".into(),
                });
            }
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("request to {}", shared.addr),
                    after_ms: millis(self.rpc_timeout),
                });
            }
        };
        if frame.is_error() {
            return Err(frame.into_error());
        }
        if frame.kind != R::KIND as u16 {
            return Err(Error::UnexpectedMessage {
                expected: R::KIND.name().into(),
                kind: u32::from(frame.kind),
            });
        }
        frame.decode_body(R::KIND.name())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .close(Closed::Lost("connection closed by this client".into()));
    }
}

/// Starts a connection's reader and writer tasks.
fn start<S: Stream>(stream: S, rbuf: BytesMut, shared: &Arc<Shared>, endpoint: &Endpoint) {
    let (rd, wr) = stream.split();
    let poll = io::BusyPoll::new(endpoint.busy_poll);
    tokio::spawn(read_replies::<S>(
        rd,
        rbuf,
        shared.clone(),
        endpoint.max_frame,
        poll,
    ));
    tokio::spawn(write_requests(wr, shared.clone()));
}

/// Connects to `addr` from `endpoint`'s local host and runs the client handshake, all within
/// the connect timeout. Returns the stream and any bytes read past the handshake. `what`
/// names the peer in a timeout ("datanode " or nothing).
pub(crate) async fn connect_and_greet(
    addr: &str,
    endpoint: &Endpoint,
    what: &str,
) -> Result<(Connected, BytesMut, pb::Welcome)> {
    let connect = async {
        let tcp = connect_tcp(addr, endpoint.local_host).await?;
        let mut rbuf = BytesMut::with_capacity(64 << 10);
        let (stream, welcome) = match &endpoint.tls {
            None => {
                let mut tcp = tcp;
                let welcome = greet(&mut tcp, &mut rbuf, addr, endpoint, false).await?;
                (Connected::Plain(tcp), welcome)
            }
            Some(tls) => {
                let mut tls = tls.connect(tcp, host_of(addr), addr).await?;
                let welcome = greet(&mut tls, &mut rbuf, addr, endpoint, true).await?;
                (Connected::Tls(tls), welcome)
            }
        };
        Ok::<_, Error>((stream, rbuf, welcome))
    };
    tokio::time::timeout(endpoint.connect_timeout, connect)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("connecting to {what}{addr}"),
            after_ms: millis(endpoint.connect_timeout),
        })?
}

/// The client side of the store's handshake.
async fn greet(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    rbuf: &mut BytesMut,
    addr: &str,
    endpoint: &Endpoint,
    tls: bool,
) -> Result<pb::Welcome> {
    handshake::client(
        stream,
        rbuf,
        endpoint.secret.as_ref(),
        &endpoint.name,
        endpoint.connect_timeout,
    )
    .await
    .map_err(|e| match e {
        // A TLS alert (the server refused this client's certificate, or has none of it).
        Error::Io { cause } if tls && cause.kind() == std::io::ErrorKind::InvalidData => {
            Error::AuthFailed {
                reason: format!("TLS with {addr}: {cause}"),
            }
        }
        // Reset or closed mid-handshake (a peer that just died): it could not be opened.
        Error::Io { cause } => Error::Connect {
            addr: addr.to_owned(),
            cause,
        },
        other => other,
    })
}

async fn connect_tcp(addr: &str, local_host: Option<IpAddr>) -> Result<TcpStream> {
    let failed = |cause: std::io::Error| Error::Connect {
        addr: addr.to_owned(),
        cause,
    };
    let targets: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(failed)?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing");
    for target in targets {
        let attempt = async {
            let socket = match target {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(host) = local_host {
                socket.bind(SocketAddr::new(host, 0))?;
            }
            let stream = socket.connect(target).await?;
            stream.set_nodelay(true)?;
            crate::wire::keepalive(&stream);
            Ok::<_, std::io::Error>(stream)
        };
        match attempt.await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(failed(last))
}

async fn read_replies<S: Stream>(
    rd: S::ReadHalf,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    max: usize,
    mut poll: io::BusyPoll,
) {
    let why = 'read: loop {
        loop {
            match frame::decode(&mut buf, max) {
                Ok(Some(frame)) if frame.id == 0 && frame.is_error() => {
                    break 'read match frame.decode_body::<pb::ErrorReply>("error reply") {
                        Ok(reply) => Closed::Server(reply),
                        Err(e) => Closed::Lost(e.to_string()),
                    };
                }
                Ok(Some(frame)) => {
                    let waiter = shared.pending.lock().waiting.remove(&frame.id);
                    if let Some(tx) = waiter {
                        let _ = tx.send(Ok(frame));
                        // Metadata replies are small: the caller's next call comes soon.
                        poll.arm();
                    }
                }
                Ok(None) => break,
                Err(e) => break 'read Closed::Lost(format!("bad reply frame: {e}")),
            }
        }
        match poll.read_some(rd.as_ref(), &mut buf).await {
            Ok(0) => break Closed::Lost("closed by the server".into()),
            Ok(_) => {}
            Err(e) => break Closed::Lost(e.to_string()),
        }
    };
    shared.close(why);
}

async fn write_requests(mut wr: impl AsyncWrite + Unpin, shared: Arc<Shared>) {
    let mut sending = BytesMut::with_capacity(64 << 10);
    loop {
        shared.wake_writer.notified().await;
        // Let tasks woken by the same batch of replies queue their next requests first.
        tokio::task::yield_now().await;
        loop {
            {
                let mut outbox = shared.outbox.lock();
                if outbox.is_empty() {
                    break;
                }
                std::mem::swap(&mut *outbox, &mut sending);
            }
            if let Err(e) = io::send(&mut wr, &sending).await {
                shared.close(Closed::Lost(e.to_string()));
                return;
            }
            sending.clear();
        }
        if shared.is_closed() {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}
