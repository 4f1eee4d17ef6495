//! The long-running servers: `crail namenode`, `crail datanode` (one tier) and `crail node`
//! (a node's tiers on one host address).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use crail_node_service::Listener;
use crail_store::datanode::Datanode;
use crail_store::{ByteSize, ClientConfig, Config, DatanodeConfig, TierKind};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::shutdown_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct NamenodeArgs {
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:9060].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Block size, a multiple of 4KiB [default: 1MiB].
    #[arg(long)]
    block_size: Option<ByteSize>,
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
    /// Stop when standard input closes (how `crail cluster` ties its nodes to itself).
    #[arg(long, hide = true)]
    stop_with_stdin: bool,
}

/// The node's shuffle service.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ShuffleArgs {
    /// TCP port of the node's shuffle service, on the node's address; 0 picks a free one
    /// [default: 9070].
    #[arg(long)]
    pub(crate) shuffle_port: Option<u16>,
    /// Map tasks of one shuffle writing at once on this node, each through its own group of
    /// files [default: the machine's cores].
    #[arg(long)]
    pub(crate) shuffle_slots: Option<usize>,
    /// Remove an application's shuffles and broadcast variables once no node has seen a
    /// client of it for this long, e.g. 1h; 0 keeps them until removed [default: 1h].
    #[arg(long)]
    pub(crate) orphan_ttl: Option<crate::DurationArg>,
}

impl ShuffleArgs {
    /// The orphan TTL asked for (`0`: none), else `default`.
    fn orphan_ttl(&self, default: Option<std::time::Duration>) -> Option<std::time::Duration> {
        match &self.orphan_ttl {
            Some(ttl) if ttl.0.is_zero() => None,
            Some(ttl) => Some(ttl.0),
            None => default,
        }
    }

    /// These flags again, for a child `crail node`.
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(port) = self.shuffle_port {
            out.extend(["--shuffle-port".into(), port.to_string()]);
        }
        if let Some(slots) = self.shuffle_slots {
            out.extend(["--shuffle-slots".into(), slots.to_string()]);
        }
        if let Some(ttl) = &self.orphan_ttl {
            out.extend(["--orphan-ttl".into(), ttl.to_string()]);
        }
        out
    }
}

/// Default TCP port of a node's shuffle service.
const SHUFFLE_PORT: u16 = 9070;

/// The node's broadcast service.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BroadcastArgs {
    /// TCP port of the node's broadcast service, on the node's address; 0 picks a free one
    /// [default: 9080].
    #[arg(long)]
    pub(crate) broadcast_port: Option<u16>,
}

impl BroadcastArgs {
    /// These flags again, for a child `crail node`.
    pub(crate) fn to_args(&self) -> Vec<String> {
        match self.broadcast_port {
            Some(port) => vec!["--broadcast-port".into(), port.to_string()],
            None => Vec::new(),
        }
    }
}

/// Default TCP port of a node's broadcast service.
const BROADCAST_PORT: u16 = 9080;

pub(crate) async fn namenode(args: NamenodeArgs, config: Config) -> anyhow::Result<()> {
    let mut config = config.namenode;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(block_size) = args.block_size {
        config.block_size = block_size;
    }
    config.validate()?;
    let shutdown = shutdown_signal()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Scripts and tests read this line to learn the port.
    say!("namenode listening on {}", listener.local_addr()?);
    crail_store::namenode::run(listener, config, shutdown).await?;
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
    dn.validate()?;
    let shutdown = shutdown_signal()?;
    let datanode = start_datanode(dn, client).await?;
    datanode.serve(shutdown).await?;
    Ok(())
}

/// Binds, registers and announces one tier; serving is the caller's.
async fn start_datanode(dn: DatanodeConfig, client: ClientConfig) -> anyhow::Result<Datanode> {
    let listener = TcpListener::bind(dn.listen)
        .await
        .with_context(|| format!("cannot listen on {}", dn.listen))?;
    let datanode = Datanode::start(listener, dn, client).await?;
    let info = datanode.info();
    // Scripts and tests read this line to learn the address.
    say!(
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
    );
    Ok(datanode)
}

/// A flash file this node created; removed when the node stops (its contents cannot outlive
/// the process: the checksums live in memory).
struct FlashFile {
    path: PathBuf,
    /// For a lock file: the open file holding the lock (closed after the removal).
    _lock: Option<std::fs::File>,
}

