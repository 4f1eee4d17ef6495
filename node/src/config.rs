//! What a node and a cluster are made of, as plain values: the command line (`crail node`,
//! `crail cluster`) and programs that embed a cluster fill them in.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crail_store::ByteSize;
use serde::{Deserialize, Serialize};

/// Default TCP port of a node's shuffle service.
pub const SHUFFLE_PORT: u16 = 9070;
/// Default TCP port of a node's broadcast service.
pub const BROADCAST_PORT: u16 = 9080;
/// How long an application may go unseen before its shuffles and variables are removed.
pub const ORPHAN_TTL: Duration = Duration::from_secs(3600);

/// One node: its tiers and services on one host address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node's address: its tiers and services listen on it, and clients on it are
    /// "local" to its tiers.
    pub host: IpAddr,
    /// DRAM to offer; 0 for none.
    pub dram: ByteSize,
    /// Flash to offer, in `crail-flash-<host>.img` under `flash_dir`; 0 for none.
    pub flash: ByteSize,
    /// Directory of the flash tier's file (created, removed when the node stops).
    pub flash_dir: Option<PathBuf>,
    /// The shuffle service, or none (a storage-only node).
    pub shuffle: Option<ShuffleConfig>,
    /// The broadcast service, or none.
    pub broadcast: Option<BroadcastConfig>,
    /// An application no node has seen a client of for this long has its shuffles and
    /// broadcast variables removed; `None` keeps them until removed.
    pub orphan_ttl: Option<Duration>,
}

impl NodeConfig {
    /// A node on `host` with `dram` and both services on free ports.
    pub fn new(host: IpAddr, dram: ByteSize) -> Self {
        Self {
            host,
            dram,
            flash: ByteSize(0),
            flash_dir: None,
            shuffle: Some(ShuffleConfig {
                port: 0,
                ..ShuffleConfig::default()
            }),
            broadcast: Some(BroadcastConfig { port: 0 }),
            orphan_ttl: Some(ORPHAN_TTL),
        }
    }

    /// Without services: the node's tiers alone.
    pub fn storage_only(self) -> Self {
        Self {
            shuffle: None,
            broadcast: None,
            ..self
        }
    }

    /// With `flash` in a file under `dir`.
    pub fn with_flash(self, flash: ByteSize, dir: &std::path::Path) -> Self {
        Self {
            flash,
            flash_dir: Some(dir.to_owned()),
            ..self
        }
    }
}

/// A node's shuffle service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShuffleConfig {
    /// TCP port on the node's address; 0 picks a free one.
    pub port: u16,
    /// Map tasks of one shuffle writing at once on this node; `None`: the machine's cores.
    pub slots: Option<usize>,
    /// The most map tasks a shuffle may register.
    #[serde(default = "max_maps")]
    pub max_maps: u32,
    /// The most partitions a shuffle may register.
    #[serde(default = "max_partitions")]
    pub max_partitions: u32,
}

fn max_maps() -> u32 {
    crail_shuffle::service::ServiceConfig::default().max_maps
}

fn max_partitions() -> u32 {
    crail_shuffle::service::ServiceConfig::default().max_partitions
}

impl Default for ShuffleConfig {
    fn default() -> Self {
        Self {
            port: SHUFFLE_PORT,
            slots: None,
            max_maps: max_maps(),
            max_partitions: max_partitions(),
        }
    }
}

/// A node's broadcast service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BroadcastConfig {
    /// TCP port on the node's address; 0 picks a free one.
    pub port: u16,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            port: BROADCAST_PORT,
        }
    }
}

/// A whole cluster on this machine: the namenode in the calling process, each node on its
/// own loopback address (127.0.0.2, .3, ...).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Nodes, at most [`MAX_NODES`].
    pub nodes: u8,
    /// DRAM per node.
    pub dram: ByteSize,
    /// Flash per node, in files under `flash_dir`.
    pub flash: ByteSize,
    /// Directory of the nodes' flash files.
    pub flash_dir: Option<PathBuf>,
    /// The namenode's address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Block size; `None`: the configuration's.
    pub block_size: Option<ByteSize>,
    /// Every node's shuffle service (a port other than 0 clashes between nodes only when
    /// they share an address, which they never do).
    pub shuffle: ShuffleConfig,
    /// Every node's broadcast service.
    pub broadcast: BroadcastConfig,
    /// Every node's orphan TTL (see [`NodeConfig::orphan_ttl`]).
    pub orphan_ttl: Option<Duration>,
}

/// The most nodes of a cluster on one machine: 127.0.0.2 to 127.0.0.201.
pub const MAX_NODES: u8 = 200;

impl ClusterConfig {
    /// `nodes` nodes of `dram` each, the namenode and every service on free ports.
    pub fn new(nodes: u8, dram: ByteSize) -> Self {
        Self {
            nodes,
            dram,
            flash: ByteSize(0),
            flash_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            block_size: None,
            shuffle: ShuffleConfig {
                port: 0,
                ..ShuffleConfig::default()
            },
            broadcast: BroadcastConfig { port: 0 },
            orphan_ttl: Some(ORPHAN_TTL),
        }
    }

    /// The address of node `i` (from 0).
    pub fn host(i: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, i.saturating_add(2)])
    }

    /// Node `i`'s configuration.
    pub(crate) fn node(&self, i: u8) -> NodeConfig {
        NodeConfig {
            host: Self::host(i),
            dram: self.dram,
            flash: self.flash,
            flash_dir: self.flash_dir.clone(),
            shuffle: Some(self.shuffle.clone()),
            broadcast: Some(self.broadcast.clone()),
            orphan_ttl: self.orphan_ttl,
        }
    }
}
