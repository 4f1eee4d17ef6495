//! The engine's side: [`ShuffleClient`] talks to its node's service (writer groups, register,
//! unregister) and to the store directly (the data of writes and reads, map status).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crail_store::service::{self as node, Endpoint};
use crail_store::{LeaseTicket, Store};
use tokio::sync::{mpsc, oneshot};

use crate::Shuffles;
use crate::error::{Error, Result};
use crate::layout::{Commit, Meta, ShuffleId};
use crate::reader::PartitionReader;
use crate::slots::{GroupFile, GroupLease, Outcome};
use crate::wire::{self, reply, request};
use crate::writer::{GiveBack, MapWriter};

/// Time to connect and be welcomed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Waiters = Arc<parking_lot::Mutex<Option<HashMap<u64, oneshot::Sender<wire::Reply>>>>>;

/// A connection to a node's service: requests go out through one writer task, replies are
/// matched to their callers by id. Cheap to clone; closes when the last clone drops.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    inner: Arc<ConnInner>,
}

#[derive(Debug)]
struct ConnInner {
    endpoint: String,
    outbox: mpsc::UnboundedSender<wire::Request>,
    /// `None` once the connection is gone.
    waiters: Waiters,
    next: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    async fn open(endpoint: &Endpoint, app: &str) -> Result<(Self, String)> {
        let name = endpoint.to_string();
        let failed = |cause: String| Error::Service {
            service: name.clone(),
            cause,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, node::connect(endpoint))
            .await
            .map_err(|_| failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| failed(format!("cannot connect: {e}")))?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (outbox, mut queue) = mpsc::unbounded_channel::<wire::Request>();
        tokio::spawn(async move {
            while let Some(request) = queue.recv().await {
                if node::write(&mut wr, &request).await.is_err() {
                    return;
                }
            }
        });
        let waiters: Waiters = Arc::new(parking_lot::Mutex::new(Some(HashMap::new())));
        let reading = Arc::clone(&waiters);
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Ok(reply) = node::read::<wire::Reply, _>(&mut rd, &mut buf).await {
                let waiter = reading.lock().as_mut().and_then(|w| w.remove(&reply.id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            // Gone: every caller waiting, and every later one, gets an error.
            reading.lock().take();
        });
        let conn = Self {
            inner: Arc::new(ConnInner {
                endpoint: name.clone(),
                outbox,
                waiters,
                next: AtomicU64::new(1),
                reader,
            }),
        };
        let hello = request::Op::Hello(wire::Hello {
            version: wire::VERSION,
            app: app.to_owned(),
            client: format!("crail-shuffle {}", env!("CARGO_PKG_VERSION")),
        });
        let welcome = tokio::time::timeout(CONNECT_TIMEOUT, conn.call(hello))
            .await
            .map_err(|_| failed(format!("no welcome within {CONNECT_TIMEOUT:?}")))??;
        match welcome {
            reply::Result::Welcome(w) => Ok((conn, w.host)),
            _ => Err(failed(
                "the service answered hello with something else".into(),
            )),
        }
    }

    async fn call(&self, op: request::Op) -> Result<reply::Result> {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let gone = || Error::Service {
            service: self.inner.endpoint.clone(),
            cause: "connection lost".into(),
        };
        match self.inner.waiters.lock().as_mut() {
            Some(waiters) => waiters.insert(id, tx),
            None => return Err(gone()),
        };
        self.inner
            .outbox
            .send(wire::Request { id, op: Some(op) })
            .map_err(|_| gone())?;
        let reply = rx.await.map_err(|_| gone())?;
        match reply.result {
            Some(reply::Result::Failure(f)) => Err(wire::error(f, &self.inner.endpoint)),
            Some(result) => Ok(result),
            None => Err(Error::Service {
                service: self.inner.endpoint.clone(),
                cause: "empty reply".into(),
            }),
        }
    }

    async fn done(&self, op: request::Op) -> Result<()> {
        match self.call(op).await? {
            reply::Result::Done(_) => Ok(()),
            _ => Err(self.unexpected()),
        }
    }

    fn unexpected(&self) -> Error {
        Error::Service {
            service: self.inner.endpoint.clone(),
            cause: "unexpected reply".into(),
        }
    }

    pub(crate) async fn release(&self, lease: u64, outcome: Outcome) -> Result<()> {
        let (outcome, ends) = match outcome {
            Outcome::Committed(ends) => (wire::Outcome::Committed, ends),
            Outcome::Aborted => (wire::Outcome::Aborted, Vec::new()),
            Outcome::Broken => (wire::Outcome::Broken, Vec::new()),
        };
        self.done(request::Op::Release(wire::Release {
            lease,
            outcome: outcome as i32,
            ends: ends
                .into_iter()
                .map(|(partition, end)| wire::PartitionEnd { partition, end })
                .collect(),
        }))
        .await
    }
}

/// An engine's handle on its node's shuffle service. Writes and reads go straight between
/// this process's store client and the datanodes; the service lends writer groups and keeps
/// the application's shuffles alive. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShuffleClient {
    conn: Connection,
    host: String,
    shuffles: Shuffles,
}

