//! `crail cluster`: a whole cluster on this machine (`crail_node::Embedded`): the namenode
//! in this process, each node a child process on its own loopback address (127.0.0.2, .3,
//! ...), stopped with this process however it ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use crail_node::{ClusterConfig, Embedded};
use crail_store::{ByteSize, Config, Tiering};

use crate::servers::{BroadcastArgs, ShuffleArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Nodes to start, on 127.0.0.2, 127.0.0.3, ... (at most 200).
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// DRAM per node, e.g. 1GiB.
    #[arg(long, default_value = "1GiB")]
    dram: ByteSize,
    /// Flash per node, e.g. 4GiB, in files under --flash-dir [default: none].
    #[arg(long, requires = "flash_dir")]
    flash: Option<ByteSize>,
    /// Directory for the nodes' flash files (removed when the cluster stops).
    #[arg(long)]
    flash_dir: Option<PathBuf>,
    /// Where a node's blocks go when its DRAM is full: class-first (other nodes' DRAM, then
    /// flash) or host-first (its own flash, then other nodes) [default: the configuration's
    /// namenode.tiering, class-first].
    #[arg(long)]
    tiering: Option<Tiering>,
    /// Write a client configuration file here once every node is serving (removed when the
    /// cluster stops); `crail --config FILE fs -ls /` then talks to this cluster.
    #[arg(long)]
    config_out: Option<PathBuf>,
    /// The namenode's address [default: the configuration's namenode.listen, 127.0.0.1:9060].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Block size, a multiple of 4KiB [default: 1MiB].
    #[arg(long)]
    block_size: Option<ByteSize>,
    /// Keep the namespace in a journal in this directory (see `crail namenode --journal`)
    /// [default: namenode.journal, none].
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Keep serving when a node dies (it is reported; its data is lost to the store), as a
    /// real cluster would: for fault-injection tests. Without it a dead node stops the
    /// cluster.
    #[arg(long)]
    keep_going: bool,
    /// TLS on every TCP port, with a throwaway certificate authority made for this cluster
    /// (its files in a temporary directory, removed when the cluster stops; the client
    /// configuration names them). A configuration's own `[security] tls_*` files win.
    #[arg(long)]
    tls: bool,
    /// With --tls: every peer presents a certificate too (mutual TLS); the client
    /// configuration names this cluster's.
    #[arg(long, requires = "tls")]
    tls_client_auth: bool,
    #[command(flatten)]
    shuffle: ShuffleArgs,
    #[command(flatten)]
    broadcast: BroadcastArgs,
}

impl Args {
    /// Whether `file` is the client config this cluster writes.
    pub(crate) fn writes(&self, file: Option<&Path>) -> bool {
        let same = |a: &Path, b: &Path| {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
        };
        matches!((file, &self.config_out), (Some(f), Some(out)) if same(f, out))
    }
}

impl Args {
    fn cluster(&self, config: &Config) -> ClusterConfig {
        ClusterConfig {
            nodes: self.nodes,
            dram: self.dram,
            flash: self.flash.unwrap_or(ByteSize(0)),
            flash_dir: self.flash_dir.clone(),
            listen: self.listen.unwrap_or(config.namenode.listen),
            block_size: self.block_size,
            // Any free port unless one is asked for (two clusters on one machine must not
            // clash); clients find the services in the store (`ShuffleClient::connect_local`).
            shuffle: self.shuffle.config(0),
            broadcast: self.broadcast.config(0),
            orphan_ttl: self.shuffle.orphan_ttl(),
        }
    }
}

