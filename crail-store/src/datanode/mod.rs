//! The datanode: a storage tier served over the data plane, registered with the namenode.
//!
//! ```text
//! Datanode::start(listener, config, client)   connect to the namenode, learn the block size,
//!                                             reserve the tier, register it
//! datanode.serve(shutdown)                    data plane + heartbeats until shutdown,
//!                                             then deregister
//! ```
//!
//! Each tier has an identity of its own (random, for as long as its blocks live: the process).
//! If the namenode declares this datanode dead (missed heartbeats, say a long pause) or
//! restarts, the heartbeat loop registers it again under that identity with a report of the
//! blocks it holds: it gets its old id back and the namenode re-adopts the blocks its files
//! still hold (and frees the rest).

mod checksum;
mod conn_io;
mod fuzz;
mod server;
mod tier;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::net::{TcpListener, UnixListener};

#[doc(hidden)]
pub use fuzz::fuzz_requests;

pub use tier::state_path as flash_state_path;
use tier::{DramTier, FlashTier};

use crate::client::Store;
use crate::config::{ClientConfig, DatanodeConfig, TierKind};
use crate::error::{Error, Result};
use crate::grant::GrantKey;
use crate::types::{DatanodeId, DatanodeSpec, Registration};

/// Who this datanode is to the namenode now: its id and the key of the namenode's block
/// grants. Both change together when it registers again.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) grants: GrantKey,
    pub(crate) registration: Registration,
}

impl Identity {
    /// The id the namenode gave.
    pub(crate) fn id(&self) -> u64 {
        self.registration.id.0
    }

    /// Registers `spec` with the namenode behind `store` (connected with the datanodes'
    /// secret, from which the grant key derives) as `who`, reporting its blocks.
    async fn register(store: &Store, spec: &DatanodeSpec, who: &Who) -> Result<Self> {
        let registration = store
            .register_datanode_as(spec, &who.uuid, &(who.report)())
            .await?;
        Ok(Self {
            grants: GrantKey::derive(store.config().secret.as_ref(), &registration.grant_salt),
            registration,
        })
    }
}

/// How long a stopping datanode waits for the namenode to take its deregistration.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a started datanode serves.
#[derive(Debug, Clone)]
pub struct DatanodeInfo {
    /// Data-plane address.
    pub address: SocketAddr,
    /// Tier served.
    pub tier: TierKind,
    /// Storage class.
    pub storage_class: u32,
    /// Bytes offered (whole blocks).
    pub capacity: u64,
    /// Block size of the store.
    pub block_size: u64,
    /// Id the namenode gave (it changes if the datanode registers again).
    pub id: DatanodeId,
    /// I/O engine of a flash tier ("io_uring" or "pread"); "memory" for dram.
    pub engine: &'static str,
    /// Whether clients on this host can use the shared-memory fast path.
    pub fast_path: bool,
}

enum AnyTier {
    Dram(Arc<DramTier>),
    Flash(Arc<FlashTier>),
}

impl AnyTier {
    fn reporter(&self) -> Arc<dyn Fn() -> Vec<(u64, u64)> + Send + Sync> {
        use tier::Tier;
        match self {
            Self::Dram(t) => {
                let t = t.clone();
                Arc::new(move || t.report())
            }
            Self::Flash(t) => {
                let t = t.clone();
                Arc::new(move || t.report())
            }
        }
    }
}

/// A tier's identity and how to list the blocks it holds.
#[derive(Clone)]
struct Who {
    uuid: [u8; 16],
    report: Arc<dyn Fn() -> Vec<(u64, u64)> + Send + Sync>,
}

impl Who {
    /// A flash tier's identity from its last clean stop, else a new one.
    fn new(tier: &AnyTier) -> Result<Self> {
        let mut uuid = [0u8; 16];
        match tier {
            AnyTier::Flash(flash) if flash.restored().is_some() => {
                uuid = flash.restored().unwrap_or_default();
            }
            _ => getrandom::fill(&mut uuid).map_err(|e| std::io::Error::other(e.to_string()))?,
        }
        Ok(Self {
            uuid,
            report: tier.reporter(),
        })
    }
}

/// A registered datanode, ready to serve.
pub struct Datanode {
    listener: TcpListener,
    local: Option<UnixListener>,
    tier: AnyTier,
    config: DatanodeConfig,
    client: ClientConfig,
    store: Store,
    info: DatanodeInfo,
    identity: Identity,
    who: Who,
    /// What its clients must prove.
    clients_secret: Option<crate::wire::handshake::Secret>,
}

