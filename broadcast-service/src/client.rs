//! The engine's side: [`BroadcastClient`] talks to its node's broadcast service, which writes
//! values to the store and serves reads from the node's copy.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crail_store::Store;
use crail_store::service::{self as node, Endpoint, Io};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::memory::{CHUNK, Memory};
use crate::wire::{self, reply, request};
use crate::{CacheStats, Error, ROOT, Result, VarId};

/// Time to connect and be welcomed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept for the next request.
const IDLE: usize = 8;

/// Bytes a put sends per Data message.
const PUT_CHUNK: usize = 1 << 20;

/// One connection to the service: one request at a time.
struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    async fn send(&mut self, op: request::Op) -> std::io::Result<()> {
        node::write(&mut self.io, &wire::Request { op: Some(op) }).await
    }

    async fn receive(&mut self) -> std::result::Result<reply::Result, String> {
        unwrap(node::read::<wire::Reply, _>(&mut self.io, &mut self.buf).await)
    }

    /// A reply, with the file descriptor sent with it if any (a Unix socket's only).
    async fn receive_with_fd(
        &mut self,
    ) -> (std::result::Result<reply::Result, String>, Option<OwnedFd>) {
        let Some(unix) = self.io.unix() else {
            return (self.receive().await, None);
        };
        // The descriptor comes with the message's first bytes: read them by hand.
        let mut fd = None;
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < len.len() {
            match node::recv_into_with_fd(unix, &mut len[got..], &mut fd).await {
                Ok(0) => return (Err("connection lost".into()), fd),
                Ok(n) => got += n,
                Err(e) => return (Err(e.to_string()), fd),
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > node::MAX_MESSAGE {
            return (Err(format!("a reply of {len} bytes")), fd);
        }
        self.buf.resize(len, 0);
        if let Err(e) = self.io.read_exact(&mut self.buf).await {
            return (Err(e.to_string()), fd);
        }
        let reply = wire::Reply::decode(&self.buf[..])
            .map_err(|e| node::ReadError::Bad(format!("a reply that does not decode: {e}")));
        (unwrap(reply), fd)
    }
}

fn unwrap(
    reply: std::result::Result<wire::Reply, node::ReadError>,
) -> std::result::Result<reply::Result, String> {
    match reply {
        Ok(wire::Reply {
            result: Some(result),
        }) => Ok(result),
        Ok(_) => Err("empty reply".into()),
        Err(node::ReadError::Closed) => Err("connection lost".into()),
        Err(node::ReadError::Bad(problem)) => Err(problem),
    }
}

/// An engine's handle on its node's broadcast service. Cheap to clone; requests of clones
/// run at once, each on its own connection.
#[derive(Debug, Clone)]
pub struct BroadcastClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    name: String,
    app: String,
    host: String,
    idle: parking_lot::Mutex<Vec<Conn>>,
}

