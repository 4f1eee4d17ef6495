//! Sockets: the accept loop, one task per connection, the periodic reaper, shutdown.
//!
//! A connection task decodes every whole frame in its receive buffer, answers each into one
//! send buffer, and writes that buffer with a single call: a client that pipelines N requests
//! costs the server one read and one write, not N of each.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};

use crate::config::NamenodeConfig;
use crate::error::{Error, Result};
use crate::namenode::service::{Caller, Core};
use crate::wire::gate::Gate;
use crate::wire::handshake::{self, Secret};
use crate::wire::{frame, io};

const READ_BUFFER: usize = 64 << 10;
/// Replies are flushed once this many bytes are pending, so a client pipelining many large
/// requests (listings) cannot make the server buffer without bound.
const FLUSH_AT: usize = 1 << 20;
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the namenode on `listener` until `shutdown` completes, then closes every connection
/// and returns once they are gone.
pub async fn run(
    listener: TcpListener,
    config: NamenodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    Namenode::open(config)?.serve(listener, shutdown).await
}

/// A namenode with its namespace loaded (rebuilt from its journal, if it keeps one), not yet
/// serving: a server opens it before it listens, so clients of a restarting namenode find the
/// port closed (and try again) rather than open and silent while it replays.
#[derive(Debug)]
pub struct Namenode {
    core: Arc<Core>,
    config: NamenodeConfig,
}

impl Namenode {
    /// Checks `config` and loads the namespace (this blocks for as long as the journal takes
    /// to replay: seconds per million entries).
    pub fn open(config: NamenodeConfig) -> Result<Self> {
        config.validate_server()?;
        Ok(Self {
            core: Arc::new(Core::new(&config)?),
            config,
        })
    }

    /// Serves on `listener` until `shutdown` completes (see [`run`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        serve_core(listener, self.core, &self.config, shutdown).await
    }
}

/// [`run`] over an existing core (tests and benchmarks share one namespace between servers).
pub(crate) async fn serve_core(
    listener: TcpListener,
    core: Arc<Core>,
    config: &NamenodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
    let (stop_tx, _) = broadcast::channel::<()>(1);
    // Every task holds a clone of `done_tx`; when all are dropped, `done_rx` yields None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let settings = Arc::new(Settings {
        secret: config.secret.clone(),
        datanode_secret: config.datanode_secret.clone(),
        gate: Gate::default(),
        handshake_timeout: config.handshake_timeout,
        frame_timeout: config.frame_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        tls: config.tls.clone(),
    });

    tokio::spawn(reaper(
        core.clone(),
        tick_interval(config),
        stop_tx.subscribe(),
        done_tx.clone(),
    ));

    tracing::info!(address = %listener.local_addr()?, "namenode serving");
    tokio::pin!(shutdown);
    loop {
        // No more accepted while as many are in their handshake: the rest wait in the backlog.
        let handshaking = tokio::select! {
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = limit.clone().try_acquire_owned().ok();
        tokio::spawn(connection(
            stream,
            peer,
            core.clone(),
            settings.clone(),
            (permit, handshaking),
            stop_tx.subscribe(),
            done_tx.clone(),
        ));
    }
    tracing::info!("namenode shutting down");
    drop(stop_tx);
    drop(done_tx);
    // A connection blocked writing to a client that never reads would hold us forever.
    if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {SHUTDOWN_GRACE:?}; leaving them to the runtime"
        );
    }
    Ok(())
}

#[derive(Debug)]
struct Settings {
    secret: Option<Secret>,
    datanode_secret: Option<Secret>,
    gate: Gate,
    handshake_timeout: Duration,
    frame_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    tls: Option<Arc<crate::wire::tls::Tls>>,
}

fn tick_interval(config: &NamenodeConfig) -> Duration {
    (config.heartbeat_interval.min(config.lease_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
}

async fn reaper(
    core: Arc<Core>,
    every: Duration,
    mut stop: broadcast::Receiver<()>,
    _done: mpsc::Sender<()>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => core.tick(),
            _ = stop.recv() => return,
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    core: Arc<Core>,
    settings: Arc<Settings>,
    permits: (Option<OwnedSemaphorePermit>, OwnedSemaphorePermit),
    stop: broadcast::Receiver<()>,
    _done: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    crate::wire::keepalive(&stream);
    let ip = peer.ip().to_canonical();
    if let Err(refused) = settings.gate.check_remote(ip) {
        tracing::debug!(%peer, %refused, "connection refused");
        handshake::send_error(&mut { stream }, &refused).await;
        return;
    }
    let Some(tls) = &settings.tls else {
        return greet_and_serve(stream, peer, &core, &settings, permits, stop).await;
    };
    match tls
        .accept_within(stream, &peer.to_string(), settings.handshake_timeout)
        .await
    {
        Ok(stream) => greet_and_serve(stream, peer, &core, &settings, permits, stop).await,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "TLS handshake failed");
            settings.gate.failed_with(ip, &e);
        }
    }
}

