//! The server side: [`run`] accepts connections on a service's listeners, passes each through
//! the store's handshake and the session's opening, and hands every exchange to the
//! [`Service`] as a [`Served`].

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crail_store::Secret;
use crail_store::wire::frame::{self, FLAG_ERROR, FLAG_FD, FLAG_RESPONSE, Frame};
use crail_store::wire::gate::Gate;
use crail_store::wire::handshake;
use crail_store::wire::tls::Tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::client::Part;
use crate::endpoint::{Listener, Stream};
use crate::error::Failure;
use crate::framed::{
    self, FrameReader, KIND_DATA, KIND_OPEN, KIND_OPENED, KIND_PING, KIND_REPLY, KIND_REQUEST, Out,
};
use crate::proto;
use crate::session::{Sessions, check_app};

/// Time a new connection has for the handshake and the session's opening.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames of one exchange the service has not taken yet (then the connection's reader waits:
/// a put's value is paced by how fast the service stores it).
const INBOX: usize = 8;

/// Frames queued for a connection's writer.
const OUTBOX: usize = 64;

/// A per-node service on this layer: it defines its messages and serves exchanges; the layer
/// does the rest (listeners, handshake, sessions, framing, ids, backpressure).
pub trait Service: Send + Sync + 'static {
    /// Its name in the handshake ("shuffle", "broadcast"): a client that expects another
    /// service is refused.
    const NAME: &'static str;
    /// What the exchanges of one connection share (the shuffle service: the groups it lent).
    type Conn: Default + Send + Sync + 'static;

    /// The applications with clients here.
    fn sessions(&self) -> &Sessions;

    /// Serves one exchange: its request, whatever else the client sends with it, and every
    /// reply. Exchanges of one connection run at once.
    fn serve(self: Arc<Self>, exchange: Served<Self::Conn>) -> impl Future<Output = ()> + Send;

    /// A connection closed, every exchange of it over: release what it held.
    fn closed(&self, conn: &Self::Conn) {
        let _ = conn;
    }

    /// Periodic work (keep-alive, orphan expiry), every [`ServerConfig::housekeeping`].
    fn housekeeping(self: Arc<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How [`run`] serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The cluster's shared secret: every connection must prove it.
    pub secret: Option<Secret>,
    /// TLS on TCP connections (the Unix socket stays as it is).
    pub tls: Option<Arc<Tls>>,
    /// Connections served at once by each listener: the TCP port and the Unix socket count
    /// apart, so remote peers that fill the TCP port cannot lock the node's own engines out.
    pub max_connections: usize,
    /// Connections of each listener still in their handshake (TLS, the store's, the session's
    /// opening) at once: past it the listener accepts no more until one finishes or times
    /// out, so peers that connect and say nothing hold a few slots for a few seconds, not the
    /// whole connection limit.
    pub max_handshakes: usize,
    /// Exchanges of one connection served at once.
    pub max_in_flight: usize,
    /// How often [`Service::housekeeping`] runs (never when `None`).
    pub housekeeping: Option<Duration>,
    /// A group whose local processes may connect over the Unix socket besides this
    /// process's user (`[security] local_group`).
    pub local_group: Option<u32>,
    /// Time the rest of a frame may take once its first bytes came; a client that stalls
    /// inside one is dropped.
    pub frame_timeout: Duration,
    /// Time a connection may send nothing at all before it is closed (zero: never). Clients
    /// learn it in the Welcome and ping while they have nothing to say, so only peers that
    /// are gone or hung are closed.
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            secret: None,
            tls: None,
            max_connections: 1024,
            max_handshakes: 64,
            max_in_flight: 256,
            housekeeping: None,
            local_group: None,
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Serves `service` on `listeners` until `shutdown` completes; the connections still open
/// then are dropped.
pub async fn run<S: Service>(
    service: Arc<S>,
    config: ServerConfig,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let gate = Arc::new(Gate::new(config.local_group));
    let mut tasks = JoinSet::new();
    if let Some(every) = config.housekeeping {
        let (stop, service) = (stop.clone(), Arc::clone(&service));
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => Arc::clone(&service).housekeeping().await,
                }
            }
        });
    }
    for listener in listeners {
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let handshakes = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
        let (stop, service) = (stop.clone(), Arc::clone(&service));
        let (config, gate) = (config.clone(), Arc::clone(&gate));
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let permit = tokio::select! {
                    () = stop.cancelled() => break,
                    p = Arc::clone(&permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let handshaking = tokio::select! {
                    () = stop.cancelled() => break,
                    p = Arc::clone(&handshakes).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok(stream) => {
                        let served = serve(
                            Arc::clone(&service),
                            stream,
                            config.clone(),
                            Arc::clone(&gate),
                            handshaking,
                        );
                        conns.spawn(async move {
                            served.await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!("{} service: accept failed: {e}", S::NAME);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                while conns.try_join_next().is_some() {}
            }
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
    }
    shutdown.await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Reads the session's opening (after the handshake, before the connection is split).
async fn open(stream: &mut Stream, buf: &mut BytesMut) -> Result<proto::Open, String> {
    let frame = loop {
        if let Some(frame) = frame::decode(buf, 64 << 10).map_err(|e| e.to_string())? {
            break frame;
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed before opening a session".into());
        }
    };
    if frame.kind != KIND_OPEN {
        return Err(format!("kind {} where Open was due", frame.kind));
    }
    prost::Message::decode(frame.body).map_err(|e| format!("an Open that does not decode: {e}"))
}

/// Serves one connection.
async fn serve<S: Service>(
    service: Arc<S>,
    mut stream: Stream,
    config: ServerConfig,
    gate: Arc<Gate>,
    handshaking: tokio::sync::OwnedSemaphorePermit,
) {
    let peer = stream.peer_ip();
    let admitted = match (&stream, peer) {
        (Stream::Unix(unix), _) => gate.check_local(unix),
        (Stream::Tcp(_) | Stream::Tls(_), Some(ip)) => gate.check_remote(ip),
        (Stream::Tcp(_) | Stream::Tls(_), None) => Ok(()),
    };
    if let Err(refused) = admitted {
        tracing::debug!("{} service: {refused}", S::NAME);
        handshake::send_error(&mut stream, &refused).await;
        return;
    }
    let mut buf = BytesMut::new();
    let announce = handshake::Service {
        name: S::NAME,
        write_piece: 0,
        idle_timeout: config.idle_timeout,
    };
    if let Some(tls) = &config.tls {
        match tokio::time::timeout(OPEN_TIMEOUT, stream.accept_tls(tls)).await {
            Ok(Ok(over_tls)) => stream = over_tls,
            failed => {
                tracing::debug!("{} service: TLS handshake failed: {failed:?}", S::NAME);
                if let Some(ip) = peer {
                    gate.failed(ip);
                }
                return;
            }
        }
    }
    let opening = async {
        handshake::server(
            &mut stream,
            &mut buf,
            handshake::Secrets::clients(config.secret.as_ref()),
            announce,
            OPEN_TIMEOUT,
        )
        .await
        .map_err(|e| {
            if let Some(ip) = peer {
                gate.failed_with(ip, &e);
            }
            e.to_string()
        })?;
        open(&mut stream, &mut buf).await
    };
    let session = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(Ok(session)) => session,
        Ok(Err(problem)) => {
            tracing::debug!(
                "{} service: a connection failed to open: {problem}",
                S::NAME
            );
            return;
        }
        Err(_) => {
            tracing::debug!("{} service: a connection did not open in time", S::NAME);
            return;
        }
    };
    drop(handshaking);
    let app = session.app;
    if !app.is_empty()
        && let Err(problem) = check_app(&app)
    {
        let failure = Failure {
            code: "invalid".into(),
            message: problem,
            store: None,
            detail: Bytes::new(),
        };
        if let Ok(out) = framed::message(KIND_OPENED, FLAG_ERROR, 0, &failure.to_proto()) {
            let _ = stream.write_all(&out).await;
            let _ = stream.flush().await;
        }
        return;
    }
    let sessions = service.sessions();
    let opened = proto::Opened {
        host: sessions.host().to_owned(),
    };
    let Ok(welcome) = framed::message(KIND_OPENED, FLAG_RESPONSE, 0, &opened) else {
        return;
    };
    if !app.is_empty() {
        sessions.opened(&app).await;
    }
    let unix = stream.is_unix();
    let (rd, wr) = stream.split();
    let (out, queue) = mpsc::channel(OUTBOX);
    let writer = tokio::spawn(framed::drain(wr, queue));
    let _ = out.send(Out::Frames(welcome)).await;

    let conn = Arc::new(S::Conn::default());
    let app: Arc<str> = Arc::from(app);
    let closed = CancellationToken::new();
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let mut frames = FrameReader::new(rd, buf, false)
        .stall_after(config.frame_timeout)
        .idle_after(config.idle_timeout);
    let mut active: HashMap<u64, mpsc::Sender<Frame>> = HashMap::new();
    let mut last = 0u64;
    let mut exchanges = JoinSet::new();
    loop {
        let frame = match frames.next().await {
            Ok((frame, _)) => frame,
            Err(framed::ReadError::Closed) => break,
            Err(framed::ReadError::Idle) => {
                tracing::debug!("{} service: closing a connection idle too long", S::NAME);
                break;
            }
            Err(framed::ReadError::Bad(problem)) => {
                tracing::debug!("{} service: dropping a client: {problem}", S::NAME);
                break;
            }
        };
        if frame.kind == KIND_PING {
            // Answered if there is room; a client that does not read its replies misses it.
            let _ = out.try_send(Out::Frames(pong()));
            continue;
        }
        if frame.kind != KIND_REQUEST && frame.kind != KIND_DATA {
            tracing::debug!(
                "{} service: dropping a client: kind {} where requests were due",
                S::NAME,
                frame.kind
            );
            break;
        }
        if let Some(inbox) = active.get(&frame.id) {
            if inbox.send(frame).await.is_err() {
                // Over on the service's side: the rest of it is dropped.
                active.retain(|_, inbox| !inbox.is_closed());
            }
            continue;
        }
        if frame.id <= last {
            // Over already (the rest of a put the service failed early): dropped. A request
            // under a used id is answered, so a client that broke the order does not hang.
            if frame.kind == KIND_REQUEST {
                let failure = Failure {
                    code: "invalid".into(),
                    message: format!(
                        "request id {} came after id {last}: a connection's ids must grow",
                        frame.id
                    ),
                    store: None,
                    detail: Bytes::new(),
                };
                let flags = FLAG_RESPONSE | FLAG_ERROR;
                if let Ok(out_frame) =
                    framed::message(KIND_REPLY, flags, frame.id, &failure.to_proto())
                {
                    let _ = out.send(Out::Frames(out_frame)).await;
                }
            }
            continue;
        }
        last = frame.id;
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let (inbox, rx) = mpsc::channel(INBOX);
        active.retain(|_, inbox| !inbox.is_closed());
        active.insert(frame.id, inbox);
        let served = Served {
            id: frame.id,
            first: Some(frame),
            inbox: rx,
            out: out.clone(),
            conn: Arc::clone(&conn),
            app: Arc::clone(&app),
            unix,
            closed: closed.clone(),
        };
        let service = Arc::clone(&service);
        exchanges.spawn(async move {
            service.serve(served).await;
            drop(permit);
        });
        while exchanges.try_join_next().is_some() {}
    }
    // The client is gone: exchanges see the end of their input and that it closed.
    closed.cancel();
    drop(active);
    while exchanges.join_next().await.is_some() {}
    service.closed(&conn);
    drop(out);
    let _ = writer.await;
    if !app.is_empty() {
        service.sessions().closed(&app);
    }
}

/// One exchange being served: the request, what else the client sends with it, the replies.
#[derive(Debug)]
pub struct Served<C> {
    id: u64,
    first: Option<Frame>,
    inbox: mpsc::Receiver<Frame>,
    out: mpsc::Sender<Out>,
    conn: Arc<C>,
    app: Arc<str>,
    unix: bool,
    closed: CancellationToken,
}

impl<C> Served<C> {
    /// The next message or data the client sent in this exchange (the request first);
    /// `None` once the client is gone. A message that does not decode is an `Err` naming why.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Option<Result<Part<M>, String>> {
        let frame = match self.first.take() {
            Some(frame) => frame,
            None => self.inbox.recv().await?,
        };
        Some(match frame.kind {
            KIND_DATA => Ok(Part::Data(frame.body)),
            _ => M::decode(frame.body)
                .map(|m| Part::Message(m, None))
                .map_err(|e| format!("a request that does not decode: {e}")),
        })
    }

    /// The request (the exchange's first message).
    pub async fn request<M: prost::Message + Default>(&mut self) -> Result<M, String> {
        match self.next::<M>().await {
            Some(Ok(Part::Message(m, _))) => Ok(m),
            Some(Ok(Part::Data(_))) => Err("data where a request was due".into()),
            Some(Err(problem)) => Err(problem),
            None => Err("the client is gone".into()),
        }
    }

    /// Sends a reply; false when the client is gone.
    pub async fn reply<M: prost::Message>(&self, message: &M) -> bool {
        self.send_message(FLAG_RESPONSE, message, None).await
    }

    /// Sends a reply with a file descriptor (Unix sockets only: see [`Served::is_unix`]);
    /// false when the client is gone.
    pub async fn reply_with_fd<M: prost::Message>(&self, message: &M, fd: OwnedFd) -> bool {
        self.send_message(FLAG_RESPONSE | FLAG_FD, message, Some(fd))
            .await
    }

    /// Fails the exchange; false when the client is gone.
    pub async fn fail(&self, failure: &Failure) -> bool {
        self.send_message(FLAG_RESPONSE | FLAG_ERROR, &failure.to_proto(), None)
            .await
    }

    /// Sends raw bytes (in frames of at most [`crate::MAX_BODY`]), without copying them;
    /// false when the client is gone.
    pub async fn data(&self, mut bytes: Bytes) -> bool {
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(framed::MAX_BODY));
            if self
                .out
                .send(framed::data(self.id, FLAG_RESPONSE, piece))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    async fn send_message<M: prost::Message>(
        &self,
        flags: u16,
        message: &M,
        fd: Option<OwnedFd>,
    ) -> bool {
        let frame = match framed::message(KIND_REPLY, flags, self.id, message) {
            Ok(frame) => frame,
            Err(e) => {
                // Only a reply past the frame limit; the client learns why.
                tracing::warn!("a reply cannot be sent: {e}");
                let failure = Failure::store(&e).to_proto();
                match framed::message(KIND_REPLY, FLAG_RESPONSE | FLAG_ERROR, self.id, &failure) {
                    Ok(frame) => return self.out.send(Out::Frames(frame)).await.is_ok(),
                    Err(_) => return false,
                }
            }
        };
        let out = match fd {
            Some(fd) => Out::WithFd(frame, fd),
            None => Out::Frames(frame),
        };
        self.out.send(out).await.is_ok()
    }

    /// What the exchanges of this connection share.
    pub fn conn(&self) -> &C {
        &self.conn
    }

    /// The connection's application (empty for none).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Whether the connection is a Unix socket (file descriptors can go with replies).
    pub fn is_unix(&self) -> bool {
        self.unix
    }

    /// Completes when the client's connection has closed.
    pub fn closed(&self) -> WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }
}

/// The answer to a client's ping.
fn pong() -> BytesMut {
    let mut frame = BytesMut::with_capacity(crail_store::wire::frame::HEADER_LEN);
    crail_store::wire::frame::put_header(&mut frame, KIND_PING, FLAG_RESPONSE, 0, 0);
    frame
}
