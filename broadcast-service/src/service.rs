//! The per-node service: engines on the node connect over a Unix socket or TCP to put, get
//! and destroy variables. Gets are served from the node's [`NodeCache`], so a variable is
//! fetched to a node once however many of its engines read it. A destroy (or an application's
//! end) frees the blocks and tells every other node's service to drop its copy; each service
//! also sweeps its copies of variables gone from the store, in case that word was lost.
//!
//! The service keeps its clients' applications alive in the store, and destroys the variables
//! of applications nobody has seen for a while (their driver died without saying so).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use crail_store::service::{self as node, Endpoint, Io, ReadError};
use crail_store::{CreateOptions, Error as StoreError, Store};
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::BroadcastClient;
use crate::wire::{self, reply, request};
use crate::{Broadcasts, CachedReader, Error, NodeCache, ROOT, Result, VarId};

pub use crail_store::service::Listener;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 1024;

/// Time a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Time a peer has to drop its copy before a destroy goes on without it.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// An application no service has seen a client of for this long has its variables
    /// destroyed; `None` keeps them until destroyed explicitly.
    pub orphan_ttl: Option<Duration>,
    /// How often the node's copies are checked against the store.
    pub sweep_every: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            orphan_ttl: Some(Duration::from_secs(3600)),
            sweep_every: Duration::from_secs(5),
        }
    }
}

/// Records where the service of node `host` listens, in the store
/// (`/crail-broadcast/.services/<host>`), for [`BroadcastClient::connect_local`] and for the
/// other services.
pub async fn advertise(store: &Store, host: &str, endpoints: &[Endpoint]) -> Result<()> {
    Ok(node::advertise(store, ROOT, host, endpoints).await?)
}

/// The hosts whose broadcast service advertised itself in the store, in address order.
pub async fn advertised_hosts(store: &Store) -> Result<Vec<String>> {
    Ok(node::advertised_hosts(store, ROOT).await?)
}

/// Serves `cache` as node `host`'s broadcast service on `listeners` until `shutdown`
/// completes.
pub async fn run(
    cache: NodeCache,
    host: String,
    config: ServiceConfig,
    listeners: Vec<Listener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let service = Arc::new(Service {
        broadcasts: cache.broadcasts().clone(),
        cache,
        host,
        config,
        apps: parking_lot::Mutex::new(HashMap::new()),
    });
    let every = match service.config.orphan_ttl {
        Some(ttl) => (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)),
        None => Duration::from_secs(30),
    }
    .min(service.config.sweep_every);
    let (keeper, handler) = (Arc::clone(&service), Arc::clone(&service));
    node::run(
        "broadcast service",
        listeners,
        MAX_CONNECTIONS,
        Some(every),
        move || {
            let service = Arc::clone(&keeper);
            async move { service.housekeeping().await }
        },
        shutdown,
        move |stream| Arc::clone(&handler).serve(stream),
    )
    .await;
    Ok(())
}

#[derive(Debug)]
struct Service {
    broadcasts: Broadcasts,
    cache: NodeCache,
    host: String,
    config: ServiceConfig,
    /// Applications with clients connected here, and how many connections.
    apps: parking_lot::Mutex<HashMap<String, usize>>,
}

/// How a request went for the connection: on, or over (the peer left or broke the protocol).
type Going = std::result::Result<(), String>;