impl std::fmt::Debug for Datanode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datanode")
            .field("info", &self.info)
            .finish()
    }
}

impl Datanode {
    /// Connects to the namenode in `client`, reserves the tier and registers it.
    pub async fn start(
        listener: TcpListener,
        config: DatanodeConfig,
        client: ClientConfig,
    ) -> Result<Self> {
        config.validate()?;
        if let Some(tls) = &config.tls {
            tls.check_serves()?;
        }
        if config.transport == crate::config::Transport::Rdma {
            crate::rdma::probe()?;
        }
        let address = listener.local_addr()?;
        let host = advertised_host(address.ip(), &client.namenode)?;
        let address = SocketAddr::new(host, address.port());
        let mut client = client;
        client.local_host = Some(host);
        if client.tls.is_none() {
            client.tls = config.tls.clone();
        }
        if client.secret.is_none() {
            client.secret = config.secret.clone();
        }
        // Clients prove the clients' secret to this datanode; it proves the datanodes' to the
        // namenode.
        let clients_secret = client.secret.clone();
        if config.datanode_secret.is_some() {
            client.secret = config.datanode_secret.clone();
        }
        client.name = format!("datanode {address}");
        let store = Store::connect(&client).await?;
        let block_size = store.block_size();
        if block_size % checksum::CHUNK as u64 != 0 {
            return Err(Error::Config {
                key: "namenode.block_size".into(),
                reason: format!("{block_size} is not a multiple of {}", checksum::CHUNK),
            });
        }
        let capacity = config.capacity.bytes() / block_size * block_size;
        if capacity == 0 {
            return Err(Error::Config {
                key: "datanode.capacity".into(),
                reason: format!(
                    "{} is less than one block ({block_size} bytes)",
                    config.capacity
                ),
            });
        }
        let (tier, engine) = match (config.tier, &config.path) {
            (TierKind::Dram, _) => (
                AnyTier::Dram(Arc::new(DramTier::new(capacity, block_size)?)),
                "memory",
            ),
            (TierKind::Flash, Some(path)) => {
                let flash = FlashTier::open(path, capacity, block_size, config.io_engine)?;
                let engine = flash.engine();
                (AnyTier::Flash(Arc::new(flash)), engine)
            }
            (TierKind::Flash, None) => {
                return Err(Error::Config {
                    key: "datanode.path".into(),
                    reason: "a flash tier needs a file or device".into(),
                });
            }
        };
        // The socket is named after the advertised address: the one clients find in block
        // locations.
        let local = if config.fast_path {
            match crate::local::bind(address) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::warn!(%address, error = %e, "no same-host fast path");
                    None
                }
            }
        } else {
            None
        };
        let storage_class = config
            .storage_class
            .unwrap_or_else(|| config.tier.default_class());
        let mut info = DatanodeInfo {
            address,
            tier: config.tier,
            storage_class,
            capacity,
            block_size,
            id: DatanodeId(0),
            engine,
            fast_path: local.is_some(),
        };
        let who = Who::new(&tier)?;
        let identity = Identity::register(&store, &spec_of(&info), &who).await?;
        info.id = DatanodeId(identity.id());
        Ok(Self {
            listener,
            local,
            tier,
            config,
            client,
            store,
            info,
            identity,
            who,
            clients_secret,
        })
    }

    /// What it serves.
    pub fn info(&self) -> &DatanodeInfo {
        &self.info
    }

    /// Serves the data plane and heartbeats until `shutdown`, then deregisters.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let settings = Arc::new(server::Settings {
            secret: self.clients_secret,
            handshake_timeout: self.config.handshake_timeout,
            payload_timeout: self.config.payload_timeout,
            idle_timeout: self.config.idle_timeout,
            block_size: self.info.block_size,
            max_connections: self.config.max_connections,
            max_handshakes: self.config.max_handshakes,
            identity: Arc::new(RwLock::new(self.identity)),
            check_grants: true,
            gate: crate::wire::gate::Gate::new(self.config.local_group),
            tls: self.config.tls.clone(),
        });
        let identity = settings.identity.clone();
        let beats = tokio::spawn(heartbeats(
            self.store.clone(),
            self.client.clone(),
            spec_of(&self.info),
            self.who.clone(),
            identity.clone(),
        ));
        tracing::info!(address = %self.info.address, tier = self.info.tier.name(), "datanode serving");
        let flash = match &self.tier {
            AnyTier::Flash(t) => Some(t.clone()),
            AnyTier::Dram(_) => None,
        };
        let served = match self.tier {
            AnyTier::Dram(t) => {
                server::serve(self.listener, self.local, t, settings, shutdown).await
            }
            AnyTier::Flash(t) => {
                server::serve(self.listener, self.local, t, settings, shutdown).await
            }
        };
        // A clean stop: a flash tier leaves its state, to offer its blocks again next time.
        if let Some(flash) = flash
            && let Err(e) = flash.save_state(&self.who.uuid)
        {
            tracing::warn!(error = %e, "the flash tier's state could not be kept: its blocks will not be offered again");
        }
        beats.abort();
        let registration = identity.read().registration.clone();
        // A namenode that is gone is not waited for (the store would try again for a while).
        let goodbye = self.store.deregister_datanode(&registration);
        match tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "deregistering failed"),
            Err(_) => tracing::debug!("the namenode did not answer the goodbye"),
        }
        served
    }
}

