//! The long-running servers: `crail namenode`, `crail datanode` (one tier) and `crail node`
//! (a node's tiers and services on one host address, assembled by `crail-node`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use crail_node::{BroadcastConfig, Node, NodeConfig, ShuffleConfig};
use crail_store::{ByteSize, Config, TierKind};
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub(crate) struct NamenodeArgs {
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:9060].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Block size, a multiple of 4KiB [default: 1MiB].
    #[arg(long)]
    block_size: Option<ByteSize>,
    /// Keep the namespace in a journal in this directory: a restarted namenode comes back
    /// with every file, shuffle and broadcast [default: namenode.journal, none].
    #[arg(long)]
    journal: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DatanodeArgs {
    #[command(flatten)]
    client: crate::ClientArgs,
    /// Tier to serve: dram or flash [default: dram].
    #[arg(long)]
    tier: Option<TierKind>,
    /// Bytes of storage to offer, e.g. 4GiB [default: 1GiB].
    #[arg(long)]
    capacity: Option<ByteSize>,
    /// File or block device of a flash tier (a file is created if missing).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Storage class [default: 0 for dram, 1 for flash].
    #[arg(long)]
    storage_class: Option<u32>,
    /// Data-plane address to listen on; its IP is the host clients see [default: 127.0.0.1:0].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// I/O engine of a flash tier: auto, uring or pread [default: auto].
    #[arg(long)]
    io_engine: Option<crail_store::IoEngine>,
    /// Data-plane transport: tcp or rdma (needs the `rdma` build feature and a device)
    /// [default: tcp].
    #[arg(long)]
    transport: Option<crail_store::Transport>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    client: crate::ClientArgs,
    /// This node's address: clients on it are "local" to its tiers [default: 127.0.0.1].
    #[arg(long)]
    host: Option<IpAddr>,
    /// DRAM to offer, e.g. 4GiB; 0 for none [default: the configuration's datanode.capacity].
    #[arg(long)]
    dram: Option<ByteSize>,
    /// Flash to offer, e.g. 16GiB, in a file under --flash-dir [default: none].
    #[arg(long, requires = "flash_dir")]
    flash: Option<ByteSize>,
    /// Directory of the flash tier's file, crail-flash-<host>.img (created, removed on exit).
    #[arg(long)]
    flash_dir: Option<PathBuf>,
    #[command(flatten)]
    shuffle: ShuffleArgs,
    #[command(flatten)]
    broadcast: BroadcastArgs,
}

/// The node's shuffle service.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ShuffleArgs {
    /// TCP port of the node's shuffle service, on the node's address; 0 picks a free one
    /// [default: 9070].
    #[arg(long)]
    shuffle_port: Option<u16>,
    /// Map tasks of one shuffle writing at once on this node, each through its own group of
    /// files [default: the machine's cores].
    #[arg(long)]
    shuffle_slots: Option<usize>,
    /// The most map tasks a shuffle may register here [default: 16777216].
    #[arg(long)]
    max_maps: Option<u32>,
    /// The most partitions a shuffle may register here [default: 1048576].
    #[arg(long)]
    max_partitions: Option<u32>,
    /// Remove an application's shuffles and broadcast variables once no node has seen a
    /// client of it for this long, e.g. 1h; 0 keeps them until removed [default: 1h].
    #[arg(long)]
    orphan_ttl: Option<crate::DurationArg>,
}

impl ShuffleArgs {
    /// The service these flags ask for, its port `port` unless --shuffle-port says.
    pub(crate) fn config(&self, port: u16) -> ShuffleConfig {
        let default = ShuffleConfig::default();
        ShuffleConfig {
            port: self.shuffle_port.unwrap_or(port),
            slots: self.shuffle_slots,
            max_maps: self.max_maps.unwrap_or(default.max_maps),
            max_partitions: self.max_partitions.unwrap_or(default.max_partitions),
        }
    }

    /// The orphan TTL asked for (`0`: none) [default: 1h].
    pub(crate) fn orphan_ttl(&self) -> Option<std::time::Duration> {
        match &self.orphan_ttl {
            Some(ttl) if ttl.0.is_zero() => None,
            Some(ttl) => Some(ttl.0),
            None => Some(crail_node::ORPHAN_TTL),
        }
    }
}

/// The node's broadcast service.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BroadcastArgs {
    /// TCP port of the node's broadcast service, on the node's address; 0 picks a free one
    /// [default: 9080].
    #[arg(long)]
    broadcast_port: Option<u16>,
}

impl BroadcastArgs {
    /// The service these flags ask for, its port `port` unless --broadcast-port says.
    pub(crate) fn config(&self, port: u16) -> BroadcastConfig {
        BroadcastConfig {
            port: self.broadcast_port.unwrap_or(port),
        }
    }
}

pub(crate) async fn namenode(args: NamenodeArgs, config: Config) -> anyhow::Result<()> {
    let mut config = config.namenode;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(block_size) = args.block_size {
        config.block_size = block_size;
    }
    if args.journal.is_some() {
        config.journal = args.journal;
    }
    config.validate()?;
    let shutdown = crail_node::shutdown_signal()?;
    let listen = config.listen;
    // The namespace first (a journal may take seconds to replay), then the port.
    let namenode = crail_store::namenode::Namenode::open(config)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // Scripts and tests read this line to learn the port.
    say!("namenode listening on {}", listener.local_addr()?);
    namenode.serve(listener, shutdown).await?;
    Ok(())
}

pub(crate) async fn datanode(args: DatanodeArgs, config: Config) -> anyhow::Result<()> {
    let client = args.client.config(config.clone(), "crail datanode");
    let mut dn = config.datanode;
    if let Some(tier) = args.tier {
        dn.tier = tier;
    }
    if let Some(capacity) = args.capacity {
        dn.capacity = capacity;
    }
    if args.path.is_some() {
        dn.path = args.path;
    }
    if args.storage_class.is_some() {
        dn.storage_class = args.storage_class;
    }
    if let Some(listen) = args.listen {
        dn.listen = listen;
    }
    if let Some(engine) = args.io_engine {
        dn.io_engine = engine;
    }
    if let Some(transport) = args.transport {
        dn.transport = transport;
    }
    let shutdown = crail_node::shutdown_signal()?;
    let datanode = crail_node::start_datanode(dn, client).await?;
    // Scripts and tests read this line to learn the address.
    say!("{}", crail_node::datanode_line(datanode.info()));
    datanode.serve(shutdown).await?;
    Ok(())
}

pub(crate) async fn node(args: NodeArgs, mut config: Config) -> anyhow::Result<()> {
    config.client = args.client.config(config.clone(), "crail node");
    let node = NodeConfig {
        host: args.host.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        dram: args.dram.unwrap_or(config.datanode.capacity),
        flash: args.flash.unwrap_or(ByteSize(0)),
        flash_dir: args.flash_dir,
        shuffle: Some(args.shuffle.config(crail_node::SHUFFLE_PORT)),
        broadcast: Some(args.broadcast.config(crail_node::BROADCAST_PORT)),
        orphan_ttl: args.shuffle.orphan_ttl(),
    };
    if node.shuffle.as_ref().is_some_and(|s| s.slots == Some(0)) {
        bail!("--shuffle-slots must be at least 1");
    }
    let signal = crail_node::shutdown_signal()?;
    let node = Node::start(&node, &config).await?;
    // Scripts and tests read these lines to learn the addresses.
    for line in node.announcements() {
        say!("{line}");
    }
    node.serve(signal).await?;
    Ok(())
}