/// The store's handshake and the requests of one connection, in the clear or over TLS.
async fn greet_and_serve<S: io::Socket + AsyncWrite + AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    core: &Core,
    settings: &Settings,
    (permit, handshaking): (Option<OwnedSemaphorePermit>, OwnedSemaphorePermit),
    mut stop: broadcast::Receiver<()>,
) {
    if permit.is_none() {
        tracing::warn!(%peer, limit = settings.max_connections, "connection refused: server busy");
        handshake::send_error(
            &mut stream,
            &Error::ServerBusy {
                limit: settings.max_connections as u64,
            },
        )
        .await;
        return;
    }
    let ip = peer.ip().to_canonical();
    let mut rbuf = BytesMut::with_capacity(READ_BUFFER);
    let handshake = handshake::server(
        &mut stream,
        &mut rbuf,
        handshake::Secrets {
            clients: settings.secret.as_ref(),
            datanodes: settings.datanode_secret.as_ref(),
        },
        handshake::Service {
            idle_timeout: settings.idle_timeout,
            ..handshake::Service::NAMENODE
        },
        settings.handshake_timeout,
    );
    let client = tokio::select! {
        result = handshake => match result {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "handshake failed");
                settings.gate.failed_with(ip, &e);
                return;
            }
        },
        _ = stop.recv() => return,
    };
    drop(handshaking);
    let (name, datanode) = (client.name, client.datanode);
    tracing::debug!(%peer, %name, datanode, "client connected");
    match serve(
        &mut stream,
        &mut rbuf,
        peer,
        datanode,
        core,
        settings,
        &mut stop,
    )
    .await
    {
        Ok(()) => tracing::debug!(%peer, %name, "client disconnected"),
        Err(e) if e.is_idle_close() => tracing::debug!(%peer, %name, "idle connection closed"),
        Err(e) => tracing::warn!(%peer, %name, error = %e, "connection closed"),
    }
}

async fn serve<S: io::Socket + AsyncWrite + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    peer: SocketAddr,
    datanode: bool,
    core: &Core,
    settings: &Settings,
    stop: &mut broadcast::Receiver<()>,
) -> Result<()> {
    let (frame_timeout, idle_timeout) = (settings.frame_timeout, settings.idle_timeout);
    let mut out = BytesMut::with_capacity(READ_BUFFER);
    // IPv4 clients of a dual-stack listener show as ::ffff:a.b.c.d; placement compares hosts.
    let caller = Caller {
        host: peer.ip().to_canonical(),
        datanode,
    };
    loop {
        loop {
            match frame::decode(rbuf, core.max_frame()) {
                Ok(Some(frame)) => {
                    core.handle(&frame, caller, &mut out);
                    if out.len() >= FLUSH_AT {
                        // Nothing a reply shows may be lost by a crash: the journal first.
                        core.durable(core.journal_mark()).await?;
                        io::send(stream, &out).await?;
                        out.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // A bad header leaves no way to find the next frame: say why and close.
                    frame::encode_error(&mut out, 0, &e);
                    io::send(stream, &out).await?;
                    return Err(e);
                }
            }
        }
        if !out.is_empty() {
            core.durable(core.journal_mark()).await?;
            io::send(stream, &out).await?;
            out.clear();
            if out.capacity() > 4 * FLUSH_AT {
                // One burst of large replies should not pin megabytes per connection.
                out = BytesMut::with_capacity(READ_BUFFER);
            }
        }
        let pending = rbuf.len();
        tokio::select! {
            read = io::within_frame(pending, frame_timeout, idle_timeout, io::read_some(stream, rbuf)) => {
                match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => {
                        // Stalled inside a request: say why and close.
                        frame::encode_error(&mut out, 0, &e);
                        let _ = io::send(stream, &out).await;
                        return Err(e);
                    }
                }
            }
            _ = stop.recv() => {
                frame::encode_error(&mut out, 0, &Error::ShuttingDown);
                let _ = io::send(stream, &out).await;
                return Ok(());
            }
        }
    }
}

/// A namenode running on the current tokio runtime: its address, and a way to stop it.
#[derive(Debug)]
pub struct RunningNamenode {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningNamenode {
    /// Binds `config.listen` (port 0 picks a free port) and serves in a background task.
    pub async fn start(config: NamenodeConfig) -> Result<Self> {
        config.validate_server()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|cause| Error::Connect {
                addr: config.listen.to_string(),
                cause,
            })?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until every connection is closed.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(Error::Io {
                cause: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

impl Drop for RunningNamenode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
