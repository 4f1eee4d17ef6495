//! `crail`: the operator's and the new user's command. Each subcommand parses its flags, lays
//! them over the configuration (defaults, then the TOML file, then `CRAIL_*` variables) and
//! calls the libraries; the servers and the cluster are `crail-node`'s.

#[macro_use]
extern crate crail_node;

mod broadcastbench;
mod cluster;
mod databench;
mod fs;
mod iobench;
mod iotests;
mod servers;
mod shufflebench;
mod status;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crail_store::{ClientConfig, Config, Store};

#[derive(Debug, Parser)]
#[command(
    name = "crail",
    version,
    about = "crail: a tiered store for ephemeral data (servers, the embedded cluster, tools)",
    after_help = "Configuration: defaults, then the TOML file (--config or CRAIL_CONF), then \
                  CRAIL_<SECTION>_<KEY> variables, then flags; docs/config.md lists every key. \
                  Logs: RUST_LOG (e.g. RUST_LOG=debug)."
)]
struct Cli {
    /// Configuration file (TOML) [env: CRAIL_CONF].
    #[arg(long, global = true, env = "CRAIL_CONF", hide_env = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the metadata server (namespace, block placement, datanode registry).
    Namenode(servers::NamenodeArgs),
    /// Run a storage server: one tier (dram or flash) registered with the namenode.
    Datanode(servers::DatanodeArgs),
    /// Run a node's daemon: its dram and flash tiers, on one host address.
    Node(servers::NodeArgs),
    /// Start a whole cluster on this machine, one 127.0.0.x address per node.
    Cluster(cluster::Args),
    /// The file system shell, after `hdfs dfs`: crail fs -ls /, -put, -get, -cat, -rm, ...
    Fs(fs::Args),
    /// The datanodes the namenode knows: host, tier, class, capacity, use, last heartbeat.
    Status(status::Args),
    /// Measure metadata and data operations against a running store.
    Iobench(iobench::Args),
    /// Measure the shuffle service of a running cluster against a plain TCP stream.
    Shufflebench(shufflebench::Args),
    /// Measure a broadcast variable read on every node against a single source.
    Broadcastbench(broadcastbench::Args),
}

/// The configuration under the command line: defaults, the file, then `CRAIL_*` variables.
fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    Ok(Config::load(path.map(PathBuf::as_path), env)?)
}

/// Flags every client command takes.
#[derive(Debug, Clone, clap::Args)]
struct ClientArgs {
    /// Namenode address, host:port [default: the configuration's client.namenode].
    #[arg(long)]
    namenode: Option<String>,
}

impl ClientArgs {
    fn config(&self, config: Config, name: &str) -> ClientConfig {
        let mut client = config.client;
        if let Some(namenode) = &self.namenode {
            client.namenode = namenode.clone();
        }
        client.name = name.into();
        client
    }

    async fn connect(&self, config: Config, name: &str) -> anyhow::Result<Store> {
        let client = self.config(config, name);
        Store::connect(&client)
            .await
            .with_context(|| format!("cannot reach the namenode at {}", client.namenode))
    }
}

/// A duration flag: `500ms`, `10s`, `1h`.
#[derive(Debug, Clone, Copy)]
struct DurationArg(std::time::Duration);

impl std::str::FromStr for DurationArg {
    type Err = crail_store::UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crail_store::parse_duration(s).map(Self)
    }
}

impl std::fmt::Display for DurationArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crail_store::format_duration(self.0))
    }
}

/// Parses command line `args` the way `crail` does: `--help` and `--version` print and exit
/// 0; a bad command line is one line on stderr naming `program` and exit code 2.
pub fn parse_args<P, I, T>(program: &str, args: I) -> Result<P, ExitCode>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match P::try_parse_from(args) {
        Ok(parsed) => Ok(parsed),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            // One line: clap's first, without its own prefix or the usage that follows.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "{program}: error: {} ({program} --help)",
                line.trim_start_matches("error: ")
            );
            Err(ExitCode::from(2))
        }
    }
}

/// Runs the `crail` command line `args` (the program name first) and returns its exit code.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli: Cli = match parse_args("crail", args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let default_log = match cli.command {
        Command::Namenode(_) | Command::Datanode(_) | Command::Node(_) => "info",
        _ => "warn",
    };
    crail_node::init_logging(default_log);
    crail_node::raise_open_files_limit();
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
    // `crail cluster --config-out F` writes F: a CRAIL_CONF naming F (left exported from the
    // last run) is the cluster's output, not its input.
    let config_file = match &cli.command {
        Command::Cluster(args) if args.writes(cli.config.as_deref()) => None,
        _ => cli.config,
    };
    let result = runtime.block_on(async {
        let config = load_config(config_file.as_ref())?;
        match cli.command {
            Command::Namenode(args) => servers::namenode(args, config).await,
            Command::Datanode(args) => servers::datanode(args, config).await,
            Command::Node(args) => servers::node(args, config).await,
            Command::Cluster(args) => cluster::run(args, config).await,
            Command::Fs(args) => fs::run(args, config).await,
            Command::Status(args) => status::run(args, config).await,
            Command::Iobench(args) => iobench::run(args, config).await,
            Command::Shufflebench(args) => shufflebench::run(args, config).await,
            Command::Broadcastbench(args) => broadcastbench::run(args, config).await,
        }
    });
    // Do not wait for tasks still blocked on I/O (a stdin read, a dead peer).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crail: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `crail fs -cat big | head` closes our stdout early: that is the reader's choice, not an
/// error worth a message.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
