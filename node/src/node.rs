//! One node: its tiers (a dram and a flash datanode) and its shuffle and broadcast services on
//! one host address, started in the current runtime and stopped together.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crail_node_service::Listener;
use crail_store::datanode::{Datanode, DatanodeInfo};
use crail_store::{ByteSize, ClientConfig, Config, DatanodeConfig, Store, TierKind};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{BroadcastConfig, NodeConfig, ShuffleConfig};
use crate::error::{Error, Result};

/// Binds `dn.listen` and registers one tier with the namenode `client` names; serving is the
/// caller's.
pub async fn start_datanode(dn: DatanodeConfig, client: ClientConfig) -> Result<Datanode> {
    dn.validate()?;
    let listener = TcpListener::bind(dn.listen)
        .await
        .map_err(|cause| Error::listen("datanode", dn.listen, cause))?;
    Ok(Datanode::start(listener, dn, client).await?)
}

/// The line a datanode announces itself with (scripts and tests read it for the address).
pub fn datanode_line(info: &DatanodeInfo) -> String {
    format!(
        "datanode listening on {} (tier {}, class {}, {}, engine {}{}, id {})",
        info.address,
        info.tier.name(),
        info.storage_class,
        ByteSize(info.capacity),
        info.engine,
        if info.fast_path {
            ", same-host fast path"
        } else {
            ""
        },
        info.id.0
    )
}

/// A running node. Dropping it stops it without waiting; [`Node::stop`] waits.
#[derive(Debug)]
pub struct Node {
    host: IpAddr,
    lines: Vec<String>,
    stop: CancellationToken,
    tasks: JoinSet<Result<()>>,
    /// The flash tier's file and its lock, removed when the node is dropped.
    files: Vec<NodeFile>,
}

impl Node {
    /// Starts `node`'s tiers, then its services, with `config`'s client (`[client] namenode`
    /// names the namenode; `[security] secret` guards every port) and datanode settings.
    /// Returns once everything listens and is registered.
    pub async fn start(node: &NodeConfig, config: &Config) -> Result<Self> {
        if node.dram.bytes() == 0 && node.flash.bytes() == 0 {
            return Err(Error::Config(
                "a node needs some storage: dram or flash above 0".into(),
            ));
        }
        let mut started = Self {
            host: node.host,
            lines: Vec::new(),
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            files: Vec::new(),
        };
        // What started of a node that fails stops (its tiers deregister) before the error.
        match started.start_parts(node, config).await {
            Ok(()) => Ok(started),
            Err(e) => {
                let _ = started.stop().await;
                Err(e)
            }
        }
    }

    async fn start_parts(&mut self, node: &NodeConfig, config: &Config) -> Result<()> {
        let mut client = config.client.clone();
        client.name = "crail node".into();
        let host = node.host;
        let base = DatanodeConfig {
            listen: SocketAddr::new(host, 0),
            storage_class: None,
            path: None,
            ..config.datanode.clone()
        };
        let mut offered = Vec::new();
        if node.dram.bytes() > 0 {
            let dn = DatanodeConfig {
                tier: TierKind::Dram,
                capacity: node.dram,
                ..base.clone()
            };
            offered.push(self.serve_tier(dn, &client).await?);
        }
        if node.flash.bytes() > 0 {
            let dir = node
                .flash_dir
                .as_ref()
                .ok_or_else(|| Error::Config("flash needs a flash directory".into()))?;
            let path = dir.join(format!("crail-flash-{host}.img"));
            self.files.push(lock_flash(&path)?);
            let dn = DatanodeConfig {
                tier: TierKind::Flash,
                capacity: node.flash,
                path: Some(path.clone()),
                ..base
            };
            let tier = self.serve_tier(dn, &client).await;
            if path.exists() {
                self.files.push(NodeFile { path, _lock: None });
            }
            offered.push(tier?);
        }
        // The tiers serve (and heartbeat) first: a service's own store client may take a
        // moment, and a silent datanode is soon declared dead.
        let services = client.with_local_host(host);
        if let Some(shuffle) = &node.shuffle {
            self.start_shuffle(
                shuffle,
                node.orphan_ttl,
                config.security.local_group,
                &services,
            )
            .await?;
        }
        if let Some(broadcast) = &node.broadcast {
            self.start_broadcast(
                broadcast,
                node.orphan_ttl,
                config.security.local_group,
                &services,
            )
            .await?;
        }
        self.lines
            .push(format!("node {host} serving: {}", offered.join(", ")));
        Ok(())
    }

    /// The node's address.
    pub fn host(&self) -> IpAddr {
        self.host
    }

    /// What it announces, line by line: each tier and service and where it listens, then
    /// `node <host> serving: ...` (scripts and embedded clusters wait for that line).
    pub fn announcements(&self) -> &[String] {
        &self.lines
    }

    /// Serves until `until` completes or a part of the node fails, then stops every part.
    pub async fn serve(mut self, until: impl Future<Output = ()>) -> Result<()> {
        let failed = tokio::select! {
            () = until => None,
            Some(result) = self.tasks.join_next() => Some(result),
        };
        let first = match failed {
            Some(Ok(Err(e))) => Some(e),
            Some(Err(e)) => Some(Error::task("a part of the node", e)),
            Some(Ok(Ok(()))) | None => None,
        };
        let rest = self.stop().await;
        first.map_or(rest, Err)
    }