impl BroadcastClient {
    /// Connects to the service at `endpoint` on behalf of application `app` (kept alive
    /// while connected; empty for none).
    pub async fn connect(endpoint: &Endpoint, app: &str) -> Result<Self> {
        let name = endpoint.to_string();
        let (conn, host) = open(endpoint, &name, app).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: endpoint.clone(),
                name,
                app: app.to_owned(),
                host,
                idle: parking_lot::Mutex::new(vec![conn]),
            }),
        })
    }

    /// Connects to the service of the node `store` connects from (its `local_host`, else
    /// 127.0.0.1), found where it advertised itself in the store: the Unix socket first.
    pub async fn connect_local(store: &Store, app: &str) -> Result<Self> {
        let host = node::host_of(store);
        let endpoints = node::advertised(store, ROOT, &host)
            .await
            .map_err(|e| Error::Service {
                service: format!("of {host}"),
                cause: format!("no broadcast service advertised for this host ({e})"),
            })?;
        let mut last = None;
        for endpoint in endpoints {
            match Self::connect(&endpoint, app).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Service {
            service: format!("of {host}"),
            cause: "its advertisement names no endpoint".into(),
        }))
    }

    /// The node's name (its address) as the service reports it.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Writes variable `var` from `data`; see [`BroadcastClient::put_stream`].
    pub async fn put(&self, var: &VarId, data: &[u8]) -> Result<u64> {
        let mut data = data;
        self.put_stream(var, &mut data).await
    }

    /// Writes variable `var` from `source` through the node's service, striped over every
    /// datanode, and returns its size. See [`crate::Broadcasts::put_stream`]: readers see it
    /// whole or not at all; a failed put leaves nothing behind.
    pub async fn put_stream<R>(&self, var: &VarId, source: &mut R) -> Result<u64>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        var.check()?;
        let mut conn = self.conn().await?;
        let lost = |e: std::io::Error| self.lost(&e.to_string());
        conn.send(request::Op::Put(wire::Put {
            var: Some(wire::var_ref(var)),
        }))
        .await
        .map_err(lost)?;
        let mut chunk = vec![0u8; PUT_CHUNK];
        loop {
            let n = source.read(&mut chunk).await.map_err(|e| Error::Source {
                var: var.clone(),
                // Dropping the connection mid-value makes the service abort the put.
                cause: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            let data = wire::Request {
                op: Some(request::Op::Data(wire::Data { len: n as u32 })),
            };
            node::write_with(&mut conn.io, &data, &chunk[..n])
                .await
                .map_err(lost)?;
        }
        conn.send(request::Op::End(wire::End {}))
            .await
            .map_err(lost)?;
        match self.finish(conn).await? {
            reply::Result::Done(done) => Ok(done.size),
            _ => Err(self.lost("unexpected reply to a put")),
        }
    }

    /// Reads variable `var` from the node's copy (fetched from the store by the first reader
    /// on the node; later readers share it, starting before it has all arrived). A put in
    /// progress is waited for up to `wait` (then [`Error::BeingWritten`]); a variable that
    /// does not exist is [`Error::UnknownVariable`].
    ///
    /// Over a Unix socket the reader maps the node's copy: its chunks are slices of shared
    /// memory, and no value bytes cross the socket. Over TCP they are streamed.
    pub async fn get(&self, var: &VarId, wait: Duration) -> Result<RemoteReader> {
        var.check()?;
        let mut conn = self.conn().await?;
        let shared = conn.io.unix().is_some();
        conn.send(request::Op::Get(wire::Get {
            var: Some(wire::var_ref(var)),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            shared_memory: shared,
        }))
        .await
        .map_err(|e| self.lost(&e.to_string()))?;
        let (reply, fd) = conn.receive_with_fd().await;
        match reply.map_err(|e| self.lost(&e))? {
            reply::Result::Start(start) => {
                let body = if start.shared {
                    let fd = fd.ok_or_else(|| self.lost("shared memory promised but not sent"))?;
                    let memory = Memory::open(fd, start.size).map_err(|e| Error::Unreadable {
                        var: var.clone(),
                        cause: format!("cannot map the node's copy: {e}"),
                    })?;
                    Body::Shared {
                        memory,
                        pos: 0,
                        arrived: 0,
                    }
                } else {
                    Body::Stream {
                        buf: BytesMut::new(),
                    }
                };
                Ok(RemoteReader {
                    client: self.clone(),
                    conn: Some(conn),
                    var: var.clone(),
                    size: start.size,
                    body,
                })
            }
            reply::Result::Failure(f) => {
                self.give_back(conn);
                Err(wire::error(f, &self.inner.name))
            }
            _ => Err(self.lost("unexpected reply to a get")),
        }
    }

    /// Reads variable `var` whole into memory (see [`BroadcastClient::get`]).
    pub async fn read_all(&self, var: &VarId, wait: Duration) -> Result<Vec<u8>> {
        let mut reader = self.get(var, wait).await?;
        let mut out = Vec::with_capacity(usize::try_from(reader.size()).unwrap_or(0));
        while let Some(chunk) = reader.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Destroys variable `var`: its blocks are freed (once readers holding them finish) and
    /// every node drops its copy.
    pub async fn destroy(&self, var: &VarId) -> Result<()> {
        var.check()?;
        self.done(request::Op::Destroy(wire::Destroy {
            var: Some(wire::var_ref(var)),
        }))
        .await
    }

    /// Destroys every variable of `app` (the application ended).
    pub async fn remove_app(&self, app: &str) -> Result<()> {
        VarId::new(app, "x").check()?;
        self.done(request::Op::RemoveApp(wire::RemoveApp { app: app.into() }))
            .await
    }

    /// Asks the service to drop its copy of `app`'s variable `id` (all of them when empty).
    pub(crate) async fn forget(&self, app: &str, id: &str) -> Result<()> {
        self.done(request::Op::Forget(wire::Forget {
            app: app.into(),
            id: id.into(),
        }))
        .await
    }

    /// What the node's cache has done.
    pub async fn stats(&self) -> Result<CacheStats> {
        let stats = self.stats_of(None).await?;
        Ok(CacheStats {
            fetches: stats.fetches,
            fetched_bytes: stats.fetched_bytes,
            hits: stats.hits,
            cached: stats.cached,
        })
    }

    /// How many times the node fetched `var` from the store.
    pub async fn fetches_of(&self, var: &VarId) -> Result<u64> {
        Ok(self.stats_of(Some(var)).await?.var_fetches)
    }

    async fn stats_of(&self, var: Option<&VarId>) -> Result<wire::Stats> {
        match self
            .call(request::Op::Stats(wire::GetStats {
                var: var.map(wire::var_ref),
            }))
            .await?
        {
            reply::Result::Stats(stats) => Ok(stats),
            _ => Err(self.lost("unexpected reply to stats")),
        }
    }

    async fn done(&self, op: request::Op) -> Result<()> {
        match self.call(op).await? {
            reply::Result::Done(_) => Ok(()),
            _ => Err(self.lost("unexpected reply")),
        }
    }

    async fn call(&self, op: request::Op) -> Result<reply::Result> {
        let mut conn = self.conn().await?;
        conn.send(op).await.map_err(|e| self.lost(&e.to_string()))?;
        self.finish(conn).await
    }

    /// The reply that ends a request; the connection goes back to the pool when it is still
    /// in step.
    async fn finish(&self, mut conn: Conn) -> Result<reply::Result> {
        match conn.receive().await.map_err(|e| self.lost(&e))? {
            reply::Result::Failure(f) => {
                self.give_back(conn);
                Err(wire::error(f, &self.inner.name))
            }
            result => {
                self.give_back(conn);
                Ok(result)
            }
        }
    }

    async fn conn(&self) -> Result<Conn> {
        let idle = self.inner.idle.lock().pop();
        match idle {
            Some(conn) => Ok(conn),
            None => Ok(
                open(&self.inner.endpoint, &self.inner.name, &self.inner.app)
                    .await?
                    .0,
            ),
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.inner.idle.lock();
        if idle.len() < IDLE {
            idle.push(conn);
        }
    }

    fn lost(&self, cause: &str) -> Error {
        Error::Service {
            service: self.inner.name.clone(),
            cause: cause.to_owned(),
        }
    }
}

/// Opens a connection and says hello; returns it and the node's name.
async fn open(endpoint: &Endpoint, name: &str, app: &str) -> Result<(Conn, String)> {
    let failed = |cause: String| Error::Service {
        service: name.to_owned(),
        cause,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, node::connect(endpoint))
        .await
        .map_err(|_| failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| failed(format!("cannot connect: {e}")))?;
    let mut conn = Conn {
        io: stream,
        buf: Vec::new(),
    };
    let hello = request::Op::Hello(wire::Hello {
        version: wire::VERSION,
        app: app.to_owned(),
        client: format!("crail-broadcast {}", env!("CARGO_PKG_VERSION")),
    });
    let welcome = async {
        conn.send(hello).await.map_err(|e| e.to_string())?;
        conn.receive().await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, welcome).await {
        Err(_) => Err(failed(format!("no welcome within {CONNECT_TIMEOUT:?}"))),
        Ok(Err(cause)) => Err(failed(cause)),
        Ok(Ok(reply::Result::Welcome(w))) => Ok((conn, w.host)),
        Ok(Ok(reply::Result::Failure(f))) => Err(failed(f.problem)),
        Ok(Ok(_)) => Err(failed(
            "the service answered hello with something else".into(),
        )),
    }
}

/// A variable being read from the node's copy: its chunks in order, each as soon as it is
/// there. Dropping it part-way closes its connection.
#[derive(Debug)]
pub struct RemoteReader {
    client: BroadcastClient,
    /// `None` once the value has ended.
    conn: Option<Conn>,
    var: VarId,
    size: u64,
    body: Body,
}

/// How the value's bytes reach the reader.
#[derive(Debug)]
enum Body {
    /// Streamed over the connection; chunks land in `buf`.
    Stream { buf: BytesMut },
    /// In the node's copy, mapped here: bytes up to `arrived` are in place, up to `pos`
    /// handed out.
    Shared {
        memory: Arc<Memory>,
        pos: u64,
        arrived: u64,
    },
}

impl RemoteReader {
    /// The variable.
    pub fn var(&self) -> &VarId {
        &self.var
    }

    /// The value's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the chunks are slices of the node's copy in shared memory (not streamed).
    pub fn is_shared(&self) -> bool {
        matches!(self.body, Body::Shared { .. })
    }

    /// The next chunk, or `None` at the value's end. A value that cannot be read whole
    /// (a datanode died, the service went away) is [`Error::Unreadable`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Body::Shared {
                memory,
                pos,
                arrived,
            } = &mut self.body
                && *pos < *arrived
            {
                let start = *pos;
                *pos = (*arrived).min(start + CHUNK as u64);
                return Ok(Some(memory.slice(start as usize, *pos as usize)));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            let unreadable = |cause: String| Error::Unreadable {
                var: self.var.clone(),
                cause: format!("the stream from {} broke: {cause}", self.client.inner.name),
            };
            match (conn.receive().await, &mut self.body) {
                (Ok(reply::Result::Data(data)), Body::Stream { buf }) => {
                    return match wire::read_data(&mut conn.io, data.len, buf).await {
                        Ok(bytes) => Ok(Some(bytes)),
                        Err(cause) => {
                            self.conn = None;
                            Err(unreadable(cause))
                        }
                    };
                }
                (Ok(reply::Result::Arrived(a)), Body::Shared { arrived, .. })
                    if a.upto > *arrived && a.upto <= self.size =>
                {
                    *arrived = a.upto;
                }
                (Ok(reply::Result::End(_)), body) => {
                    if let Body::Shared { arrived, .. } = body {
                        // Whole: the rest is in place.
                        *arrived = self.size;
                    }
                    self.give_back();
                }
                (Ok(reply::Result::Failure(f)), _) => {
                    self.give_back();
                    return Err(wire::error(f, &self.client.inner.name));
                }
                (Ok(_), _) => {
                    self.conn = None;
                    return Err(unreadable("unexpected reply in a value".into()));
                }
                (Err(cause), _) => {
                    self.conn = None;
                    return Err(unreadable(cause));
                }
            }
        }
    }

    /// The value ended in step: its connection can serve another request.
    fn give_back(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.client.give_back(conn);
        }
    }
}
