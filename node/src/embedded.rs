//! The embedded cluster: a namenode in the calling process and each node a child process on
//! its own loopback address (127.0.0.2, .3, ...), so placement sees distinct hosts and a node
//! can die alone. A child is the calling binary run again as `<binary> --crail-embedded-node
//! <host>`; it reads what it is to be (the store configuration, secret included, and its
//! [`NodeConfig`]) as one JSON line on its standard input and stops when that input closes,
//! so the nodes stop with the cluster however it ends. A binary that embeds a cluster calls
//! [`child_main`] first thing in `main`.

use std::net::{IpAddr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crail_store::{ClientConfig, Config};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, MAX_NODES, NodeConfig};
use crate::error::{Error, Result};
use crate::memory::resident_memory;
use crate::node::Node;

/// The argument that makes a binary an embedded cluster's node.
const CHILD_FLAG: &str = "--crail-embedded-node";
/// How long a node may take to reserve its memory and register.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after its stdin closes, before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a child node is told on its standard input.
#[derive(Serialize, Deserialize)]
struct ChildSpec {
    config: Config,
    node: NodeConfig,
}

/// A node child and what we know of it.
#[derive(Debug)]
struct ChildNode {
    host: IpAddr,
    child: Child,
    /// Closing it tells the node to stop.
    stdin: Option<ChildStdin>,
    /// Its last line on stderr, for a one-line error if it fails.
    last_error: Arc<Mutex<String>>,
    /// Forward its stderr from now on.
    forward: CancellationToken,
    /// It has exited (reported by [`Embedded::node_died`]).
    exited: bool,
}

/// A whole cluster run by this process. The nodes stop when [`Embedded::stop`] is called or
/// this process ends, however it ends.
#[derive(Debug)]
pub struct Embedded {
    namenode: SocketAddr,
    client: ClientConfig,
    stop_namenode: CancellationToken,
    namenode_task: tokio::task::JoinHandle<crail_store::Result<()>>,
    nodes: Vec<ChildNode>,
    lines: Vec<String>,
}

