//! The per-node service: engines on the node connect over a Unix socket or TCP to register
//! and unregister shuffles and to borrow writer groups; the data itself goes between their
//! store clients and the datanodes. The service also keeps its clients' applications alive in
//! the store and expires the shuffles of applications nobody has seen for a while.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use crail_store::service::Listener;
use crail_store::service::{self as node, Endpoint, Io};
use crail_store::{CreateOptions, Error as StoreError, Store};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::Shuffles;
use crate::error::{Error, Result};
use crate::layout::{self, Meta, ShuffleId};
use crate::slots::{Outcome, Slots};
use crate::wire::{self, reply, request};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 1024;

/// Requests of one connection handled at once (leases waiting for a slot included).
const MAX_IN_FLIGHT: usize = 256;

/// Time a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// An application whose shuffles no service has seen a client of for this long is
    /// removed; `None` keeps them until removed explicitly.
    pub orphan_ttl: Option<Duration>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            orphan_ttl: Some(Duration::from_secs(3600)),
        }
    }
}

/// Records where the service of node `host` listens, in the store
/// (`/crail-shuffle/.services/<host>`), for [`crate::ShuffleClient::connect_local`].
pub async fn advertise(store: &Store, host: &str, endpoints: &[Endpoint]) -> Result<()> {
    Ok(node::advertise(store, layout::ROOT, host, endpoints).await?)
}

/// The hosts whose shuffle service advertised itself in the store (see [`advertise`]), in
/// address order: where a driver can place tasks. Empty when no node runs one.
pub async fn advertised_hosts(store: &Store) -> Result<Vec<String>> {
    Ok(node::advertised_hosts(store, layout::ROOT).await?)
}

/// Serves the node's slots on `listeners` until `shutdown` completes.
pub async fn run(
    slots: Slots,
    config: ServiceConfig,
    listeners: Vec<Listener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let service = Arc::new(Service {
        shuffles: Shuffles::new(slots.store().clone()),
        slots,
        config,
        apps: parking_lot::Mutex::new(HashMap::new()),
    });
    let every = service
        .config
        .orphan_ttl
        .map(|ttl| (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)));
    let (keeper, handler) = (Arc::clone(&service), Arc::clone(&service));
    node::run(
        "shuffle service",
        listeners,
        MAX_CONNECTIONS,
        every,
        move || {
            let service = Arc::clone(&keeper);
            async move {
                if let Some(ttl) = service.config.orphan_ttl {
                    service.keep_alive_and_expire(ttl).await;
                }
            }
        },
        shutdown,
        move |stream| Arc::clone(&handler).serve(stream),
    )
    .await;
    Ok(())
}

#[derive(Debug)]
struct Service {
    shuffles: Shuffles,
    slots: Slots,
    config: ServiceConfig,
    /// Applications with clients connected here, and how many.
    apps: parking_lot::Mutex<HashMap<String, usize>>,
}