impl Drop for FlashFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Locks `<flash file>.lock` for the node's life, so two nodes never share a flash file; a
/// file left by a node that died is reused (its contents died with it).
fn lock_flash(path: &std::path::Path) -> anyhow::Result<FlashFile> {
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("{}: cannot open", lock_path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| anyhow::anyhow!("{} is in use by another node", path.display()))?;
    Ok(FlashFile {
        path: lock_path,
        _lock: Some(file),
    })
}

pub(crate) async fn node(args: NodeArgs, config: Config) -> anyhow::Result<()> {
    let client = args.client.config(config.clone(), "crail node");
    let host = args.host.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let client_for_services = client.clone().with_local_host(host);
    let dram = args.dram.unwrap_or(config.datanode.capacity);
    let flash = args.flash.unwrap_or(ByteSize(0));
    if dram.bytes() == 0 && flash.bytes() == 0 {
        bail!("a node needs some storage: --dram or --flash above 0");
    }
    let base = DatanodeConfig {
        listen: SocketAddr::new(host, 0),
        storage_class: None,
        path: None,
        ..config.datanode
    };
    let stop = CancellationToken::new();
    let signal = shutdown_signal()?;
    let mut tiers = Vec::new();
    let mut flash_file = None;
    let mut lock = None;
    if dram.bytes() > 0 {
        let dn = DatanodeConfig {
            tier: TierKind::Dram,
            capacity: dram,
            ..base.clone()
        };
        tiers.push(start_datanode(dn, client.clone()).await?);
    }
    if flash.bytes() > 0 {
        let dir = args.flash_dir.context("--flash needs --flash-dir")?;
        let path = dir.join(format!("crail-flash-{host}.img"));
        lock = Some(lock_flash(&path)?);
        let dn = DatanodeConfig {
            tier: TierKind::Flash,
            capacity: flash,
            path: Some(path.clone()),
            ..base
        };
        let started = start_datanode(dn, client).await;
        if path.exists() {
            flash_file = Some(FlashFile { path, _lock: None });
        }
        tiers.push(started?);
    }
    let offered = tiers
        .iter()
        .map(|t| format!("{} {}", t.info().tier.name(), ByteSize(t.info().capacity)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut serving = tokio::task::JoinSet::new();
    for tier in tiers {
        let stop = stop.clone();
        serving.spawn(async move { tier.serve(stop.cancelled_owned()).await });
    }
    let stdin_closed = async {
        if args.stop_with_stdin {
            let mut sink = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    // The tiers serve (and heartbeat) first: the service's own store client may take a
    // moment, and a silent datanode is soon declared dead.
    let services = async {
        let shuffle = start_shuffle(
            &args.shuffle,
            host,
            client_for_services.clone(),
            stop.clone(),
        )
        .await?;
        let broadcast = start_broadcast(
            &args.broadcast,
            &args.shuffle,
            host,
            client_for_services,
            stop.clone(),
        )
        .await?;
        anyhow::Ok((shuffle, broadcast))
    };
    let (shuffle, broadcast) = match services.await {
        Ok(services) => services,
        Err(e) => {
            stop.cancel();
            while serving.join_next().await.is_some() {}
            return Err(e);
        }
    };
    say!("node {host} serving: {offered}");
    serving.spawn(async move {
        shuffle
            .await
            .map_err(|e| service_failed(format!("the shuffle service's task failed: {e}")))?
            .map_err(|e| service_failed(format!("shuffle service: {e}")))
    });
    serving.spawn(async move {
        broadcast
            .await
            .map_err(|e| service_failed(format!("the broadcast service's task failed: {e}")))?
            .map_err(|e| service_failed(format!("broadcast service: {e}")))
    });
    let failed = tokio::select! {
        () = signal => None,
        () = stdin_closed => None,
        Some(result) = serving.join_next() => Some(result),
    };
    stop.cancel();
    let mut first_error = match failed {
        Some(Ok(Ok(()))) | None => None,
        Some(Ok(Err(e))) => Some(anyhow::Error::from(e)),
        Some(Err(e)) => Some(anyhow::anyhow!("a tier's task failed: {e}")),
    };
    while let Some(result) = serving.join_next().await {
        if let (None, Ok(Err(e))) = (&first_error, result) {
            first_error = Some(e.into());
        }
    }
    drop(flash_file);
    drop(lock);
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Binds a node service (`name`) on TCP at the node's address and on the abstract Unix
/// socket `@crail-<name>/<host>:<port>`: the listeners, the TCP address and the socket's name.
async fn bind_service(
    name: &str,
    host: IpAddr,
    port: u16,
) -> anyhow::Result<(Listener, Listener, SocketAddr, String)> {
    let addr = SocketAddr::new(host, port);
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{name} service: cannot listen on {addr}"))?;
    let addr = tcp.local_addr()?;
    let unix_name = format!("@crail-{name}/{addr}");
    let unix = Listener::unix(&unix_name)
        .with_context(|| format!("{name} service: cannot listen on unix:{unix_name}"))?;
    Ok((Listener::Tcp(tcp), unix, addr, unix_name))
}

fn service_failed(cause: String) -> crail_store::Error {
    crail_store::Error::Io {
        cause: std::io::Error::other(cause),
    }
}

/// Starts the node's shuffle service on TCP (the node's address) and on the abstract Unix
/// socket `@crail-shuffle/<host>:<port>`, announcing both; it serves until `stop`.
async fn start_shuffle(
    args: &ShuffleArgs,
    host: IpAddr,
    client: ClientConfig,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<crail_shuffle::Result<()>>> {
    let (tcp, unix, addr, unix_name) =
        bind_service("shuffle", host, args.shuffle_port.unwrap_or(SHUFFLE_PORT)).await?;
    let store = crail_store::Store::connect(&client)
        .await
        .context("shuffle service: cannot reach the namenode")?;
    let slots = args
        .shuffle_slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    if slots == 0 {
        bail!("--shuffle-slots must be at least 1");
    }
    let config = crail_shuffle::service::ServiceConfig {
        orphan_ttl: args.orphan_ttl(crail_shuffle::service::ServiceConfig::default().orphan_ttl),
    };
    crail_shuffle::service::advertise(
        &store,
        &host.to_string(),
        &[
            crail_shuffle::Endpoint::Unix(unix_name.clone()),
            crail_shuffle::Endpoint::Tcp(addr),
        ],
    )
    .await
    .context("shuffle service: cannot advertise itself in the store")?;
    // Scripts and tests read this line to learn the endpoints.
    say!("shuffle service on tcp:{addr} and unix:{unix_name} ({slots} slots per shuffle)");
    let slots = crail_shuffle::Slots::new(store, host.to_string(), slots);
    let listeners = vec![tcp, unix];
    Ok(tokio::spawn(crail_shuffle::service::run(
        slots,
        config,
        listeners,
        stop.cancelled_owned(),
    )))
}

/// Starts the node's broadcast service on TCP (the node's address) and on the abstract Unix
/// socket `@crail-broadcast/<host>:<port>`, announcing both; it serves until `stop`.
async fn start_broadcast(
    args: &BroadcastArgs,
    shared: &ShuffleArgs,
    host: IpAddr,
    client: ClientConfig,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<crail_broadcast::Result<()>>> {
    use crail_broadcast::service;
    let (tcp, unix, addr, unix_name) = bind_service(
        "broadcast",
        host,
        args.broadcast_port.unwrap_or(BROADCAST_PORT),
    )
    .await?;
    let store = crail_store::Store::connect(&client)
        .await
        .context("broadcast service: cannot reach the namenode")?;
    let config = service::ServiceConfig {
        orphan_ttl: shared.orphan_ttl(service::ServiceConfig::default().orphan_ttl),
        ..service::ServiceConfig::default()
    };
    service::advertise(
        &store,
        &host.to_string(),
        &[
            crail_broadcast::Endpoint::Unix(unix_name.clone()),
            crail_broadcast::Endpoint::Tcp(addr),
        ],
    )
    .await
    .context("broadcast service: cannot advertise itself in the store")?;
    // Scripts and tests read this line to learn the endpoints.
    say!("broadcast service on tcp:{addr} and unix:{unix_name}");
    let cache = crail_broadcast::NodeCache::new(crail_broadcast::Broadcasts::new(store));
    let listeners = vec![tcp, unix];
    Ok(tokio::spawn(service::run(
        cache,
        host.to_string(),
        config,
        listeners,
        stop.cancelled_owned(),
    )))
}