pub(crate) async fn run(args: Args, mut config: Config) -> anyhow::Result<()> {
    let signal = crail_node::shutdown_signal()?;
    if let Some(tiering) = args.tiering {
        config.namenode.tiering = tiering;
    }
    if args.journal.is_some() {
        config.namenode.journal = args.journal.clone();
    }
    if args.nodes == 0 || args.nodes > crail_node::MAX_NODES {
        bail!("--nodes must be between 1 and {}", crail_node::MAX_NODES);
    }
    let pki = match args.tls && config.security.tls_ca.is_none() {
        true => Some(throwaway_pki(&args, &mut config)?),
        false => None,
    };
    let started = Embedded::start(&args.cluster(&config), &config).await;
    let mut embedded = match started {
        Ok(embedded) => embedded,
        Err(e) => {
            drop(pki);
            return Err(e.into());
        }
    };
    let outcome = async {
        let written = args
            .config_out
            .as_deref()
            .map(|path| write_client_config(path, embedded.namenode(), &config))
            .transpose()?;
        announce(
            &args,
            config.namenode.tiering,
            &embedded,
            written.as_deref(),
        );
        embedded.forward_logs();
        let result = serve_until_stopped(&mut embedded, signal, args.keep_going).await;
        if let Some(path) = &written {
            let _ = std::fs::remove_file(path);
        }
        result
    }
    .await;
    say!("peak resident memory: {}", embedded.peak_memory());
    let stopped = embedded.stop().await;
    drop(pki);
    outcome?;
    stopped?;
    say!("cluster stopped");
    Ok(())
}

/// Makes a certificate authority and a certificate for every host of the cluster in a
/// temporary directory (gone when the returned handle drops) and turns TLS on in `config`.
fn throwaway_pki(args: &Args, config: &mut Config) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("crail-tls-")
        .tempdir()
        .context("cannot make a directory for the cluster's TLS files")?;
    let cluster = args.cluster(config);
    crail_node::pki::turn_on(dir.path(), &cluster, config, args.tls_client_auth)?;
    Ok(dir)
}

/// Waits for a signal, or for a node to die: an error (the cluster is no longer whole), or
/// with `keep_going` a report, and the rest serve on (until every node is gone).
async fn serve_until_stopped(
    cluster: &mut Embedded,
    signal: impl std::future::Future<Output = ()>,
    keep_going: bool,
) -> anyhow::Result<()> {
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => return Ok(()),
            (host, status) = cluster.node_died() => {
                if !keep_going {
                    bail!("node {host} stopped unexpectedly ({status}); stopping the cluster");
                }
                let left = cluster.running();
                if left == 0 {
                    bail!("every node has stopped; stopping the cluster");
                }
                tell!("crail: node {host} stopped unexpectedly ({status}); {left} left");
            }
        }
    }
}

/// The client configuration for this cluster: its namenode and the secret, if any. Written
/// to a temporary name and renamed, so a reader never sees half a file.
fn write_client_config(path: &Path, nn: SocketAddr, config: &Config) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "# Written by `crail cluster` (pid {}); valid while it runs.\n[client]\nnamenode = \"{nn}\"\n",
        std::process::id()
    );
    let security = &config.security;
    let mut lines = Vec::new();
    if let Some(secret) = &security.secret {
        lines.push(format!("secret = {}", toml_string(secret)));
    }
    if let Some(ca) = &security.tls_ca {
        lines.push(format!("tls_ca = {}", toml_path(ca)));
        if security.tls_client_auth {
            // The servers want a certificate from every client: this machine's will do.
            for (key, path) in [
                ("tls_cert", &security.tls_cert),
                ("tls_key", &security.tls_key),
            ] {
                if let Some(path) = path {
                    lines.push(format!("{key} = {}", toml_path(path)));
                }
            }
        }
        if let Some(name) = &security.tls_server_name {
            lines.push(format!("tls_server_name = {}", toml_string(name)));
        }
    }
    if !lines.is_empty() {
        text.push_str(&format!("\n[security]\n{}\n", lines.join("\n")));
    }
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_owned())
}

fn toml_path(path: &Path) -> String {
    toml_string(&path.display().to_string())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn announce(args: &Args, tiering: Tiering, cluster: &Embedded, config_out: Option<&Path>) {
    let nn = cluster.namenode();
    say!("namenode listening on {nn}");
    for line in cluster.announcements() {
        say!("{line}");
    }
    let flash = match args.flash {
        Some(f) if f.bytes() > 0 => format!(" + {f} flash ({tiering})"),
        _ => String::new(),
    };
    say!(
        "cluster up: namenode {nn}, {} nodes (127.0.0.2-127.0.0.{}), {} dram{flash} each",
        args.nodes,
        args.nodes + 1,
        args.dram
    );
    match config_out {
        Some(path) => say!(
            "client config: {} (try: crail --config {} fs -ls /)",
            path.display(),
            path.display()
        ),
        None => say!("clients: --namenode {nn}"),
    }
    say!("Ctrl-C or SIGTERM stops the cluster");
}
