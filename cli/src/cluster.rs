//! `crail cluster`: a whole cluster on this machine. The namenode runs in this process; each
//! node is a `crail node` child process on its own loopback address (127.0.0.2, .3, ...), so
//! placement sees distinct hosts. The children stop when this process does, however it ends:
//! each watches its standard input, a pipe from us that closes when we exit.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use crail_store::{ByteSize, Config};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

/// The most nodes: 127.0.0.2 to 127.0.0.201.
const MAX_NODES: u8 = 200;
/// How long a node may take to reserve its memory and register.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after its stdin closes, before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Keep serving when a node dies (it is reported; its data is lost to the store), as a
    /// real cluster would: for fault-injection tests. Without it a dead node stops the
    /// cluster.
    #[arg(long)]
    keep_going: bool,
    #[command(flatten)]
    shuffle: crate::servers::ShuffleArgs,
    #[command(flatten)]
    broadcast: crate::servers::BroadcastArgs,
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

/// A `crail node` child and what we know of it.
struct Node {
    host: IpAddr,
    child: Child,
    /// Closing it tells the node to stop.
    stdin: Option<ChildStdin>,
    /// Its last line on stderr, for a one-line error if it fails.
    last_error: Arc<Mutex<String>>,
    /// Forward its stderr once the cluster is up.
    forward: CancellationToken,
}

pub(crate) async fn run(
    args: Args,
    config: Config,
    config_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let signal = crate::shutdown_signal()?;
    let mut cluster = Embedded::launch(args, &config, config_file.as_deref()).await?;
    let outcome = async {
        let written = cluster
            .args
            .config_out
            .as_deref()
            .map(|path| write_client_config(path, cluster.namenode, &config))
            .transpose()?;
        announce(
            &cluster.args,
            cluster.namenode,
            &cluster.lines,
            written.as_deref(),
        );
        for node in &cluster.nodes {
            node.forward.cancel();
        }
        let result = serve_until_stopped(&mut cluster.nodes, signal, cluster.args.keep_going).await;
        if let Some(path) = &written {
            let _ = std::fs::remove_file(path);
        }
        result
    }
    .await;
    let stopped = cluster.stop().await;
    outcome?;
    stopped?;
    say!("cluster stopped");
    Ok(())
}

/// A whole cluster run by this process: the namenode in it, each node a child process on its
/// own loopback address. The nodes stop when [`Embedded::stop`] is called or this process
/// ends, however it ends.
pub struct Embedded {
    args: Args,
    namenode: SocketAddr,
    client: crail_store::ClientConfig,
    stop_namenode: CancellationToken,
    namenode_task: tokio::task::JoinHandle<crail_store::Result<()>>,
    nodes: Vec<Node>,
    lines: Vec<String>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("namenode", &self.namenode)
            .field("nodes", &self.hosts())
            .finish()
    }
}