impl Embedded {
    /// Starts `cluster` over `config` (its `[namenode]`, `[datanode]`, `[client]` and
    /// `[security]` sections count); returns once every node serves.
    pub async fn start(cluster: &ClusterConfig, config: &Config) -> Result<Self> {
        if cluster.nodes == 0 || cluster.nodes > MAX_NODES {
            return Err(Error::Config(format!(
                "nodes must be between 1 and {MAX_NODES}"
            )));
        }
        if cluster.dram.bytes() == 0 && cluster.flash.bytes() == 0 {
            return Err(Error::Config(
                "the nodes need some storage: dram or flash above 0".into(),
            ));
        }
        if let Some(dir) = cluster.flash_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(Error::Config(format!(
                "flash directory {}: not a directory",
                dir.display()
            )));
        }
        // With a secret, the nodes get a datanode secret of their own (clients never see it):
        // a client cannot register a datanode or forge block grants.
        let mut config = config.clone();
        if config.security.secret.is_some() && config.security.datanode_secret.is_none() {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes)
                .map_err(|e| Error::Config(format!("no randomness for a datanode secret: {e}")))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            config.security.datanode_secret = Some(hex);
            config.apply_security()?;
        }
        let config = &config;
        let mut nn = config.namenode.clone();
        nn.listen = cluster.listen;
        if let Some(block_size) = cluster.block_size {
            nn.block_size = block_size;
        }
        let listen = nn.listen;
        let opened = crail_store::namenode::Namenode::open(nn)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|cause| Error::listen("namenode", listen, cause))?;
        let namenode = listener
            .local_addr()
            .map_err(|cause| Error::listen("namenode", listen, cause))?;
        let stop_namenode = CancellationToken::new();
        let namenode_task =
            tokio::spawn(opened.serve(listener, stop_namenode.clone().cancelled_owned()));
        let client = ClientConfig {
            namenode: namenode.to_string(),
            local_host: None,
            ..config.client.clone()
        };
        let mut embedded = Self {
            namenode,
            client: client.clone(),
            stop_namenode,
            namenode_task,
            nodes: Vec::new(),
            lines: Vec::new(),
        };
        let config = Config {
            client,
            ..config.clone()
        };
        match embedded.start_nodes(cluster, &config).await {
            Ok(()) => Ok(embedded),
            Err(e) => {
                let _ = embedded.stop().await;
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
    pub fn client_config(&self) -> ClientConfig {
        self.client.clone()
    }

    /// What the nodes announced as they started, node by node.
    pub fn announcements(&self) -> &[String] {
        &self.lines
    }

    /// From now on, print the nodes' log lines on stderr, each prefixed by its node.
    pub fn forward_logs(&self) {
        for node in &self.nodes {
            node.forward.cancel();
        }
    }

    /// Completes when a node still running stops on its own (it died): its address and exit
    /// status. Never completes once every node is gone.
    pub async fn node_died(&mut self) -> (IpAddr, String) {
        let mut exits: futures_util::stream::FuturesUnordered<_> = self
            .nodes
            .iter_mut()
            .filter(|n| !n.exited)
            .map(|n| async move {
                let status = n.child.wait().await;
                (n, status)
            })
            .collect();
        match futures_util::StreamExt::next(&mut exits).await {
            Some((node, status)) => {
                node.exited = true;
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                (node.host, status)
            }
            None => std::future::pending().await,
        }
    }

    /// The peak resident memory so far of the namenode (this process) and of each running
    /// node.
    pub fn peak_memory(&self) -> PeakMemory {
        let peak = |pid: &str| resident_memory(pid).map(|(_, peak)| peak);
        let mut out = vec![("namenode".to_owned(), peak("self"))];
        for node in &self.nodes {
            let peak = node
                .child
                .id()
                .filter(|_| !node.exited)
                .and_then(|pid| peak(&pid.to_string()));
            out.push((node.host.to_string(), peak));
        }
        PeakMemory(out)
    }

    /// How many nodes still run (as far as [`Embedded::node_died`] has reported).
    pub fn running(&self) -> usize {
        self.nodes.iter().filter(|n| !n.exited).count()
    }

    /// Stops every node and the namenode.
    pub async fn stop(mut self) -> Result<()> {
        for node in &mut self.nodes {
            node.stdin = None;
        }
        for node in &mut self.nodes {
            if tokio::time::timeout(STOP_TIMEOUT, node.child.wait())
                .await
                .is_err()
            {
                let _ = node.child.kill().await;
            }
        }
        self.stop_namenode.cancel();
        match (&mut self.namenode_task).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(Error::task("the namenode", e)),
        }
    }

    /// Starts every node and waits until each serves, keeping their announcements.
    async fn start_nodes(&mut self, cluster: &ClusterConfig, config: &Config) -> Result<()> {
        let exe = std::env::current_exe().map_err(Error::Spawn)?;
        let mut waits = Vec::new();
        for i in 0..cluster.nodes {
            let node = cluster.node(i);
            let host = node.host;
            let mut cmd = Command::new(&exe);
            cmd.arg(CHILD_FLAG).arg(host.to_string());
            // Its own process group: a Ctrl-C on the terminal reaches only us, and we stop it.
            cmd.process_group(0);
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(Error::Spawn)?;
            let mut stdin = child.stdin.take().ok_or_else(|| no_pipe("stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| no_pipe("stdout"))?;
            let stderr = child.stderr.take().ok_or_else(|| no_pipe("stderr"))?;
            let spec = ChildSpec {
                config: config.clone(),
                node,
            };
            let mut line = serde_json::to_vec(&spec)
                .map_err(|e| Error::Child(format!("cannot encode its configuration: {e}")))?;
            line.push(b'\n');
            // A child that died at once is reported below, with its reason.
            let _ = stdin.write_all(&line).await;
            let last_error = Arc::new(Mutex::new(String::new()));
            let forward = CancellationToken::new();
            tokio::spawn(relay_stderr(
                host,
                stderr,
                last_error.clone(),
                forward.clone(),
            ));
            waits.push(wait_serving(host, stdout));
            self.nodes.push(ChildNode {
                host,
                child,
                stdin: Some(stdin),
                last_error,
                forward,
                exited: false,
            });
        }
        // All nodes start at once; each is done at its "serving" line, or fails at its exit.
        for (node, wait) in self.nodes.iter_mut().zip(waits) {
            let outcome = tokio::time::timeout(START_TIMEOUT, async {
                tokio::select! {
                    serving = wait => serving,
                    status = node.child.wait() => Err(match status {
                        Ok(status) => status.to_string(),
                        Err(e) => e.to_string(),
                    }),
                }
            })
            .await;
            match outcome {
                Ok(Ok(mut announced)) => self.lines.append(&mut announced),
                Ok(Err(status)) => {
                    // Give its stderr relay a moment to record the reason.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(Error::NodeFailed {
                        host: node.host,
                        reason: own_error(node).unwrap_or(status),
                    });
                }
                Err(_) => {
                    return Err(Error::NodeSlow {
                        host: node.host,
                        secs: START_TIMEOUT.as_secs(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn no_pipe(which: &str) -> Error {
    Error::Spawn(std::io::Error::other(format!("no {which} pipe")))
}

/// The node's own error line, without its `crail: error: ` prefix.
/// Peak resident memory by process: `namenode` (the process that embeds the cluster), then
/// each node by its address; `None` where the kernel does not say (not Linux, or the node is
/// gone). Shown as one line: `namenode 41.0MiB, 127.0.0.2 1.1GiB, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeakMemory(pub Vec<(String, Option<u64>)>);

impl std::fmt::Display for PeakMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, peak)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            match peak {
                Some(bytes) => write!(f, "{sep}{name} {}", crail_store::ByteSize(*bytes))?,
                None => write!(f, "{sep}{name} -")?,
            }
        }
        Ok(())
    }
}

fn own_error(node: &ChildNode) -> Option<String> {
    let last = node.last_error.lock().ok()?.clone();
    let last = last.trim();
    (!last.is_empty()).then(|| last.trim_start_matches("crail: error: ").to_owned())
}

/// Reads a node's stdout up to its "node ... serving" line; returns its lines, then keeps
/// draining it in the background.
async fn wait_serving(
    host: IpAddr,
    stdout: tokio::process::ChildStdout,
) -> std::result::Result<Vec<String>, String> {
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let serving = format!("node {host} serving");
    while let Ok(Some(line)) = reader.next_line().await {
        let done = line.starts_with(&serving);
        lines.push(line);
        if done {
            tokio::spawn(async move { while let Ok(Some(_)) = reader.next_line().await {} });
            return Ok(lines);
        }
    }
    Err("it closed its output before serving".into())
}

/// Keeps a node's last stderr line; once `forward` is cancelled, prints its lines prefixed by
/// its host.
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

/// If this process is an embedded cluster's node (`<binary> --crail-embedded-node <host>`),
/// runs it and returns its exit code; otherwise `None`, at once. A binary that starts an
/// [`Embedded`] cluster calls it first thing in `main`.
pub fn child_main() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|a| a != CHILD_FLAG) {
        return None;
    }
    crate::init_logging("warn");
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Child(format!("cannot start the runtime: {e}")))
        .and_then(|runtime| {
            let result = runtime.block_on(run_child());
            // Do not wait for tasks still blocked on I/O (a dead peer).
            runtime.shutdown_background();
            result
        });
    Some(match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tell!("crail: error: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Reads its spec, starts the node, announces it and serves until stdin closes or a signal.
async fn run_child() -> Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .await
        .map_err(|e| Error::Child(format!("cannot read its configuration: {e}")))?;
    let mut spec: ChildSpec = serde_json::from_str(&line)
        .map_err(|e| Error::Child(format!("bad configuration on stdin: {e}")))?;
    // The secret travels as `[security] secret`; the sections take it from there.
    spec.config.apply_security()?;
    let signal = crate::shutdown_signal()?;
    let node = Node::start(&spec.node, &spec.config).await?;
    for line in node.announcements() {
        say!("{line}");
    }
    let stdin_closed = async move {
        let mut sink = [0u8; 64];
        while matches!(
            tokio::io::AsyncReadExt::read(&mut stdin, &mut sink).await,
            Ok(n) if n > 0
        ) {}
    };
    node.serve(async {
        tokio::select! {
            () = signal => {}
            () = stdin_closed => {}
        }
    })
    .await
}
