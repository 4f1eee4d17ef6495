//! The per-node service: engines on the node connect over a Unix socket or TCP to put, get
//! and destroy variables. Gets are served from the node's [`NodeCache`], so a variable is
//! fetched to a node once however many of its engines read it. A destroy (or an application's
//! end) frees the blocks and tells every other node's service to drop its copy; each service
//! also sweeps its copies of variables gone from the store, in case that word was lost.
//!
//! The node-service layer keeps its clients' applications alive in the store; the service
//! destroys the variables of applications nobody has seen for a while (their driver died
//! without saying so).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crail_node_service::{self as node, Endpoint, Listener, Part, Served, ServerConfig, Sessions};
use crail_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::wire::{self, reply, request};
use crate::{BroadcastClient, advertised_hosts};
use crate::{Broadcasts, Error, NodeCache, ROOT, Result, VarId};

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
    /// A group whose local processes may use the Unix socket (`[security] local_group`).
    pub local_group: Option<u32>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            orphan_ttl: Some(Duration::from_secs(3600)),
            sweep_every: Duration::from_secs(5),
            local_group: None,
        }
    }
}

/// Records where the service of node `host` listens, in the store
/// (`/crail-broadcast/.services/<host>`), for [`BroadcastClient::connect_local`] and for the
/// other services.
pub async fn advertise(store: &Store, host: &str, endpoints: &[Endpoint]) -> Result<()> {
    Ok(node::advertise(store, ROOT, host, endpoints).await?)
}

/// Serves `cache` as node `host`'s broadcast service on `listeners` until `shutdown`
/// completes. Every connection must prove the secret of the cache's store client, as the
/// store's own connections do.
pub async fn run(
    cache: NodeCache,
    host: String,
    config: ServiceConfig,
    listeners: Vec<Listener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let store = cache.broadcasts().store().clone();
    let every = match config.orphan_ttl {
        Some(ttl) => (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)),
        None => Duration::from_secs(30),
    }
    .min(config.sweep_every);
    let server = ServerConfig {
        secret: store.config().secret.clone(),
        tls: store.config().tls.clone(),
        housekeeping: Some(every),
        local_group: config.local_group,
        ..ServerConfig::default()
    };
    let service = Arc::new(Service {
        sessions: Sessions::new(store, ROOT, host.clone()),
        broadcasts: cache.broadcasts().clone(),
        cache,
        host,
        config,
    });
    node::run(service, server, listeners, shutdown).await;
    Ok(())
}

#[derive(Debug)]
struct Service {
    sessions: Sessions,
    broadcasts: Broadcasts,
    cache: NodeCache,
    host: String,
    config: ServiceConfig,
}

impl node::Service for Service {
    const NAME: &'static str = "broadcast";
    type Conn = ();

    fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    async fn serve(self: Arc<Self>, mut exchange: Served<()>) {
        let op = match exchange.request::<wire::Request>().await {
            Ok(request) => request.op,
            Err(problem) => {
                exchange.fail(&wire::failure(&invalid(&problem))).await;
                return;
            }
        };
        let outcome = match op {
            Some(request::Op::Put(put)) => {
                let var = wire::var_id(put.var.as_ref());
                self.put(var, &mut exchange)
                    .await
                    .map(|size| reply::Result::Done(wire::Done { size }))
            }
            Some(request::Op::Get(get)) => {
                let var = wire::var_id(get.var.as_ref());
                let wait = Duration::from_millis(get.wait_ms);
                self.get(&var, wait, get.shared_memory, &exchange).await;
                return;
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
            Some(request::Op::End(_)) => Err(invalid("End outside a put")),
            None => Err(invalid("a request without an operation")),
        };
        match outcome {
            Ok(result) => {
                send(&exchange, result).await;
            }
            Err(e) => {
                exchange.fail(&wire::failure(&e)).await;
            }
        }
    }

    async fn housekeeping(self: Arc<Self>) {
        self.cache.sweep().await;
        let Some(ttl) = self.config.orphan_ttl else {
            return;
        };
        for (app, idle) in self.sessions.orphans(ttl).await {
            tracing::info!(
                "broadcast service: destroying the variables of {app}: no client seen for {idle:?}"
            );
            if let Err(e) = self.remove_app(&app).await {
                tracing::warn!("broadcast service: cannot remove {app}: {e}");
            }
        }
    }
}

impl Service {
    /// Writes `var` from the data that follow, up to End. A client that leaves before End
    /// fails the put (nothing is left).
    async fn put(&self, var: VarId, exchange: &mut Served<()>) -> Result<u64> {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let broadcasts = self.broadcasts.clone();
        let target = var.clone();
        let writing = tokio::spawn(async move {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let mut source = tokio_util::io::StreamReader::new(Box::pin(stream));
            broadcasts.put_stream(&target, &mut source).await
        });
        loop {
            let problem = match exchange.next::<wire::Request>().await {
                Some(Ok(Part::Data(bytes))) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        // The put failed already: its error is the answer.
                        break;
                    }
                    continue;
                }
                Some(Ok(Part::Message(
                    wire::Request {
                        op: Some(request::Op::End(_)),
                    },
                    _,
                ))) => break,
                Some(Ok(Part::Message(..))) => {
                    "a request other than data in the middle of a put".to_owned()
                }
                Some(Err(problem)) => problem,
                None => "the client is gone".to_owned(),
            };
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "the client stopped before the end of the value ({problem})"
                ))))
                .await;
            break;
        }
        drop(tx);
        writing.await.unwrap_or_else(|e| {
            Err(Error::Source {
                var,
                cause: format!("the put's task failed: {e}"),
            })
        })
    }

    /// Streams `var` from the node's copy: Start, data..., End, or a Failure. A client that
    /// asks for shared memory on a Unix socket gets the copy's memory file instead, then
    /// Arrived as it fills.
    async fn get(&self, var: &VarId, wait: Duration, shared: bool, exchange: &Served<()>) {
        let failed = |e: &Error| wire::failure(e);
        let mut reader = match self.cache.get(var, wait).await {
            Ok(reader) => reader,
            Err(e) => {
                exchange.fail(&failed(&e)).await;
                return;
            }
        };
        if shared && exchange.is_unix() {
            match reader.memory_fd() {
                Ok(fd) => {
                    let start = reply::Result::Start(wire::Start {
                        size: reader.size(),
                        shared: true,
                    });
                    let start = wire::Reply {
                        result: Some(start),
                    };
                    if !exchange.reply_with_fd(&start, fd).await {
                        return;
                    }
                    loop {
                        let sent = match reader.arrived().await {
                            Ok(Some(upto)) => {
                                send(exchange, reply::Result::Arrived(wire::Arrived { upto })).await
                            }
                            Ok(None) => {
                                send(exchange, reply::Result::End(wire::End {})).await;
                                return;
                            }
                            Err(e) => {
                                exchange.fail(&failed(&e)).await;
                                return;
                            }
                        };
                        if !sent {
                            return;
                        }
                    }
                }
                // Streamed instead.
                Err(e) => tracing::warn!("broadcast service: cannot share {var}: {e}"),
            }
        }
        let start = reply::Result::Start(wire::Start {
            size: reader.size(),
            shared: false,
        });
        if !send(exchange, start).await {
            return;
        }
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    if !exchange.data(chunk).await {
                        return;
                    }
                }
                Ok(None) => {
                    send(exchange, reply::Result::End(wire::End {})).await;
                    return;
                }
                Err(e) => {
                    exchange.fail(&failed(&e)).await;
                    return;
                }
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
        self.sessions.forget(app).await?;
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
                        .ok_or_else(|| node::Error::Connect {
                            service: "broadcast",
                            endpoint: format!("of {host}"),
                            cause: "it advertises no TCP endpoint".into(),
                        })?;
                    let peer = BroadcastClient::connect(endpoint, "", store.config()).await?;
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
}

fn done() -> reply::Result {
    reply::Result::Done(wire::Done::default())
}

fn invalid(problem: &str) -> Error {
    Error::Invalid {
        var: VarId::new("", ""),
        problem: problem.into(),
    }
}

/// Sends a reply; false when the client is gone.
async fn send(exchange: &Served<()>, result: reply::Result) -> bool {
    exchange
        .reply(&wire::Reply {
            result: Some(result),
        })
        .await
}
