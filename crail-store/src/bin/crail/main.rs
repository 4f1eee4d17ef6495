//! `crail`: the operator's command. Each subcommand parses its flags and calls the library.

mod databench;
mod iobench;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crail_store::{ByteSize, Config};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "crail",
    version,
    about = "crail: a tiered store for ephemeral data (namenode, datanodes, tools)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the metadata server (namespace, block placement, datanode registry).
    Namenode(NamenodeArgs),
    /// Run a storage server: one tier (dram or flash) registered with the namenode.
    Datanode(DatanodeArgs),
    /// Measure metadata and data operations against a running store.
    Iobench(iobench::Args),
}

#[derive(Debug, clap::Args)]
struct DatanodeArgs {
    /// Configuration file (TOML); also from CRAIL_CONF.
    #[arg(long, env = "CRAIL_CONF")]
    config: Option<PathBuf>,
    /// Namenode address, host:port [default: the config's client.namenode].
    #[arg(long)]
    namenode: Option<String>,
    /// Tier to serve: dram or flash [default: dram].
    #[arg(long)]
    tier: Option<crail_store::TierKind>,
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
    io_engine: Option<crail_store::datanode::IoEngine>,
    /// Data-plane transport: tcp or rdma (needs the `rdma` build feature and a device)
    /// [default: tcp].
    #[arg(long)]
    transport: Option<crail_store::Transport>,
}

#[derive(Debug, clap::Args)]
struct NamenodeArgs {
    /// Configuration file (TOML); also from CRAIL_CONF.
    #[arg(long, env = "CRAIL_CONF")]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:9060].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Block size, a multiple of 4KiB [default: 1MiB].
    #[arg(long)]
    block_size: Option<ByteSize>,
}

/// Loads the configuration file if one is named, else the defaults.
pub(crate) fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::from_file(path)?),
        None => Ok(Config::default()),
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn namenode(args: NamenodeArgs) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_ref())?.namenode;
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
    println!("namenode listening on {}", listener.local_addr()?);
    crail_store::namenode::run(listener, config, shutdown).await?;
    Ok(())
}

async fn datanode(args: DatanodeArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_ref())?;
    let (mut dn, mut client) = (config.datanode, config.client);
    if let Some(namenode) = args.namenode {
        client.namenode = namenode;
    }
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
    let listener = TcpListener::bind(dn.listen)
        .await
        .with_context(|| format!("cannot listen on {}", dn.listen))?;
    let datanode = crail_store::datanode::Datanode::start(listener, dn, client).await?;
    let info = datanode.info();
    // Scripts and tests read this line to learn the address.
    println!(
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
    datanode.serve(shutdown).await?;
    Ok(())
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed here, before the
/// caller announces it is up, so an early signal is never met by the default action.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Namenode(_) | Command::Datanode(_) => "info",
        Command::Iobench(_) => "warn",
    };
    init_logging(default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crail: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Namenode(args) => namenode(args).await,
            Command::Datanode(args) => datanode(args).await,
            Command::Iobench(args) => iobench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crail: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