fn spec_of(info: &DatanodeInfo) -> DatanodeSpec {
    DatanodeSpec {
        host: info.address.ip(),
        address: info.address,
        tier: info.tier.name().into(),
        storage_class: info.storage_class,
        capacity: info.capacity,
    }
}

/// The host clients see: the listen address, or if that is a wildcard, the local address
/// that routes to the namenode.
fn advertised_host(listen: IpAddr, namenode: &str) -> Result<IpAddr> {
    if !listen.is_unspecified() {
        return Ok(listen);
    }
    let probe = std::net::UdpSocket::bind(SocketAddr::new(listen, 0))?;
    probe.connect(namenode).map_err(|cause| Error::Connect {
        addr: namenode.to_owned(),
        cause,
    })?;
    Ok(probe.local_addr()?.ip())
}

/// Heartbeats forever; registers again (under its identity, with its blocks) when the
/// namenode no longer knows this datanode, and reconnects when the namenode connection breaks,
/// trying again soon (not a whole interval later) while it cannot, so that after a namenode
/// restart its blocks are readable again within moments.
async fn heartbeats(
    mut store: Store,
    client: ClientConfig,
    spec: DatanodeSpec,
    who: Who,
    identity: Arc<RwLock<Identity>>,
) {
    let mut interval = match store.cluster_info().await {
        Ok(info) => info.heartbeat_interval,
        Err(_) => Duration::from_secs(2),
    };
    // Failures in a row: the next try comes 50 ms, 100 ms, ... after one, at most an interval.
    let mut failures = 0u32;
    let mut wait = interval;
    let retry = |failures: &mut u32, interval: Duration| {
        *failures += 1;
        (Duration::from_millis(50) * 2u32.saturating_pow(*failures - 1)).min(interval)
    };
    loop {
        tokio::time::sleep(wait).await;
        let current = identity.read().registration.clone();
        match store.heartbeat(&current).await {
            Ok(()) => {
                (failures, wait) = (0, interval);
                continue;
            }
            Err(Error::UnknownDatanode { .. }) => {
                tracing::warn!(
                    old = current.id.0,
                    "the namenode forgot this datanode; registering again"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; reconnecting to the namenode");
                match Store::connect(&client).await {
                    Ok(fresh) => store = fresh,
                    Err(e) => {
                        tracing::warn!(error = %e, "namenode unreachable");
                        wait = retry(&mut failures, interval);
                        continue;
                    }
                }
                if let Ok(info) = store.cluster_info().await {
                    interval = info.heartbeat_interval;
                }
                // A reconnect after a namenode restart needs a new registration; after a
                // transient break the old id still works.
                if store.heartbeat(&current).await.is_ok() {
                    (failures, wait) = (0, interval);
                    continue;
                }
            }
        }
        match Identity::register(&store, &spec, &who).await {
            Ok(fresh) => {
                tracing::info!(
                    id = fresh.id(),
                    adopted = fresh.registration.adopted_blocks,
                    lost = fresh.registration.lost_blocks,
                    "registered again"
                );
                *identity.write() = fresh;
                (failures, wait) = (0, interval);
            }
            Err(e) => {
                tracing::warn!(error = %e, "registering again failed");
                wait = retry(&mut failures, interval);
            }
        }
    }
}