impl Embedded {
    /// Starts a cluster as `crail cluster FLAGS` would (`--nodes 3 --dram 2GiB`, ...), its
    /// namenode on a free port unless `--listen` says otherwise, over `config` (its
    /// `[namenode]` and `[security]` sections count). Returns once every node serves. The
    /// calling binary must pass the node command lines it is started with to
    /// [`crate::main_with`] (see [`crate::is_node_command`]).
    pub async fn start(flags: &[&str], config: &Config) -> anyhow::Result<Self> {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            args: Args,
        }
        let mut args = <Flags as clap::Parser>::try_parse_from(
            std::iter::once("cluster").chain(flags.iter().copied()),
        )
        .map_err(|e| {
            let text = e.to_string();
            anyhow::anyhow!(
                "cluster flags: {}",
                text.lines()
                    .next()
                    .unwrap_or("bad flags")
                    .trim_start_matches("error: ")
            )
        })?
        .args;
        args.listen
            .get_or_insert(SocketAddr::from(([127, 0, 0, 1], 0)));
        let cluster = Self::launch(args, config, None).await?;
        for node in &cluster.nodes {
            node.forward.cancel();
        }
        Ok(cluster)
    }

    async fn launch(
        args: Args,
        config: &Config,
        config_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        if args.nodes == 0 || args.nodes > MAX_NODES {
            bail!("--nodes must be between 1 and {MAX_NODES}");
        }
        if args.dram.bytes() == 0 && args.flash.is_none_or(|f| f.bytes() == 0) {
            bail!("the nodes need some storage: --dram or --flash above 0");
        }
        if let Some(dir) = args.flash_dir.as_ref().filter(|d| !d.is_dir()) {
            bail!("--flash-dir {}: not a directory", dir.display());
        }
        let mut nn = config.namenode.clone();
        if let Some(listen) = args.listen {
            nn.listen = listen;
        }
        if let Some(block_size) = args.block_size {
            nn.block_size = block_size;
        }
        nn.validate()?;
        let listener = TcpListener::bind(nn.listen)
            .await
            .with_context(|| format!("cannot listen on {}", nn.listen))?;
        let namenode = listener.local_addr()?;
        let stop_namenode = CancellationToken::new();
        let namenode_task = tokio::spawn(crail_store::namenode::run(
            listener,
            nn,
            stop_namenode.clone().cancelled_owned(),
        ));
        let mut cluster = Self {
            args,
            namenode,
            client: crail_store::ClientConfig {
                namenode: namenode.to_string(),
                local_host: None,
                ..config.client.clone()
            },
            stop_namenode,
            namenode_task,
            nodes: Vec::new(),
            lines: Vec::new(),
        };
        match start_nodes(&cluster.args, config_file, namenode, &mut cluster.nodes).await {
            Ok(lines) => {
                cluster.lines = lines;
                Ok(cluster)
            }
            Err(e) => {
                let _ = cluster.stop().await;
                Err(e)
            }
        }
    }

    /// The namenode's address.
    pub fn namenode(&self) -> SocketAddr {
        self.namenode
    }

    /// The nodes' addresses, 127.0.0.2 and up.
    pub fn hosts(&self) -> Vec<IpAddr> {
        self.nodes.iter().map(|n| n.host).collect()
    }

    /// A client configuration for this cluster (its namenode and secret), connecting from no
    /// node in particular; `with_local_host` makes it a node's.
    pub fn client_config(&self) -> crail_store::ClientConfig {
        self.client.clone()
    }

    /// Completes when a node stops on its own (it died): its address and exit status.
    pub async fn node_died(&mut self) -> (IpAddr, String) {
        let mut exits: futures_util::stream::FuturesUnordered<_> = self
            .nodes
            .iter_mut()
            .map(|n| async move { (n.host, n.child.wait().await) })
            .collect();
        match futures_util::StreamExt::next(&mut exits).await {
            Some((host, status)) => (
                host,
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            ),
            None => std::future::pending().await,
        }
    }

    /// Stops every node and the namenode.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        stop_nodes(&mut self.nodes).await;
        self.stop_namenode.cancel();
        match (&mut self.namenode_task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(anyhow::anyhow!("the namenode's task failed: {e}")),
        }
    }
}

/// Starts every node and waits until each serves; returns each node's announcement lines.
async fn start_nodes(
    args: &Args,
    config_file: Option<&Path>,
    nn_addr: SocketAddr,
    nodes: &mut Vec<Node>,
) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("cannot find the crail binary")?;
    let mut waits = Vec::new();
    for i in 0..args.nodes {
        let host = IpAddr::from([127, 0, 0, i + 2]);
        let mut cmd = Command::new(&exe);
        // The nodes read the file we read, if any, and nothing CRAIL_CONF may name.
        cmd.env_remove("CRAIL_CONF");
        // Its own process group: a Ctrl-C on the terminal reaches only us, and we stop it.
        cmd.process_group(0);
        if let Some(file) = config_file {
            cmd.arg("--config").arg(file);
        }
        cmd.args([
            "node",
            "--stop-with-stdin",
            "--namenode",
            &nn_addr.to_string(),
        ])
        .args([
            "--host",
            &host.to_string(),
            "--dram",
            &args.dram.to_string(),
        ]);
        // Any free port unless one is asked for (two clusters on one machine must not clash);
        // clients find the services in the store (`ShuffleClient::connect_local`).
        let mut shuffle = args.shuffle.clone();
        shuffle.shuffle_port.get_or_insert(0);
        cmd.args(shuffle.to_args());
        let mut broadcast = args.broadcast.clone();
        broadcast.broadcast_port.get_or_insert(0);
        cmd.args(broadcast.to_args());
        if let (Some(flash), Some(dir)) = (args.flash, &args.flash_dir) {
            cmd.args(["--flash", &flash.to_string()])
                .arg("--flash-dir")
                .arg(dir);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a node process")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let stderr = child.stderr.take().context("node stderr")?;
        let last_error = Arc::new(Mutex::new(String::new()));
        let forward = CancellationToken::new();
        tokio::spawn(relay_stderr(
            host,
            stderr,
            last_error.clone(),
            forward.clone(),
        ));
        waits.push(wait_serving(host, stdout));
        nodes.push(Node {
            host,
            stdin: child.stdin.take(),
            child,
            last_error,
            forward,
        });
    }
    // All nodes start at once; each is done at its "serving" line, or fails at its exit.
    let mut lines = Vec::new();
    for (node, wait) in nodes.iter_mut().zip(waits) {
        let outcome = tokio::time::timeout(START_TIMEOUT, async {
            tokio::select! {
                serving = wait => serving,
                status = node.child.wait() => Err(match status {
                    Ok(status) => anyhow::anyhow!("{status}"),
                    Err(e) => e.into(),
                }),
            }
        })
        .await;
        match outcome {
            Ok(Ok(mut announced)) => lines.append(&mut announced),
            Ok(Err(e)) => {
                // Give its stderr relay a moment to record the reason.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let reason = node_error(node).unwrap_or_else(|| e.to_string());
                bail!("node {} failed to start: {reason}", node.host);
            }
            Err(_) => bail!(
                "node {} did not start within {}s",
                node.host,
                START_TIMEOUT.as_secs()
            ),
        }
    }
    Ok(lines)
}

