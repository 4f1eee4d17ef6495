//! The per-node service: engines on the node connect over a Unix socket or TCP to register
//! and unregister shuffles and to borrow writer groups; the data itself goes between their
//! store clients and the datanodes. The node-service layer keeps its clients' applications
//! alive in the store; the service expires the shuffles of applications nobody has seen for a
//! while.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crail_node_service::{self as node, Endpoint, Listener, Served, ServerConfig, Sessions};
use crail_store::{Error as StoreError, Store};

use crate::Shuffles;
use crate::error::{Error, Result};
use crate::layout::{self, Meta, ShuffleId};
use crate::lease::Outcome;
use crate::node::slots::Slots;
use crate::wire::{self, reply, request};

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// An application whose shuffles no service has seen a client of for this long is
    /// removed; `None` keeps them until removed explicitly.
    pub orphan_ttl: Option<Duration>,
    /// The most map tasks a shuffle may register.
    pub max_maps: u32,
    /// The most partitions a shuffle may register.
    pub max_partitions: u32,
    /// The most copies of every group file a shuffle may ask for.
    pub max_replication: u32,
    /// A group whose local processes may use the Unix socket (`[security] local_group`).
    pub local_group: Option<u32>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            orphan_ttl: Some(Duration::from_secs(3600)),
            max_maps: 1 << 24,
            max_partitions: 1 << 20,
            max_replication: 3,
            local_group: None,
        }
    }
}

impl ServiceConfig {
    /// Refuses a shuffle larger than this service takes.
    fn admit(&self, id: &ShuffleId, meta: &Meta) -> Result<()> {
        let over = [
            ("maps", meta.maps, self.max_maps, "max_maps"),
            (
                "partitions",
                meta.partitions,
                self.max_partitions,
                "max_partitions",
            ),
            (
                "copies",
                meta.replication,
                self.max_replication,
                "max_replication",
            ),
        ]
        .into_iter()
        .find(|(_, value, max, _)| value > max);
        match over {
            Some((what, value, max, key)) => Err(Error::Invalid {
                id: id.clone(),
                problem: format!(
                    "{value} {what}: more than this node's shuffle service takes ({max}, shuffle.{key})"
                ),
            }),
            None => Ok(()),
        }
    }
}

/// Records where the service of node `host` listens, in the store
/// (`/crail-shuffle/.services/<host>`), for [`crate::ShuffleClient::connect_local`].
pub async fn advertise(store: &Store, host: &str, endpoints: &[Endpoint]) -> Result<()> {
    Ok(node::advertise(store, layout::ROOT, host, endpoints).await?)
}

/// Serves the node's slots on `listeners` until `shutdown` completes. Every connection must
/// prove the secret of the slots' store client, as the store's own connections do.
pub async fn run(
    slots: Slots,
    config: ServiceConfig,
    listeners: Vec<Listener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let store = slots.store().clone();
    let server = ServerConfig {
        secret: store.config().secret.clone(),
        tls: store.config().tls.clone(),
        housekeeping: config
            .orphan_ttl
            .map(|ttl| (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))),
        local_group: config.local_group,
        ..ServerConfig::default()
    };
    let service = Arc::new(Service {
        sessions: Sessions::new(store.clone(), layout::ROOT, slots.host()),
        shuffles: Shuffles::new(store),
        slots,
        config,
    });
    node::run(service, server, listeners, shutdown).await;
    Ok(())
}

#[derive(Debug)]
struct Service {
    sessions: Sessions,
    shuffles: Shuffles,
    slots: Slots,
    config: ServiceConfig,
}

/// What one connection holds: the groups lent to it and not given back.
#[derive(Debug, Default)]
struct Held {
    leases: parking_lot::Mutex<HashSet<u64>>,
}

impl node::Service for Service {
    const NAME: &'static str = "shuffle";
    type Conn = Held;

    fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    async fn serve(self: Arc<Self>, mut exchange: Served<Held>) {
        let result = match exchange.request::<wire::Request>().await {
            Ok(request) => self.handle(request.op, &exchange).await,
            Err(problem) => Err(invalid(&problem)),
        };
        match result {
            Ok(Some(result)) => {
                exchange
                    .reply(&wire::Reply {
                        result: Some(result),
                    })
                    .await
            }
            // The client left while the request waited.
            Ok(None) => true,
            Err(e) => exchange.fail(&wire::failure(&e)).await,
        };
    }

    /// The client is gone: the groups it holds are retired (it may have committed sizes no
    /// record points at yet).
    fn closed(&self, held: &Held) {
        let held: Vec<u64> = held.leases.lock().drain().collect();
        for lease in held {
            self.slots.give_back(lease, Outcome::Broken);
        }
    }

    async fn housekeeping(self: Arc<Self>) {
        if let Some(ttl) = self.config.orphan_ttl {
            self.expire(ttl).await;
        }
    }
}

