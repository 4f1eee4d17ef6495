//! The engine's side: [`BroadcastClient`] talks to its node's broadcast service, which writes
//! values to the store and serves reads from the node's copy.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crail_node_service::{self as node, Connection, Endpoint, Exchange, Options, Part};
use crail_store::{ClientConfig, Store};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::memory::{CHUNK, Memory};
use crate::wire::{self, reply, request};
use crate::{CacheStats, Error, ROOT, Result, VarId};

/// Idle connections kept for the next request.
const IDLE: usize = 8;

/// Bytes a put sends per data frame.
const PUT_CHUNK: usize = 1 << 20;

/// The typed error behind a failure of the layer: the service's own failures as its errors,
/// the connection's as [`Error::Service`].
fn typed(error: node::Error) -> Error {
    match error {
        node::Error::Failed(failure) => wire::error(failure),
        other => Error::Service(other),
    }
}

/// An engine's handle on its node's broadcast service. Cheap to clone; requests of clones
/// run at once, each on its own connection (a value streams through one without holding up
/// the others).
#[derive(Debug, Clone)]
pub struct BroadcastClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    options: Options,
    host: String,
    idle: parking_lot::Mutex<Vec<Connection>>,
}

impl BroadcastClient {
    /// Connects to the service at `endpoint` on behalf of application `app` (kept alive
    /// while connected; empty for none), with the secret and TLS settings of `cluster`.
    pub async fn connect(endpoint: &Endpoint, app: &str, cluster: &ClientConfig) -> Result<Self> {
        let options = Options::new("broadcast", app).for_cluster(cluster);
        let conn = Connection::open(endpoint, &options).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: endpoint.clone(),
                options,
                host: conn.host().to_owned(),
                idle: parking_lot::Mutex::new(vec![conn]),
            }),
        })
    }

    /// Connects to the service of the node `store` connects from (its `local_host`, else
    /// 127.0.0.1), found where it advertised itself in the store: the Unix socket first. The
    /// connection proves the secret of `store`'s configuration.
    pub async fn connect_local(store: &Store, app: &str) -> Result<Self> {
        let host = node::host_of(store);
        let unreachable = |cause: String| {
            Error::Service(node::Error::Connect {
                service: "broadcast",
                endpoint: format!("of {host}"),
                cause,
            })
        };
        let endpoints = node::advertised(store, ROOT, &host).await.map_err(|e| {
            unreachable(format!(
                "no broadcast service advertised for this host ({e})"
            ))
        })?;
        let mut last = None;
        for endpoint in endpoints {
            match Self::connect(&endpoint, app, store.config()).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| unreachable("its advertisement names no endpoint".into())))
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
        let conn = self.conn().await?;
        let exchange = conn
            .start(&wire::Request {
                op: Some(request::Op::Put(wire::Put {
                    var: Some(wire::var_ref(var)),
                })),
            })
            .await?;
        let mut chunk = BytesMut::new();
        loop {
            chunk.reserve(PUT_CHUNK);
            // Dropping the connection mid-value (an early return here) makes the service
            // abort the put.
            let n = read_up_to(source, &mut chunk, PUT_CHUNK)
                .await
                .map_err(|e| Error::Source {
                    var: var.clone(),
                    cause: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            exchange.send_data(chunk.split().freeze()).await?;
        }
        let end = wire::Request {
            op: Some(request::Op::End(wire::End {})),
        };
        exchange.send(&end).await?;
        match self.finish(conn, exchange).await? {
            reply::Result::Done(done) => Ok(done.size),
            _ => Err(self.lost("a reply other than done to a put")),
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
        let conn = self.conn().await?;
        let shared = conn.is_unix();
        let mut exchange = conn
            .start(&wire::Request {
                op: Some(request::Op::Get(wire::Get {
                    var: Some(wire::var_ref(var)),
                    wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    shared_memory: shared,
                })),
            })
            .await?;
        let (start, fd) = match exchange.next::<wire::Reply>().await {
            Ok(Part::Message(
                wire::Reply {
                    result: Some(reply::Result::Start(start)),
                },
                fd,
            )) => (start, fd),
            Ok(_) => return Err(self.lost("a reply other than start to a get")),
            Err(e @ node::Error::Failed(_)) => {
                self.give_back(conn);
                return Err(typed(e));
            }
            Err(e) => return Err(typed(e)),
        };
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
            Body::Stream
        };
        Ok(RemoteReader {
            client: self.clone(),
            open: Some((conn, exchange)),
            var: var.clone(),
            size: start.size,
            body,
        })
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
    #[cfg(feature = "node")]
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
            _ => Err(self.lost("a reply other than stats")),
        }
    }

    async fn done(&self, op: request::Op) -> Result<()> {
        match self.call(op).await? {
            reply::Result::Done(_) => Ok(()),
            _ => Err(self.lost("a reply other than done")),
        }
    }

    async fn call(&self, op: request::Op) -> Result<reply::Result> {
        let conn = self.conn().await?;
        let exchange = conn.start(&wire::Request { op: Some(op) }).await?;
        self.finish(conn, exchange).await
    }

    /// The reply that ends an exchange; the connection goes back to the pool when it is
    /// still in step.
    async fn finish(&self, conn: Connection, mut exchange: Exchange) -> Result<reply::Result> {
        let result = match exchange.next::<wire::Reply>().await {
            Ok(Part::Message(
                wire::Reply {
                    result: Some(result),
                },
                _,
            )) => Ok(result),
            Ok(_) => return Err(self.lost("data or an empty reply where a reply was due")),
            Err(e @ node::Error::Failed(_)) => Err(typed(e)),
            Err(e) => return Err(typed(e)),
        };
        drop(exchange);
        self.give_back(conn);
        result
    }

    async fn conn(&self) -> Result<Connection> {
        let idle = self.inner.idle.lock().pop();
        match idle {
            Some(conn) if !conn.is_closed() => Ok(conn),
            _ => Ok(Connection::open(&self.inner.endpoint, &self.inner.options).await?),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.inner.idle.lock();
        if idle.len() < IDLE && !conn.is_closed() {
            idle.push(conn);
        }
    }

    fn lost(&self, reason: &str) -> Error {
        Error::Service(node::Error::Lost {
            service: "broadcast",
            endpoint: self.inner.endpoint.to_string(),
            reason: reason.to_owned(),
        })
    }
}