impl Service {
    async fn serve(self: Arc<Self>, mut stream: Box<dyn Io>) {
        // One request at a time: reading and writing never overlap, so the connection is not
        // split (and its Unix socket stays at hand to pass memory files on).
        let mut buf = Vec::new();
        let hello = tokio::time::timeout(
            HELLO_TIMEOUT,
            node::read::<wire::Request, _>(&mut stream, &mut buf),
        )
        .await;
        let hello = match hello {
            Ok(Ok(wire::Request {
                op: Some(request::Op::Hello(hello)),
            })) => hello,
            _ => return,
        };
        let refuse = |problem: String| {
            reply::Result::Failure(wire::Failure {
                code: "service".into(),
                problem,
                ..Default::default()
            })
        };
        if hello.version != wire::VERSION {
            let problem = format!(
                "protocol version {} is not spoken here (this service speaks {})",
                hello.version,
                wire::VERSION
            );
            let _ = send(&mut stream, refuse(problem)).await;
            return;
        }
        if !hello.app.is_empty() {
            if let Err(e) = VarId::new(hello.app.clone(), "x").check() {
                let _ = send(&mut stream, refuse(e.to_string())).await;
                return;
            }
            let first = {
                let mut apps = self.apps.lock();
                let count = apps.entry(hello.app.clone()).or_default();
                *count += 1;
                *count == 1
            };
            if first {
                self.touch(&hello.app).await;
            }
        }
        let welcome = reply::Result::Welcome(wire::Welcome {
            version: wire::VERSION,
            host: self.host.clone(),
        });
        if send(&mut stream, welcome).await.is_ok() {
            loop {
                let request = match node::read::<wire::Request, _>(&mut stream, &mut buf).await {
                    Ok(request) => request,
                    Err(ReadError::Closed) => break,
                    Err(ReadError::Bad(problem)) => {
                        tracing::debug!("broadcast service: dropping a client: {problem}");
                        break;
                    }
                };
                if let Err(problem) = self.handle(request.op, &mut stream, &mut buf).await {
                    tracing::debug!("broadcast service: connection over: {problem}");
                    break;
                }
            }
        }
        if !hello.app.is_empty() {
            let mut apps = self.apps.lock();
            if let Some(count) = apps.get_mut(&hello.app) {
                *count -= 1;
                if *count == 0 {
                    apps.remove(&hello.app);
                }
            }
        }
    }

    async fn handle(
        &self,
        op: Option<request::Op>,
        conn: &mut Box<dyn Io>,
        buf: &mut Vec<u8>,
    ) -> Going {
        let outcome = match op {
            Some(request::Op::Put(put)) => {
                let var = wire::var_id(put.var.as_ref());
                let (result, going) = self.put(var, conn, buf).await;
                going?;
                result.map(|size| reply::Result::Done(wire::Done { size }))
            }
            Some(request::Op::Get(get)) => {
                let var = wire::var_id(get.var.as_ref());
                let wait = Duration::from_millis(get.wait_ms);
                return self.get(&var, wait, get.shared_memory, conn).await;
            }
            Some(request::Op::Destroy(d)) => {
                let var = wire::var_id(d.var.as_ref());
                self.destroy(&var).await.map(|()| done())
            }
            Some(request::Op::RemoveApp(r)) => self.remove_app(&r.app).await.map(|()| done()),
            Some(request::Op::Forget(f)) => {
                if f.id.is_empty() {
                    self.cache.drop_app(&f.app);
                } else {
                    self.cache.drop_var(&VarId::new(f.app, f.id));
                }
                Ok(done())
            }
            Some(request::Op::Stats(s)) => {
                let stats = self.cache.stats();
                let var_fetches = s
                    .var
                    .as_ref()
                    .map_or(0, |v| self.cache.fetches_of(&wire::var_id(Some(v))));
                Ok(reply::Result::Stats(wire::Stats {
                    fetches: stats.fetches,
                    fetched_bytes: stats.fetched_bytes,
                    hits: stats.hits,
                    cached: stats.cached,
                    var_fetches,
                }))
            }
            // Raw bytes may follow a stray Data: the stream cannot be trusted any more.
            Some(request::Op::Data(_) | request::Op::End(_)) => {
                let problem = "data outside a put".to_owned();
                let _ = send(conn, invalid(&problem)).await;
                return Err(problem);
            }
            Some(request::Op::Hello(_)) => Ok(invalid("hello was already said")),
            None => Ok(invalid("a request without an operation")),
        };
        let result = outcome.unwrap_or_else(|e| reply::Result::Failure(wire::failure(&e)));
        send(conn, result).await.map_err(|e| e.to_string())
    }