    /// Stops every part (the tiers deregister) and waits; the first failure, if any.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        let mut first = None;
        while let Some(result) = self.tasks.join_next().await {
            let failure = match result {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => Error::task("a part of the node", e),
            };
            first.get_or_insert(failure);
        }
        first.map_or(Ok(()), Err)
    }

    async fn serve_tier(&mut self, dn: DatanodeConfig, client: &ClientConfig) -> Result<String> {
        let datanode = start_datanode(dn, client.clone()).await?;
        let info = datanode.info();
        self.lines.push(datanode_line(info));
        let offered = format!("{} {}", info.tier.name(), ByteSize(info.capacity));
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            datanode.serve(stop.cancelled_owned()).await?;
            Ok(())
        });
        Ok(offered)
    }

    async fn start_shuffle(
        &mut self,
        shuffle: &ShuffleConfig,
        orphan_ttl: Option<std::time::Duration>,
        local_group: Option<u32>,
        client: &ClientConfig,
    ) -> Result<()> {
        use crail_shuffle::{Endpoint, Slots, service};
        let (listeners, addr, unix) = bind_service("shuffle", self.host, shuffle.port).await?;
        let store = Store::connect(client).await?;
        let slots = shuffle
            .slots
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
        if slots == 0 {
            return Err(Error::Config("shuffle slots must be at least 1".into()));
        }
        let host = self.host.to_string();
        let endpoints = [Endpoint::Unix(unix.clone()), Endpoint::Tcp(addr)];
        service::advertise(&store, &host, &endpoints).await?;
        self.lines.push(format!(
            "shuffle service on tcp:{addr} and unix:{unix} ({slots} slots per shuffle)"
        ));
        let config = service::ServiceConfig {
            orphan_ttl,
            max_maps: shuffle.max_maps,
            max_partitions: shuffle.max_partitions,
            local_group,
            ..service::ServiceConfig::default()
        };
        let stop = self.stop.clone();
        self.keep_advertised(&store, crail_shuffle::layout::ROOT, &host, &endpoints);
        let slots = Slots::new(store, host, slots);
        self.tasks.spawn(async move {
            service::run(slots, config, listeners, stop.cancelled_owned()).await?;
            Ok(())
        });
        Ok(())
    }

    async fn start_broadcast(
        &mut self,
        broadcast: &BroadcastConfig,
        orphan_ttl: Option<std::time::Duration>,
        local_group: Option<u32>,
        client: &ClientConfig,
    ) -> Result<()> {
        use crail_broadcast::{Broadcasts, Endpoint, NodeCache, service};
        let (listeners, addr, unix) = bind_service("broadcast", self.host, broadcast.port).await?;
        let store = Store::connect(client).await?;
        let host = self.host.to_string();
        let endpoints = [Endpoint::Unix(unix.clone()), Endpoint::Tcp(addr)];
        service::advertise(&store, &host, &endpoints).await?;
        self.lines
            .push(format!("broadcast service on tcp:{addr} and unix:{unix}"));
        let config = service::ServiceConfig {
            orphan_ttl,
            local_group,
            ..service::ServiceConfig::default()
        };
        let stop = self.stop.clone();
        self.keep_advertised(&store, crail_broadcast::ROOT, &host, &endpoints);
        let cache = NodeCache::new(Broadcasts::new(store));
        self.tasks.spawn(async move {
            service::run(cache, host, config, listeners, stop.cancelled_owned()).await?;
            Ok(())
        });
        Ok(())
    }
}

impl Node {
    /// Writes a service's advertisement again whenever it goes missing (see
    /// [`crail_node_service::keep_advertised`]).
    fn keep_advertised(
        &mut self,
        store: &Store,
        root: &str,
        host: &str,
        endpoints: &[crail_node_service::Endpoint],
    ) {
        let keep = crail_node_service::keep_advertised(
            store.clone(),
            root.to_owned(),
            host.to_owned(),
            endpoints.to_vec(),
            ADVERTISEMENT_CHECK,
            self.stop.clone().cancelled_owned(),
        );
        self.tasks.spawn(async move {
            keep.await;
            Ok(())
        });
    }
}

/// How often a node checks that its services' advertisements are still in the store.
const ADVERTISEMENT_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        // The flash file before its lock: no other node may take the lock while it exists.
        while let Some(file) = self.files.pop() {
            drop(file);
        }
    }
}

/// Binds a node service (`name`) on TCP at the node's address and on the abstract Unix
/// socket `@crail-<name>/<host>:<port>`: the listeners, the TCP address and the socket's name.
async fn bind_service(
    name: &str,
    host: IpAddr,
    port: u16,
) -> Result<(Vec<Listener>, SocketAddr, String)> {
    let what = format!("{name} service");
    let addr = SocketAddr::new(host, port);
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|cause| Error::listen(&what, addr, cause))?;
    let addr = tcp
        .local_addr()
        .map_err(|cause| Error::listen(&what, addr, cause))?;
    let unix_name = format!("@crail-{name}/{addr}");
    let unix = Listener::unix(&unix_name)
        .map_err(|cause| Error::listen(&what, format!("unix:{unix_name}"), cause))?;
    Ok((vec![Listener::Tcp(tcp), unix], addr, unix_name))
}

/// A file the node made; removed when the node is dropped, with the state a flash tier leaves
/// beside its file (a node's flash is as ephemeral as its DRAM; `crail datanode --tier flash`
/// keeps both, and comes back with its blocks).
#[derive(Debug)]
struct NodeFile {
    path: PathBuf,
    /// For a lock file: the open file holding the lock (closed after the removal).
    _lock: Option<std::fs::File>,
}

impl Drop for NodeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(crail_store::datanode::flash_state_path(&self.path));
    }
}

/// Locks `<flash file>.lock` for the node's life, so two nodes never share a flash file; a
/// file left by a node that died is reused (its contents died with it).
fn lock_flash(path: &Path) -> Result<NodeFile> {
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|cause| Error::File {
            path: lock_path.clone(),
            cause,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| Error::FlashInUse(path.to_owned()))?;
    Ok(NodeFile {
        path: lock_path,
        _lock: Some(file),
    })
}
