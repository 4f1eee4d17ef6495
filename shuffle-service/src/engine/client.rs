//! The engine's side: [`ShuffleClient`] talks to its node's service (writer groups, register,
//! unregister) and to the store directly (the data of writes and reads, map status).

use std::ops::Range;
use std::sync::Arc;

use crail_node_service::{self as node, Connection, Endpoint, Options};
use crail_store::{LeaseTicket, Store};
use futures_util::future::BoxFuture;

use crate::Shuffles;
use crate::engine::reader::PartitionReader;
use crate::engine::writer::MapWriter;
use crate::error::{Error, Result};
use crate::layout::{Commit, Meta, ShuffleId};
use crate::lease::{GroupLease, Lender, Outcome, Placed};
use crate::wire::{self, reply, request};

/// A connection to the node's service; groups lent through it go back through it.
#[derive(Debug, Clone)]
struct Service {
    conn: Connection,
}

impl Service {
    async fn call(&self, op: request::Op) -> Result<reply::Result> {
        let reply: wire::Reply = self
            .conn
            .call(&wire::Request { op: Some(op) })
            .await
            .map_err(|e| match e {
                node::Error::Failed(failure) => wire::error(failure),
                other => Error::Service(other),
            })?;
        reply
            .result
            .ok_or_else(|| self.unexpected("an empty reply"))
    }

    async fn done(&self, op: request::Op) -> Result<()> {
        match self.call(op).await? {
            reply::Result::Done(_) => Ok(()),
            _ => Err(self.unexpected("a reply other than done")),
        }
    }

    fn unexpected(&self, what: &str) -> Error {
        Error::Service(node::Error::Lost {
            service: "shuffle",
            endpoint: self.conn.endpoint().to_owned(),
            reason: format!("the service sent {what}"),
        })
    }

    async fn release(&self, lease: u64, outcome: Outcome) -> Result<()> {
        let outcome = match outcome {
            Outcome::Committed => wire::Outcome::Committed,
            Outcome::Aborted => wire::Outcome::Aborted,
            Outcome::Broken => wire::Outcome::Broken,
        };
        self.done(request::Op::Release(wire::Release {
            lease,
            outcome: outcome as i32,
        }))
        .await
    }

    async fn place(&self, lease: u64, wants: Vec<(u32, u64)>, record: u64) -> Result<Placed> {
        let (partitions, lens) = wants.into_iter().unzip();
        let reply = self
            .call(request::Op::Place(wire::Place {
                lease,
                partitions,
                lens,
                record,
            }))
            .await?;
        let reply::Result::Placed(placed) = reply else {
            return Err(self.unexpected("a reply other than places"));
        };
        let n = placed.partitions.len();
        if placed.offsets.len() != n || placed.lens.len() != n {
            return Err(self.unexpected("places of different counts"));
        }
        Ok(Placed {
            size: placed.size,
            record: placed.record,
            runs: placed
                .partitions
                .into_iter()
                .zip(placed.offsets)
                .zip(placed.lens)
                .map(|((p, o), l)| (p, o, l))
                .collect(),
        })
    }
}

impl Lender for Service {
    fn place(
        self: Arc<Self>,
        lease: u64,
        wants: Vec<(u32, u64)>,
        record: u64,
    ) -> BoxFuture<'static, Result<Placed>> {
        Box::pin(async move { Service::place(&self, lease, wants, record).await })
    }

    fn give_back(self: Arc<Self>, lease: u64, outcome: Outcome) -> BoxFuture<'static, ()> {
        // A service that cannot be told retires the group when the connection ends.
        Box::pin(async move {
            let _ = self.release(lease, outcome).await;
        })
    }
}

/// An engine's handle on its node's shuffle service. Writes and reads go straight between
/// this process's store client and the datanodes; the service lends writer groups and keeps
/// the application's shuffles alive. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShuffleClient {
    service: Arc<Service>,
    shuffles: Shuffles,
}