/// Reads from `source` into `buf` until `want` bytes are there or the source ends; how many.
async fn read_up_to<R: AsyncRead + Unpin + ?Sized>(
    source: &mut R,
    buf: &mut BytesMut,
    want: usize,
) -> std::io::Result<usize> {
    while buf.len() < want {
        if source.read_buf(buf).await? == 0 {
            break;
        }
    }
    Ok(buf.len())
}

/// A variable being read from the node's copy: its chunks in order, each as soon as it is
/// there. Dropping it part-way closes its connection.
#[derive(Debug)]
pub struct RemoteReader {
    client: BroadcastClient,
    /// The connection and the exchange the value comes through; `None` once it has ended.
    open: Option<(Connection, Exchange)>,
    var: VarId,
    size: u64,
    body: Body,
}

/// How the value's bytes reach the reader.
#[derive(Debug)]
enum Body {
    /// Streamed over the connection.
    Stream,
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
            let Some((_, exchange)) = self.open.as_mut() else {
                return Ok(None);
            };
            let unreadable = |cause: String| Error::Unreadable {
                var: self.var.clone(),
                cause: format!(
                    "the stream from {} broke: {cause}",
                    self.client.inner.endpoint
                ),
            };
            match (exchange.next::<wire::Reply>().await, &mut self.body) {
                (Ok(Part::Data(bytes)), Body::Stream) => return Ok(Some(bytes)),
                (
                    Ok(Part::Message(
                        wire::Reply {
                            result: Some(result),
                        },
                        _,
                    )),
                    body,
                ) => {
                    match (result, body) {
                        (reply::Result::Arrived(a), Body::Shared { arrived, .. })
                            if a.upto > *arrived && a.upto <= self.size =>
                        {
                            *arrived = a.upto;
                        }
                        (reply::Result::End(_), body) => {
                            if let Body::Shared { arrived, .. } = body {
                                // Whole: the rest is in place.
                                *arrived = self.size;
                            }
                            self.give_back();
                        }
                        _ => {
                            self.open = None;
                            return Err(unreadable("unexpected reply in a value".into()));
                        }
                    }
                }
                (Ok(_), _) => {
                    self.open = None;
                    return Err(unreadable("unexpected reply in a value".into()));
                }
                (Err(e @ node::Error::Failed(_)), _) => {
                    self.give_back();
                    return Err(typed(e));
                }
                (Err(e), _) => {
                    self.open = None;
                    return Err(unreadable(e.to_string()));
                }
            }
        }
    }

    /// The value ended in step: its connection can serve another request.
    fn give_back(&mut self) {
        if let Some((conn, exchange)) = self.open.take() {
            drop(exchange);
            self.client.give_back(conn);
        }
    }
}

/// The hosts whose broadcast service advertised itself in the store, in address order.
pub async fn advertised_hosts(store: &Store) -> Result<Vec<String>> {
    Ok(crail_node_service::advertised_hosts(store, ROOT).await?)
}
