//! The client side: [`Connection`] to a node's service, requests matched to their replies by
//! id, exchanges that stream data both ways.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crail_store::wire::frame::{self, FLAG_ERROR, Frame};
use crail_store::wire::tls::Tls;
use crail_store::{ClientConfig, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::endpoint::{Connect, Endpoint, Stream};
use crate::error::{Error, Failure, Result};
use crate::framed::{self, FrameReader, KIND_DATA, KIND_OPEN, KIND_OPENED, KIND_REPLY, Out};
use crate::proto;

/// Frames queued for the connection's writer.
const OUTBOX: usize = 64;

/// Frames of one exchange waiting for its caller (the connection's reader waits when they
/// are not taken: a slow reader of a large value holds up the rest of its connection).
const INBOX: usize = 16;

/// How a client opens a connection.
#[derive(Debug, Clone)]
pub struct Options {
    /// The service it expects at the endpoint ("shuffle", "broadcast"): another one there is
    /// refused.
    pub service: &'static str,
    /// The application the connection keeps alive; empty for none.
    pub app: String,
    /// Who is asking, for the service's logs.
    pub client: String,
    /// The cluster's shared secret, when it has one.
    pub secret: Option<Secret>,
    /// TLS on TCP connections, when the cluster has it.
    pub tls: Option<Arc<Tls>>,
    /// Time to connect, pass the handshake and be welcomed.
    pub timeout: Duration,
    /// Time the service may stay silent (no reply, no data, no answer to the pings the
    /// connection sends every third of it) before the connection is taken for lost and every
    /// call on it fails with [`Error::Lost`]: a hung service (stopped, swapping, its machine
    /// paused) looks like a lost node within this time, not never.
    pub deadline: Duration,
}

impl Options {
    /// Options for `service` on behalf of `app`, with the defaults (no secret, 5 s).
    pub fn new(service: &'static str, app: &str) -> Self {
        Self {
            service,
            app: app.to_owned(),
            client: format!("crail {service} client {}", env!("CARGO_PKG_VERSION")),
            secret: None,
            tls: None,
            timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        }
    }

    /// With the cluster's secret and TLS settings (`[security]` of its configuration), and its
    /// request time (`client.rpc_timeout`) as the deadline.
    pub fn for_cluster(mut self, config: &ClientConfig) -> Self {
        self.secret = config.secret.clone();
        self.tls = config.tls.clone();
        self.deadline = config.rpc_timeout;
        self
    }

    /// With the cluster's shared secret.
    pub fn with_secret(mut self, secret: Option<Secret>) -> Self {
        self.secret = secret;
        self
    }
}

type Inbox = mpsc::Sender<(Frame, Option<OwnedFd>)>;

/// A connection to a node's service. Requests are sent through one writer task and their
/// replies handed to their callers by id, so many can be in flight. Cheap to clone; it closes
/// when the last clone drops.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: &'static str,
    endpoint: String,
    host: String,
    unix: bool,
    outbox: mpsc::Sender<Out>,
    /// Callers waiting, by request id; `None` once the connection is gone.
    waiters: parking_lot::Mutex<Option<HashMap<u64, Inbox>>>,
    /// Why the connection ended.
    ended: parking_lot::Mutex<Option<String>>,
    /// The next request id. Taking one and queueing its request happen under this lock, so
    /// ids reach the service in increasing order (it drops frames of ids it has passed).
    next: parking_lot::Mutex<u64>,
    /// When the service was last heard from, and whether the reader is handing a frame to a
    /// caller that is slow to take it (then silence is the caller's, not the service's).
    heard: parking_lot::Mutex<(tokio::time::Instant, bool)>,
    reader: tokio::task::JoinHandle<()>,
    pinger: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.pinger.abort();
    }
}

impl Inner {
    /// The connection is gone: every caller waiting, and every later one, learns `reason`.
    fn end(&self, reason: String) {
        self.ended.lock().get_or_insert(reason);
        self.waiters.lock().take();
    }
}

/// Pings the service every `every` (which also keeps a connection it would close as idle
/// alive; skipped when the writer is busy anyway) and takes the connection for lost when the
/// service has said nothing for `deadline`.
async fn ping(inner: std::sync::Weak<Inner>, every: Duration, deadline: Duration) {
    let mut frame = BytesMut::new();
    frame::put_header(&mut frame, framed::KIND_PING, 0, 0, 0);
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (heard, delivering) = *inner.heard.lock();
        if !delivering && heard.elapsed() > deadline {
            tracing::warn!(service = inner.service, endpoint = %inner.endpoint, "the service has not answered for {deadline:?}: taken for lost");
            inner.end(format!(
                "the {} service sent nothing for {} ms (hung, paused or cut off)",
                inner.service,
                deadline.as_millis()
            ));
            return;
        }
        if let Err(mpsc::error::TrySendError::Closed(_)) =
            inner.outbox.try_send(Out::Frames(frame.clone()))
        {
            return;
        }
    }
}