impl ShuffleClient {
    /// Connects to the service at `endpoint` on behalf of application `app` (kept alive while
    /// connected; empty for none), writing and reading through `store`, which should connect
    /// from the node's address so writes land on its datanodes.
    pub async fn connect(endpoint: &Endpoint, app: &str, store: Store) -> Result<Self> {
        let (conn, host) = Connection::open(endpoint, app).await?;
        Ok(Self {
            conn,
            host,
            shuffles: Shuffles::new(store),
        })
    }

    /// Connects to the service of the node `store` connects from (its `local_host`, else
    /// 127.0.0.1), found where the service advertised itself in the store: the Unix socket
    /// first, then TCP.
    pub async fn connect_local(store: Store, app: &str) -> Result<Self> {
        let host = node::host_of(&store);
        let endpoints = node::advertised(&store, crate::layout::ROOT, &host)
            .await
            .map_err(|e| Error::Service {
                service: format!("of {host}"),
                cause: format!("no shuffle service advertised for this host ({e})"),
            })?;
        let mut last = None;
        for endpoint in endpoints {
            match Self::connect(&endpoint, app, store.clone()).await {
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
        &self.host
    }

    /// The shuffles in the store, for reads and map status.
    pub fn shuffles(&self) -> &Shuffles {
        &self.shuffles
    }

    /// Registers a shuffle (see [`Shuffles::register`]).
    pub async fn register(&self, id: &ShuffleId, meta: &Meta) -> Result<()> {
        self.conn
            .done(request::Op::Register(wire::Register {
                shuffle: Some(wire::shuffle_ref(id)),
                maps: meta.maps,
                partitions: meta.partitions,
                serializer: meta.serializer.clone(),
                replication: meta.replication,
            }))
            .await
    }

    /// Deletes a shuffle's files; every node's groups of it are dropped.
    pub async fn unregister(&self, id: &ShuffleId) -> Result<()> {
        self.conn
            .done(request::Op::Unregister(wire::Unregister {
                shuffle: Some(wire::shuffle_ref(id)),
            }))
            .await
    }

    /// Deletes every shuffle of `app` (the application ended).
    pub async fn remove_app(&self, app: &str) -> Result<()> {
        self.conn
            .done(request::Op::RemoveApp(wire::RemoveApp { app: app.into() }))
            .await
    }

    /// A writer group of this node for attempt `attempt` of map `map` (waits while every slot
    /// of the shuffle on this node is busy).
    pub async fn map_writer(&self, id: &ShuffleId, map: u32, attempt: u64) -> Result<MapWriter> {
        let reply = self
            .conn
            .call(request::Op::Lease(wire::Lease {
                shuffle: Some(wire::shuffle_ref(id)),
                map,
                attempt,
            }))
            .await?;
        let reply::Result::Group(group) = reply else {
            return Err(self.conn.unexpected());
        };
        let meta = Meta {
            maps: group.maps,
            partitions: group.partitions,
            serializer: group.serializer,
            replication: group.replication,
        };
        let lease = GroupLease {
            id: id.clone(),
            host: group.host,
            slot: group.slot,
            lease: group.lease,
            homes: group.homes.iter().filter_map(|h| h.parse().ok()).collect(),
            files: group
                .files
                .into_iter()
                .map(|f| GroupFile {
                    partition: f.partition,
                    copy: f.copy,
                    ticket: LeaseTicket {
                        path: f.path,
                        file_id: f.file_id,
                        token: f.token,
                        size: f.size,
                    },
                })
                .collect(),
        };
        Ok(MapWriter::new(
            self.shuffles.store().clone(),
            meta,
            map,
            attempt,
            lease,
            GiveBack::Remote(self.conn.clone()),
        ))
    }

    /// Reads partitions `partitions` of maps `maps` (all when `None`): see
    /// [`Shuffles::read`].
    pub async fn read(
        &self,
        id: &ShuffleId,
        partitions: Range<u32>,
        maps: Option<Range<u32>>,
        prefetch: usize,
    ) -> Result<PartitionReader> {
        self.shuffles.read(id, partitions, maps, prefetch).await
    }

    /// Map status: see [`Shuffles::map_statuses`].
    pub async fn map_statuses(
        &self,
        id: &ShuffleId,
        maps: Option<Range<u32>>,
    ) -> Result<Vec<(u32, Vec<u64>)>> {
        self.shuffles.map_statuses(id, maps).await
    }

    /// The committed attempts: see [`Shuffles::commits`].
    pub async fn commits(&self, id: &ShuffleId, maps: Option<Range<u32>>) -> Result<Vec<Commit>> {
        self.shuffles.commits(id, maps).await
    }
}