impl ShuffleClient {
    /// Connects to the service at `endpoint` on behalf of application `app` (kept alive while
    /// connected; empty for none), writing and reading through `store`, which should connect
    /// from the node's address so writes land on its datanodes. The connection proves the
    /// secret of `store`'s configuration, as the store's own connections do.
    pub async fn connect(endpoint: &Endpoint, app: &str, store: Store) -> Result<Self> {
        let options = Options::new("shuffle", app).for_cluster(store.config());
        let conn = Connection::open(endpoint, &options).await?;
        Ok(Self {
            service: Arc::new(Service { conn }),
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
            .map_err(|e| {
                Error::Service(node::Error::Connect {
                    service: "shuffle",
                    endpoint: format!("of {host}"),
                    cause: format!("no shuffle service advertised for this host ({e})"),
                })
            })?;
        let mut last = None;
        for endpoint in endpoints {
            match Self::connect(&endpoint, app, store.clone()).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::Service(node::Error::Connect {
                service: "shuffle",
                endpoint: format!("of {host}"),
                cause: "its advertisement names no endpoint".into(),
            })
        }))
    }

    /// The node's name (its address) as the service reports it.
    pub fn host(&self) -> &str {
        self.service.conn.host()
    }

    /// The shuffles in the store, for reads and map status.
    pub fn shuffles(&self) -> &Shuffles {
        &self.shuffles
    }

    /// Registers a shuffle (see [`Shuffles::register`]).
    pub async fn register(&self, id: &ShuffleId, meta: &Meta) -> Result<()> {
        self.service
            .done(request::Op::Register(wire::Register {
                shuffle: Some(wire::shuffle_ref(id)),
                maps: meta.maps,
                partitions: meta.partitions,
                serializer: meta.serializer.clone(),
                replication: meta.replication,
            }))
            .await?;
        self.shuffles.remember(id, meta);
        Ok(())
    }

    /// Deletes a shuffle's files; every node's groups of it are dropped.
    pub async fn unregister(&self, id: &ShuffleId) -> Result<()> {
        self.service
            .done(request::Op::Unregister(wire::Unregister {
                shuffle: Some(wire::shuffle_ref(id)),
            }))
            .await?;
        self.shuffles.forget(|gone| gone == id);
        Ok(())
    }

    /// Deletes every shuffle of `app` (the application ended).
    pub async fn remove_app(&self, app: &str) -> Result<()> {
        self.service
            .done(request::Op::RemoveApp(wire::RemoveApp { app: app.into() }))
            .await?;
        self.shuffles.forget(|gone| gone.app == app);
        Ok(())
    }

    /// A writer group of this node for attempt `attempt` of map `map` (waits while every slot
    /// of the shuffle on this node is busy).
    pub async fn map_writer(&self, id: &ShuffleId, map: u32, attempt: u64) -> Result<MapWriter> {
        let reply = self
            .service
            .call(request::Op::Lease(wire::Lease {
                shuffle: Some(wire::shuffle_ref(id)),
                map,
                attempt,
            }))
            .await?;
        let reply::Result::Group(group) = reply else {
            return Err(self.service.unexpected("a reply other than a group"));
        };
        let meta = Meta {
            maps: group.maps,
            partitions: group.partitions,
            serializer: group.serializer,
            replication: group.replication,
        };
        self.shuffles.remember(id, &meta);
        let lease = GroupLease {
            id: id.clone(),
            host: group.host,
            slot: group.slot,
            lease: group.lease,
            files: {
                let mut files = group.files;
                files.sort_by_key(|f| f.copy);
                files
                    .into_iter()
                    .map(|f| LeaseTicket {
                        path: f.path,
                        file_id: f.file_id,
                        token: f.token,
                        size: f.size,
                    })
                    .collect()
            },
        };
        Ok(MapWriter::new(
            self.shuffles.store().clone(),
            meta,
            map,
            attempt,
            lease,
            Arc::clone(&self.service) as Arc<dyn Lender>,
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

    /// Reads partitions `partitions` of exactly these (map, attempt) pairs: see
    /// [`Shuffles::read_attempts`].
    pub async fn read_attempts(
        &self,
        id: &ShuffleId,
        partitions: Range<u32>,
        attempts: &[(u32, u64)],
        prefetch: usize,
    ) -> Result<PartitionReader> {
        self.shuffles
            .read_attempts(id, partitions, attempts, prefetch)
            .await
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
    pub async fn commits(
        &self,
        id: &ShuffleId,
        maps: Option<Range<u32>>,
    ) -> Result<Vec<Arc<Commit>>> {
        self.shuffles.commits(id, maps).await
    }
}

/// The hosts whose shuffle service advertised itself in the store (see `service::advertise`), in
/// address order: where a driver can place tasks. Empty when no node runs one.
pub async fn advertised_hosts(store: &Store) -> Result<Vec<String>> {
    Ok(crail_node_service::advertised_hosts(store, crate::layout::ROOT).await?)
}