fn invalid(problem: &str) -> Error {
    Error::Invalid {
        id: ShuffleId::new("", 0),
        problem: problem.into(),
    }
}

impl Service {
    /// Serves one request; `None` when the client left before it was answered.
    async fn handle(
        &self,
        op: Option<request::Op>,
        exchange: &Served<Held>,
    ) -> Result<Option<reply::Result>> {
        let done = Ok(Some(reply::Result::Done(wire::Done {})));
        match op {
            Some(request::Op::Register(r)) => {
                let id = wire::shuffle_id(r.shuffle.as_ref());
                let meta = Meta {
                    maps: r.maps,
                    partitions: r.partitions,
                    serializer: r.serializer,
                    replication: r.replication.max(1),
                };
                self.config.admit(&id, &meta)?;
                self.shuffles.register(&id, &meta).await?;
                done
            }
            Some(request::Op::Unregister(r)) => {
                let id = wire::shuffle_id(r.shuffle.as_ref());
                self.slots.forget(&id);
                self.shuffles.unregister(&id).await?;
                done
            }
            Some(request::Op::RemoveApp(r)) => {
                self.remove_app(&r.app).await?;
                done
            }
            Some(request::Op::Lease(r)) => {
                let id = wire::shuffle_id(r.shuffle.as_ref());
                let lent = tokio::select! {
                    lent = self.slots.lend(&id, r.map) => lent?,
                    () = exchange.closed() => return Ok(None),
                };
                let (group, meta) = lent;
                // No await between lending and recording it: a client that goes away now
                // still has the group taken back.
                exchange.conn().leases.lock().insert(group.lease);
                Ok(Some(reply::Result::Group(wire::Group {
                    lease: group.lease,
                    host: group.host,
                    slot: group.slot,
                    files: (0..)
                        .zip(group.files)
                        .map(|(copy, f)| wire::GroupFile {
                            copy,
                            path: f.path,
                            file_id: f.file_id,
                            token: f.token,
                            size: f.size,
                        })
                        .collect(),
                    maps: meta.maps,
                    partitions: meta.partitions,
                    serializer: meta.serializer,
                    replication: meta.replication,
                })))
            }
            Some(request::Op::Release(r)) => {
                if !exchange.conn().leases.lock().remove(&r.lease) {
                    return Err(invalid(&format!(
                        "lease {} is not held by this client",
                        r.lease
                    )));
                }
                let outcome = match wire::Outcome::try_from(r.outcome) {
                    Ok(wire::Outcome::Committed) => Outcome::Committed,
                    Ok(wire::Outcome::Aborted) => Outcome::Aborted,
                    _ => Outcome::Broken,
                };
                self.slots.give_back(r.lease, outcome);
                done
            }
            Some(request::Op::Place(r)) => {
                if !exchange.conn().leases.lock().contains(&r.lease) {
                    return Err(invalid(&format!(
                        "lease {} is not held by this client",
                        r.lease
                    )));
                }
                if r.partitions.len() != r.lens.len() {
                    return Err(invalid(
                        "a place with partitions and lengths of different counts",
                    ));
                }
                let wants: Vec<(u32, u64)> = r.partitions.into_iter().zip(r.lens).collect();
                let placed = self.slots.place(r.lease, &wants, r.record).await?;
                let mut reply = wire::Placed {
                    size: placed.size,
                    record: placed.record,
                    partitions: Vec::with_capacity(placed.runs.len()),
                    offsets: Vec::with_capacity(placed.runs.len()),
                    lens: Vec::with_capacity(placed.runs.len()),
                };
                for (partition, offset, len) in placed.runs {
                    reply.partitions.push(partition);
                    reply.offsets.push(offset);
                    reply.lens.push(len);
                }
                Ok(Some(reply::Result::Placed(reply)))
            }
            None => Err(invalid("a request without an operation")),
        }
    }

    async fn remove_app(&self, app: &str) -> Result<()> {
        self.slots.forget_app(app);
        self.shuffles.remove_app(app).await?;
        self.sessions.forget(app).await?;
        Ok(())
    }

    /// Removes the applications nobody touched for `ttl`, and forgets groups of shuffles
    /// that are gone.
    async fn expire(&self, ttl: Duration) {
        for (app, idle) in self.sessions.orphans(ttl).await {
            tracing::info!(
                "shuffle service: removing the shuffles of {app}: no client seen for {idle:?}"
            );
            if let Err(e) = self.remove_app(&app).await {
                tracing::warn!("shuffle service: cannot remove the shuffles of {app}: {e}");
            }
        }
        let store = self.slots.store();
        for id in self.slots.known() {
            if let Err(StoreError::NotFound { .. }) = store.stat(&id.dir()).await {
                self.slots.forget(&id);
            }
        }
    }
}