impl Connection {
    /// Connects to the service at `endpoint`: the store's handshake (version, shared secret),
    /// then the session. Returns once the service has welcomed it.
    pub async fn open(endpoint: &Endpoint, options: &Options) -> Result<Self> {
        let name = endpoint.to_string();
        let service = options.service;
        let lost = |reason: String| Error::Lost {
            service,
            endpoint: name.clone(),
            reason,
        };
        let opening = async {
            let refused = |cause| Error::Refused {
                service,
                endpoint: name.clone(),
                cause: Box::new(cause),
            };
            let mut stream = match Stream::connect(endpoint, options.tls.as_deref()).await {
                Ok(stream) => stream,
                Err(Connect::Io(e)) => {
                    return Err(Error::Connect {
                        service,
                        endpoint: name.clone(),
                        cause: e.to_string(),
                    });
                }
                Err(Connect::Tls(e)) => return Err(refused(e)),
            };
            let mut buf = BytesMut::new();
            let welcome = crail_store::wire::handshake::client_welcome(
                &mut stream,
                &mut buf,
                options.secret.as_ref(),
                &options.client,
                options.timeout,
            )
            .await
            .map_err(|e| match e {
                crail_store::Error::ConnectionLost { reason, .. } => lost(reason),
                other => refused(other),
            })?;
            if welcome.service != service {
                let announced = &welcome.service;
                return Err(refused(crail_store::Error::Malformed {
                    what: "welcome".into(),
                    detail: format!("the {announced} service answers there, not the {service}"),
                }));
            }
            let open = proto::Open {
                app: options.app.clone(),
                client: options.client.clone(),
            };
            let out = framed::message(KIND_OPEN, 0, 0, &open).map_err(refused)?;
            stream
                .write_all(&out)
                .await
                .and(stream.flush().await)
                .map_err(|e| lost(e.to_string()))?;
            let opened = loop {
                if let Some(frame) =
                    frame::decode(&mut buf, framed::MAX_BODY).map_err(|e| lost(e.to_string()))?
                {
                    break frame;
                }
                if stream
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| lost(e.to_string()))?
                    == 0
                {
                    return Err(lost("closed before the session opened".into()));
                }
            };
            if opened.kind != KIND_OPENED {
                return Err(lost(format!("answered Open with kind {}", opened.kind)));
            }
            if opened.is_error() {
                return Err(Error::Failed(Box::new(failure(&opened.body))));
            }
            let host = decode::<proto::Opened>(&opened.body)
                .map_err(|e| lost(e.to_string()))?
                .host;
            Ok((stream, buf, host, welcome.idle_timeout))
        };
        let (stream, buf, host, idle) = tokio::time::timeout(options.timeout, opening)
            .await
            .map_err(|_| Error::Timeout {
                service,
                endpoint: name.clone(),
                what: "the session's opening",
                after_ms: u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX),
            })??;
        let unix = stream.is_unix();
        let (rd, wr) = stream.split();
        let (outbox, queue) = mpsc::channel(OUTBOX);
        tokio::spawn(framed::drain(wr, queue));
        // Often enough for the service's idle limit and for the deadline.
        let deadline = options.deadline.max(Duration::from_millis(30));
        let every = match idle.is_zero() {
            true => deadline / 3,
            false => (idle / 3).min(deadline / 3),
        };
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let pinger = tokio::spawn(ping(weak.clone(), every, deadline));
            let weak = weak.clone();
            let reader = tokio::spawn(async move {
                let mut frames = FrameReader::new(rd, buf, true);
                let reason = loop {
                    let (frame, fd) = match frames.next().await {
                        Ok(next) => next,
                        Err(e) => break e.to_string(),
                    };
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    *inner.heard.lock() = (tokio::time::Instant::now(), true);
                    let inbox = match frame.kind {
                        // A pong: only a sign of life.
                        framed::KIND_PING => None,
                        _ => inner
                            .waiters
                            .lock()
                            .as_ref()
                            .and_then(|w| w.get(&frame.id).cloned()),
                    };
                    // A caller that went away takes nothing more.
                    if let Some(inbox) = inbox {
                        let _ = inbox.send((frame, fd)).await;
                    }
                    *inner.heard.lock() = (tokio::time::Instant::now(), false);
                };
                if let Some(inner) = weak.upgrade() {
                    inner.end(reason);
                }
            });
            Inner {
                service,
                endpoint: name.clone(),
                host,
                unix,
                outbox,
                waiters: parking_lot::Mutex::new(Some(HashMap::new())),
                ended: parking_lot::Mutex::new(None),
                next: parking_lot::Mutex::new(1),
                heard: parking_lot::Mutex::new((tokio::time::Instant::now(), false)),
                reader,
                pinger,
            }
        });
        Ok(Self { inner })
    }

    /// The node's name (its address), as the service told it.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether it is a Unix socket (file descriptors can come with replies).
    pub fn is_unix(&self) -> bool {
        self.inner.unix
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.waiters.lock().is_none()
    }

    /// Sends `request` and waits for its one reply.
    pub async fn call<Req: prost::Message, Rep: prost::Message + Default>(
        &self,
        request: &Req,
    ) -> Result<Rep> {
        let mut exchange = self.start(request).await?;
        match exchange.next::<Rep>().await? {
            Part::Message(reply, _) => Ok(reply),
            Part::Data(_) => Err(exchange.lost("data where a reply was due".into())),
        }
    }

    /// Sends `request` and opens an exchange: more messages and data can go with it, and its
    /// replies and data are read as they come.
    pub async fn start<Req: prost::Message>(&self, request: &Req) -> Result<Exchange> {
        let permit = self.inner.outbox.reserve().await.map_err(|_| self.lost())?;
        let (tx, rx) = mpsc::channel(INBOX);
        let mut next = self.inner.next.lock();
        let id = *next;
        let frame =
            framed::message(framed::KIND_REQUEST, 0, id, request).map_err(|e| self.refused(e))?;
        match self.inner.waiters.lock().as_mut() {
            Some(waiters) => waiters.insert(id, tx),
            None => return Err(self.lost()),
        };
        *next += 1;
        permit.send(Out::Frames(frame));
        drop(next);
        Ok(Exchange {
            conn: self.clone(),
            id,
            inbox: rx,
        })
    }

    fn refused(&self, cause: crail_store::Error) -> Error {
        Error::Refused {
            service: self.inner.service,
            endpoint: self.inner.endpoint.clone(),
            cause: Box::new(cause),
        }
    }

    fn lost(&self) -> Error {
        let reason = self
            .inner
            .ended
            .lock()
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        Error::Lost {
            service: self.inner.service,
            endpoint: self.inner.endpoint.clone(),
            reason,
        }
    }

    async fn queue(&self, out: Out) -> Result<()> {
        self.inner.outbox.send(out).await.map_err(|_| self.lost())
    }
}