/// The node's own error line, without its `crail: error: ` prefix.
fn node_error(node: &Node) -> Option<String> {
    let last = node.last_error.lock().ok()?.clone();
    let last = last.trim();
    (!last.is_empty()).then(|| last.trim_start_matches("crail: error: ").to_owned())
}

/// Reads a node's stdout up to its "node ... serving" line; returns its lines, then keeps
/// draining it in the background.
async fn wait_serving(
    host: IpAddr,
    stdout: tokio::process::ChildStdout,
) -> anyhow::Result<Vec<String>> {
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    while let Some(line) = reader.next_line().await? {
        let done = line.starts_with(&format!("node {host} serving"));
        lines.push(line);
        if done {
            tokio::spawn(async move { while let Ok(Some(_)) = reader.next_line().await {} });
            return Ok(lines);
        }
    }
    bail!("it closed its output before serving")
}

/// Keeps a node's last stderr line; once `forward` is cancelled (the cluster is up), prints
/// its lines prefixed by its host.
async fn relay_stderr(
    host: IpAddr,
    stderr: tokio::process::ChildStderr,
    last: Arc<Mutex<String>>,
    forward: CancellationToken,
) {
    let mut reader = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        if forward.is_cancelled() {
            tell!("[node {host}] {line}");
        }
        if let Ok(mut last) = last.lock() {
            *last = line;
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
    if let Some(secret) = &config.security.secret {
        text.push_str(&format!("\n[security]\nsecret = {}\n", toml_string(secret)));
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

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn announce(args: &Args, nn: SocketAddr, lines: &[String], config_out: Option<&Path>) {
    say!("namenode listening on {nn}");
    for line in lines {
        say!("{line}");
    }
    let flash = match args.flash {
        Some(f) if f.bytes() > 0 => format!(" + {f} flash"),
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

/// Waits for a signal, or for a node to die: an error (the cluster is no longer whole), or
/// with `keep_going` a report, and the rest serve on (until every node is gone).
async fn serve_until_stopped(
    nodes: &mut [Node],
    signal: impl std::future::Future<Output = ()>,
    keep_going: bool,
) -> anyhow::Result<()> {
    let mut exits: futures_util::stream::FuturesUnordered<_> = nodes
        .iter_mut()
        .map(|n| async move { (n.host, n.child.wait().await) })
        .collect();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => return Ok(()),
            exit = futures_util::StreamExt::next(&mut exits) => {
                let Some((host, status)) = exit else {
                    bail!("every node has stopped; stopping the cluster");
                };
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                if !keep_going {
                    bail!("node {host} stopped unexpectedly ({status}); stopping the cluster");
                }
                tell!("crail: node {host} stopped unexpectedly ({status}); {} left", exits.len());
            }
        }
    }
}

/// Closes every node's stdin (its signal to stop), waits, and kills what is left.
async fn stop_nodes(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        node.stdin = None;
    }
    for node in nodes.iter_mut() {
        if tokio::time::timeout(STOP_TIMEOUT, node.child.wait())
            .await
            .is_err()
        {
            let _ = node.child.kill().await;
        }
    }
}