    /// Writes `var` from the Data messages that follow, up to End. A client that leaves
    /// before End fails the put (nothing is left). After a failure the rest of the value is
    /// read and dropped, so the connection stays in step.
    async fn put(
        &self,
        var: VarId,
        rd: &mut Box<dyn Io>,
        buf: &mut Vec<u8>,
    ) -> (Result<u64>, Going) {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let broadcasts = self.broadcasts.clone();
        let writing = tokio::spawn(async move {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let mut source = tokio_util::io::StreamReader::new(Box::pin(stream));
            broadcasts.put_stream(&var, &mut source).await
        });
        let mut chunk = bytes::BytesMut::new();
        let going = loop {
            let problem = match node::read::<wire::Request, _>(rd, buf).await {
                Ok(wire::Request {
                    op: Some(request::Op::Data(data)),
                }) => match wire::read_data(rd, data.len, &mut chunk).await {
                    Ok(bytes) => {
                        // A put that failed already takes no more: drop the bytes.
                        let _ = tx.send(Ok(bytes)).await;
                        continue;
                    }
                    Err(problem) => problem,
                },
                Ok(wire::Request {
                    op: Some(request::Op::End(_)),
                }) => break Ok(()),
                Ok(_) => "a request other than data in the middle of a put".to_owned(),
                Err(e) => e.to_string(),
            };
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "the client stopped before the end of the value ({problem})"
                ))))
                .await;
            break Err(problem);
        };
        drop(tx);
        let result = writing.await.unwrap_or_else(|e| {
            Err(Error::Service {
                service: self.host.clone(),
                cause: format!("the put's task failed: {e}"),
            })
        });
        (result, going)
    }

    /// Streams `var` from the node's copy: Start, Data..., End, or a Failure. A client that
    /// asks for shared memory on a Unix socket gets the copy's memory file instead.
    async fn get(
        &self,
        var: &VarId,
        wait: Duration,
        shared: bool,
        conn: &mut Box<dyn Io>,
    ) -> Going {
        let failed = |e: &Error| reply::Result::Failure(wire::failure(e));
        let mut reader = match self.cache.get(var, wait).await {
            Ok(reader) => reader,
            Err(e) => return send(conn, failed(&e)).await.map_err(|e| e.to_string()),
        };
        if shared && conn.unix().is_some() {
            match reader.memory_fd() {
                Ok(fd) => return self.share(reader, fd, conn).await,
                // Streamed instead.
                Err(e) => tracing::warn!("broadcast service: cannot share {var}: {e}"),
            }
        }
        let start = reply::Result::Start(wire::Start {
            size: reader.size(),
            shared: false,
        });
        send(conn, start).await.map_err(|e| e.to_string())?;
        loop {
            let (message, data) = match reader.next_chunk().await {
                Ok(Some(chunk)) => (
                    reply::Result::Data(wire::Data {
                        len: chunk.len() as u32,
                    }),
                    chunk,
                ),
                Ok(None) => (reply::Result::End(wire::End {}), Bytes::new()),
                Err(e) => (failed(&e), Bytes::new()),
            };
            let last = !matches!(message, reply::Result::Data(_));
            let message = wire::Reply {
                result: Some(message),
            };
            node::write_with(conn, &message, &data)
                .await
                .map_err(|e| e.to_string())?;
            if last {
                return Ok(());
            }
        }
    }

    /// Sends the copy's memory file with Start, then Arrived as it fills, then End (or a
    /// Failure).
    async fn share(&self, mut reader: CachedReader, fd: OwnedFd, conn: &mut Box<dyn Io>) -> Going {
        let start = wire::Reply {
            result: Some(reply::Result::Start(wire::Start {
                size: reader.size(),
                shared: true,
            })),
        };
        let unix = conn.unix().ok_or_else(|| "not a Unix socket".to_owned())?;
        node::send_with_fd(unix, &node::frame(&start), fd.as_fd())
            .await
            .map_err(|e| e.to_string())?;
        drop(fd);
        loop {
            let (message, last) = match reader.arrived().await {
                Ok(Some(upto)) => (reply::Result::Arrived(wire::Arrived { upto }), false),
                Ok(None) => (reply::Result::End(wire::End {}), true),
                Err(e) => (reply::Result::Failure(wire::failure(&e)), true),
            };
            send(conn, message).await.map_err(|e| e.to_string())?;
            if last {
                return Ok(());
            }
        }
    }

    async fn destroy(&self, var: &VarId) -> Result<()> {
        self.broadcasts.destroy(var).await?;
        self.cache.drop_var(var);
        self.tell_peers(&var.app, &var.id).await;
        Ok(())
    }

    async fn remove_app(&self, app: &str) -> Result<()> {
        self.broadcasts.remove_app(app).await?;
        self.cache.drop_app(app);
        match self.broadcasts.store().delete(&alive_dir(app), true).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.tell_peers(app, "").await;
        Ok(())
    }

    /// Tells every other node's service to drop its copy of `app`'s variable `id` (all of
    /// them when empty). A node that does not answer in time misses it; its sweep catches up.
    async fn tell_peers(&self, app: &str, id: &str) {
        let store = self.broadcasts.store();
        let hosts = match advertised_hosts(store).await {
            Ok(hosts) => hosts,
            Err(e) => {
                tracing::warn!("broadcast service: cannot find the other nodes: {e}");
                return;
            }
        };
        let mut told = JoinSet::new();
        for host in hosts.into_iter().filter(|h| *h != self.host) {
            let (store, app, id) = (store.clone(), app.to_owned(), id.to_owned());
            told.spawn(async move {
                let tell = async {
                    let endpoints = node::advertised(&store, ROOT, &host).await?;
                    let endpoint = endpoints
                        .iter()
                        .find(|e| matches!(e, Endpoint::Tcp(_)))
                        .ok_or_else(|| Error::Service {
                            service: host.clone(),
                            cause: "advertises no TCP endpoint".into(),
                        })?;
                    let peer = BroadcastClient::connect(endpoint, "").await?;
                    peer.forget(&app, &id).await
                };
                match tokio::time::timeout(PEER_TIMEOUT, tell).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("broadcast service: {host} missed a drop: {e}"),
                    Err(_) => tracing::warn!("broadcast service: {host} did not answer a drop"),
                }
            });
        }
        while told.join_next().await.is_some() {}
    }

    /// Marks `app` as seen now: the modification time of its `.alive/<app>` directory is the
    /// last sign of life any node saw.
    async fn touch(&self, app: &str) {
        let store = self.broadcasts.store();
        let options = CreateOptions::default();
        let dir = alive_dir(app);
        for dir in [ROOT.to_owned(), format!("{ROOT}/.alive"), dir.clone()] {
            match store.create_dir(&dir, &options).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => {
                    tracing::debug!("broadcast service: cannot mark {app} alive: {e}");
                    return;
                }
            }
        }
        let mark = format!("{dir}/{}-{:x}", self.host, node::nonce());
        if store.create_dir(&mark, &options).await.is_ok() {
            let _ = store.delete(&mark, false).await;
        }
    }

    /// Keeps the applications with clients here alive, destroys the variables of the ones
    /// nobody touched for the orphan TTL, and sweeps the node's copies.
    async fn housekeeping(&self) {
        self.cache.sweep().await;
        let Some(ttl) = self.config.orphan_ttl else {
            return;
        };
        let live: Vec<String> = self.apps.lock().keys().cloned().collect();
        for app in &live {
            self.touch(app).await;
        }
        let store = self.broadcasts.store();
        let entries = match store.list(ROOT).await {
            Ok(entries) => entries,
            Err(StoreError::NotFound { .. }) => return,
            Err(e) => {
                tracing::debug!("broadcast service: cannot list {ROOT}: {e}");
                return;
            }
        };
        let now = SystemTime::now();
        for entry in entries {
            if entry.name.starts_with('.') || live.contains(&entry.name) {
                continue;
            }
            let seen = match store.stat(&alive_dir(&entry.name)).await {
                Ok(stat) => stat.modified,
                Err(_) => match store.stat(&format!("{ROOT}/{}", entry.name)).await {
                    Ok(stat) => stat.modified,
                    Err(_) => continue,
                },
            };
            let idle = now.duration_since(seen).unwrap_or_default();
            if idle > ttl {
                tracing::info!(
                    "broadcast service: destroying the variables of {}: no client seen for {idle:?}",
                    entry.name
                );
                if let Err(e) = self.remove_app(&entry.name).await {
                    tracing::warn!("broadcast service: cannot remove {}: {e}", entry.name);
                }
            }
        }
    }
}

fn alive_dir(app: &str) -> String {
    format!("{ROOT}/.alive/{app}")
}

fn done() -> reply::Result {
    reply::Result::Done(wire::Done::default())
}

fn invalid(problem: &str) -> reply::Result {
    reply::Result::Failure(wire::failure(&Error::Service {
        service: String::new(),
        cause: problem.into(),
    }))
}

async fn send<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    result: reply::Result,
) -> std::io::Result<()> {
    node::write(
        wr,
        &wire::Reply {
            result: Some(result),
        },
    )
    .await
}