impl Service {
    async fn serve(self: Arc<Self>, stream: Box<dyn Io>) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = Vec::new();
        // Hello first.
        let hello = tokio::time::timeout(
            HELLO_TIMEOUT,
            node::read::<wire::Request, _>(&mut rd, &mut buf),
        )
        .await;
        let (id, hello) = match hello {
            Ok(Ok(wire::Request {
                id,
                op: Some(request::Op::Hello(hello)),
            })) => (id, hello),
            _ => return,
        };
        let refuse = |problem: String| wire::Reply {
            id,
            result: Some(reply::Result::Failure(wire::Failure {
                code: "service".into(),
                problem,
                ..Default::default()
            })),
        };
        if hello.version != wire::VERSION {
            let problem = format!(
                "protocol version {} is not spoken here (this service speaks {})",
                hello.version,
                wire::VERSION
            );
            let _ = node::write(&mut wr, &refuse(problem)).await;
            return;
        }
        if !hello.app.is_empty() {
            if let Err(e) = ShuffleId::new(hello.app.clone(), 0).check() {
                let _ = node::write(&mut wr, &refuse(e.to_string())).await;
                return;
            }
            *self.apps.lock().entry(hello.app.clone()).or_default() += 1;
            self.touch(&hello.app).await;
        }
        let welcome = wire::Reply {
            id,
            result: Some(reply::Result::Welcome(wire::Welcome {
                version: wire::VERSION,
                host: self.slots.host().to_owned(),
            })),
        };
        let (out, mut replies) = mpsc::channel::<wire::Reply>(MAX_IN_FLIGHT);
        let writer = tokio::spawn(async move {
            if node::write(&mut wr, &welcome).await.is_err() {
                return;
            }
            while let Some(reply) = replies.recv().await {
                if node::write(&mut wr, &reply).await.is_err() {
                    return;
                }
            }
        });
        let leases: Arc<parking_lot::Mutex<HashSet<u64>>> = Arc::default();
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut handlers = JoinSet::new();
        loop {
            let request = match node::read::<wire::Request, _>(&mut rd, &mut buf).await {
                Ok(request) => request,
                Err(node::ReadError::Closed) => break,
                Err(node::ReadError::Bad(problem)) => {
                    tracing::debug!("shuffle service: dropping a client: {problem}");
                    break;
                }
            };
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                break;
            };
            let (service, out, leases) = (Arc::clone(&self), out.clone(), Arc::clone(&leases));
            handlers.spawn(async move {
                let id = request.id;
                let result = match service.handle(request.op, &leases).await {
                    Ok(result) => result,
                    Err(e) => reply::Result::Failure(wire::failure(&e)),
                };
                let _ = out
                    .send(wire::Reply {
                        id,
                        result: Some(result),
                    })
                    .await;
                drop(permit);
            });
            while handlers.try_join_next().is_some() {}
        }
        // The client is gone: requests still waiting are dropped, and the groups it holds
        // are retired (it may have committed sizes no record points at yet).
        handlers.abort_all();
        while handlers.join_next().await.is_some() {}
        let held: Vec<u64> = leases.lock().drain().collect();
        for lease in held {
            self.slots.give_back(lease, Outcome::Broken);
        }
        drop(out);
        let _ = writer.await;
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
        leases: &parking_lot::Mutex<HashSet<u64>>,
    ) -> Result<reply::Result> {
        let done = Ok(reply::Result::Done(wire::Done {}));
        let invalid = |problem: &str| Error::Invalid {
            id: ShuffleId::new("", 0),
            problem: problem.into(),
        };
        match op {
            Some(request::Op::Register(r)) => {
                let id = wire::shuffle_id(r.shuffle.as_ref());
                let meta = Meta {
                    maps: r.maps,
                    partitions: r.partitions,
                    serializer: r.serializer,
                    replication: r.replication.max(1),
                };
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
                self.slots.forget_app(&r.app);
                self.shuffles.remove_app(&r.app).await?;
                done
            }
            Some(request::Op::Lease(r)) => {
                let id = wire::shuffle_id(r.shuffle.as_ref());
                let (group, meta) = self.slots.lend(&id, r.map).await?;
                // No await between lending and recording it: a client that goes away now
                // still has the group taken back.
                leases.lock().insert(group.lease);
                Ok(reply::Result::Group(wire::Group {
                    lease: group.lease,
                    host: group.host,
                    slot: group.slot,
                    files: group
                        .files
                        .into_iter()
                        .map(|f| wire::GroupFile {
                            partition: f.partition,
                            copy: f.copy,
                            path: f.ticket.path,
                            file_id: f.ticket.file_id,
                            token: f.ticket.token,
                            size: f.ticket.size,
                        })
                        .collect(),
                    maps: meta.maps,
                    partitions: meta.partitions,
                    serializer: meta.serializer,
                    replication: meta.replication,
                    homes: group.homes.iter().map(ToString::to_string).collect(),
                }))
            }
            Some(request::Op::Release(r)) => {
                if !leases.lock().remove(&r.lease) {
                    return Err(invalid(&format!(
                        "lease {} is not held by this client",
                        r.lease
                    )));
                }
                let outcome = match wire::Outcome::try_from(r.outcome) {
                    Ok(wire::Outcome::Committed) => {
                        Outcome::Committed(r.ends.iter().map(|e| (e.partition, e.end)).collect())
                    }
                    Ok(wire::Outcome::Aborted) => Outcome::Aborted,
                    _ => Outcome::Broken,
                };
                self.slots.give_back(r.lease, outcome);
                done
            }
            Some(request::Op::Hello(_)) => Err(invalid("hello was already said")),
            None => Err(invalid("a request without an operation")),
        }
    }

    /// Marks `app` as seen now: its directory's modification time is the last sign of life
    /// any node saw (nothing to do before its first shuffle).
    async fn touch(&self, app: &str) {
        let mark = format!(
            "{}/.alive-{}-{:x}",
            ShuffleId::app_dir(app),
            self.slots.host(),
            node::nonce()
        );
        let store = self.slots.store();
        if store
            .create_dir(&mark, &CreateOptions::default())
            .await
            .is_ok()
        {
            let _ = store.delete(&mark, false).await;
        }
    }

    /// Touches the applications with clients here, then removes the ones nobody touched for
    /// `ttl`, and forgets groups of shuffles that are gone.
    async fn keep_alive_and_expire(&self, ttl: Duration) {
        let live: Vec<String> = self.apps.lock().keys().cloned().collect();
        for app in &live {
            self.touch(app).await;
        }
        let store = self.slots.store();
        let entries = match store.list(layout::ROOT).await {
            Ok(entries) => entries,
            Err(StoreError::NotFound { .. }) => return,
            Err(e) => {
                tracing::debug!("shuffle service: cannot list {}: {e}", layout::ROOT);
                return;
            }
        };
        let now = SystemTime::now();
        for entry in entries {
            if entry.name.starts_with('.') || live.contains(&entry.name) {
                continue;
            }
            let path = ShuffleId::app_dir(&entry.name);
            let Ok(stat) = store.stat(&path).await else {
                continue;
            };
            let idle = now.duration_since(stat.modified).unwrap_or_default();
            if idle > ttl {
                tracing::info!(
                    "shuffle service: removing the shuffles of {}: no client seen for {idle:?}",
                    entry.name
                );
                self.slots.forget_app(&entry.name);
                let _ = self.shuffles.remove_app(&entry.name).await;
            }
        }
        for id in self.slots.known() {
            if let Err(StoreError::NotFound { .. }) = store.stat(&id.dir()).await {
                self.slots.forget(&id);
            }
        }
    }
}