/// What came for an exchange.
#[derive(Debug)]
pub enum Part<M> {
    /// A message, with the file descriptor that came with it.
    Message(M, Option<OwnedFd>),
    /// Raw bytes.
    Data(Bytes),
}

/// One request and everything that goes with it. Dropping it stops the caller's side: what
/// still comes for it is dropped.
#[derive(Debug)]
pub struct Exchange {
    conn: Connection,
    id: u64,
    inbox: mpsc::Receiver<(Frame, Option<OwnedFd>)>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(waiters) = self.conn.inner.waiters.lock().as_mut() {
            waiters.remove(&self.id);
        }
    }
}

impl Exchange {
    /// Sends another message of this exchange.
    pub async fn send<M: prost::Message>(&self, message: &M) -> Result<()> {
        let out = framed::message(framed::KIND_REQUEST, 0, self.id, message)
            .map_err(|e| self.conn.refused(e))?;
        self.conn.queue(Out::Frames(out)).await
    }

    /// Sends raw bytes of this exchange (in frames of at most [`crate::MAX_BODY`] bytes),
    /// without copying them.
    pub async fn send_data(&self, mut bytes: Bytes) -> Result<()> {
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(framed::MAX_BODY));
            self.conn.queue(framed::data(self.id, 0, piece)).await?;
        }
        Ok(())
    }

    /// The next message or data that came for this exchange. A failure the service sent is
    /// [`Error::Failed`]; a connection that ended is [`Error::Lost`].
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Part<M>> {
        let Some((frame, fd)) = self.inbox.recv().await else {
            return Err(self.conn.lost());
        };
        match frame.kind {
            KIND_DATA => Ok(Part::Data(frame.body)),
            KIND_REPLY if frame.flags & FLAG_ERROR != 0 => {
                Err(Error::Failed(Box::new(failure(&frame.body))))
            }
            KIND_REPLY => decode(&frame.body)
                .map(|m| Part::Message(m, fd))
                .map_err(|e| self.lost(format!("a reply that does not decode: {e}"))),
            other => Err(self.lost(format!("a frame of kind {other} in a reply"))),
        }
    }

    /// The connection, for messages.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The error for a peer that broke the protocol in this exchange.
    pub fn lost(&self, reason: String) -> Error {
        Error::Lost {
            service: self.conn.inner.service,
            endpoint: self.conn.inner.endpoint.clone(),
            reason,
        }
    }
}

fn decode<M: prost::Message + Default>(body: &Bytes) -> std::result::Result<M, prost::DecodeError> {
    M::decode(body.clone())
}

fn failure(body: &Bytes) -> Failure {
    match decode::<proto::Failure>(body) {
        Ok(f) => Failure::from_proto(f),
        Err(e) => Failure {
            code: "undecodable".into(),
            message: format!("a failure that does not decode: {e}"),
            store: None,
            detail: Bytes::new(),
        },
    }
}
