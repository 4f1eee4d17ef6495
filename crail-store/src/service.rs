//! Plumbing shared by the per-node services built on the store (the shuffle service, the
//! broadcast service): where a service listens ([`Endpoint`], [`Listener`]), how it is found
//! ([`advertise`], [`advertised`], [`advertised_hosts`]: a small file per host in the store),
//! the accept loop ([`run`]) and the framing of their protobuf messages ([`read`],
//! [`write`]: a 4-byte little-endian length, then the message).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{CreateOptions, Error, Result, Store};

/// Where a node's service listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// TCP.
    Tcp(SocketAddr),
    /// A Unix socket: a path, or a name in the abstract namespace written `@name`.
    Unix(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
            Self::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// `tcp:host:port` or `host:port`; `unix:/path`, `unix:@name`, `/path` or `@name`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let unix = |p: &str| {
            if p.starts_with('/') || p.starts_with('@') {
                Ok(Self::Unix(p.to_owned()))
            } else {
                Err(format!("{s:?}: a Unix socket is an absolute path or @name"))
            }
        };
        if let Some(rest) = s.strip_prefix("unix:") {
            return unix(rest);
        }
        if s.starts_with('/') || s.starts_with('@') {
            return unix(s);
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        addr.parse()
            .map(Self::Tcp)
            .map_err(|_| format!("{s:?}: not host:port, unix:/path or unix:@name"))
    }
}

/// A Unix socket address: `@name` in the abstract namespace, else a path.
fn unix_addr(path: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
        }
        None => std::os::unix::net::SocketAddr::from_pathname(path),
    }
}

/// Socket buffers of a Unix connection: values move through them a block (1 MiB) at a time,
/// and the default (about 200 KiB) makes both processes wake several times per block.
const UNIX_BUFFER: usize = 4 << 20;

/// Widens a Unix connection's socket buffers (up to what the kernel allows; best effort).
fn widen(socket: &impl std::os::fd::AsFd) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(socket, UNIX_BUFFER);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(socket, UNIX_BUFFER);
}

/// A connection of either kind.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    /// The Unix socket under the connection, to pass file descriptors on; `None` for TCP.
    fn unix(&self) -> Option<&UnixStream> {
        None
    }
}

impl Io for TcpStream {}

impl Io for UnixStream {
    fn unix(&self) -> Option<&UnixStream> {
        Some(self)
    }
}

pub use crate::local::{recv_into_with_fd, send_with_fd};

/// Opens a connection to `endpoint` (TCP without Nagle's delay).
pub async fn connect(endpoint: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        Endpoint::Unix(path) => {
            let std = std::os::unix::net::UnixStream::connect_addr(&unix_addr(path)?)?;
            std.set_nonblocking(true)?;
            widen(&std);
            Ok(Box::new(UnixStream::from_std(std)?))
        }
    }
}

/// A listener of a service.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket (a path or an abstract name).
    Unix(UnixListener),
}

impl Listener {
    /// Listens on a Unix socket: a path, or `@name` in the abstract namespace (nothing left
    /// behind in the file system, gone with the process).
    pub fn unix(path: &str) -> std::io::Result<Self> {
        let std = std::os::unix::net::UnixListener::bind_addr(&unix_addr(path)?)?;
        std.set_nonblocking(true)?;
        Ok(Self::Unix(UnixListener::from_std(std)?))
    }

    async fn accept(&self) -> std::io::Result<Box<dyn Io>> {
        match self {
            Self::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Box::new(stream))
            }
            Self::Unix(l) => {
                let stream = l.accept().await?.0;
                widen(&stream);
                Ok(Box::new(stream))
            }
        }
    }
}

/// Runs a service until `shutdown` completes: accepts connections on every listener, at most
/// `max_connections` served at once, each by `handle`, and calls `housekeeping` every
/// `every` (never when `None`). At shutdown the connections still open are dropped. `name`
/// goes in log lines.
pub async fn run<H, F, K, KF>(
    name: &'static str,
    listeners: Vec<Listener>,
    max_connections: usize,
    every: Option<Duration>,
    housekeeping: K,
    shutdown: impl Future<Output = ()>,
    handle: H,
) where
    H: Fn(Box<dyn Io>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
    K: Fn() -> KF + Send + 'static,
    KF: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    if let Some(every) = every {
        let stop = stop.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => housekeeping().await,
                }
            }
        });
    }
    for listener in listeners {
        let (stop, permits, handle) = (stop.clone(), Arc::clone(&permits), handle.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let permit = tokio::select! {
                    () = stop.cancelled() => break,
                    p = Arc::clone(&permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok(stream) => {
                        let served = handle(stream);
                        conns.spawn(async move {
                            served.await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!("{name}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                while conns.try_join_next().is_some() {}
            }
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
    }
    shutdown.await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// No message is larger (a shuffle's lent group of 100,000 partitions is about 6 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection between messages.
    Closed,
    /// Anything else: I/O, a length past the limit, a body that does not decode.
    Bad(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("connection closed"),
            Self::Bad(problem) => f.write_str(problem),
        }
    }
}

/// Reads one length-prefixed message; `buf` is reused between calls.
pub async fn read<M: Message + Default, R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::result::Result<M, ReadError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Bad(e.to_string())),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(ReadError::Bad(format!(
            "a message of {len} bytes is past the limit of {MAX_MESSAGE}"
        )));
    }
    buf.resize(len, 0);
    reader
        .read_exact(buf)
        .await
        .map_err(|e| ReadError::Bad(format!("message cut short: {e}")))?;
    M::decode(&buf[..]).map_err(|e| ReadError::Bad(format!("undecodable message: {e}")))
}

/// Writes one length-prefixed message and flushes.
pub async fn write<M: Message, W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    message: &M,
) -> std::io::Result<()> {
    write_with(writer, message, &[]).await
}

/// One length-prefixed message, as [`write`] sends it.
pub fn frame<M: Message>(message: &M) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    // Cannot fail: the buffer has room for the message.
    let _ = message.encode(&mut out);
    out
}

/// Writes one length-prefixed message followed by `data` (raw bytes the message announces)
/// and flushes.
pub async fn write_with<M: Message, W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    message: &M,
    data: &[u8],
) -> std::io::Result<()> {
    writer.write_all(&frame(message)).await?;
    if !data.is_empty() {
        writer.write_all(data).await?;
    }
    writer.flush().await
}

/// Records where the service of node `host` listens, in the store (`<root>/.services/<host>`,
/// one endpoint per line), for its clients to find it. Replaces what an earlier service of
/// the host left.
pub async fn advertise(
    store: &Store,
    root: &str,
    host: &str,
    endpoints: &[Endpoint],
) -> Result<()> {
    let dir = format!("{root}/.services");
    for dir in [root, dir.as_str()] {
        match store.create_dir(dir, &CreateOptions::default()).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let text: String = endpoints.iter().map(|e| format!("{e}\n")).collect();
    let path = format!("{dir}/{host}");
    let pending = format!("{dir}/.{host}.{:x}", nonce());
    store
        .write_file(&pending, text.as_bytes(), &CreateOptions::default())
        .await?;
    match store.delete(&path, false).await {
        Ok(()) | Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    store.rename(&pending, &path).await?;
    Ok(())
}

/// The endpoints the service under `root` of node `host` advertised (see [`advertise`]),
/// Unix socket first; [`Error::NotFound`] when it advertised none.
pub async fn advertised(store: &Store, root: &str, host: &str) -> Result<Vec<Endpoint>> {
    let path = format!("{root}/.services/{host}");
    let text = store
        .lookup(&path)
        .await?
        .into_file()?
        .read_to_end()
        .await?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect())
}

/// The hosts whose service under `root` advertised itself (see [`advertise`]), in address
/// order. Empty when no node runs one.
pub async fn advertised_hosts(store: &Store, root: &str) -> Result<Vec<String>> {
    let entries = match store.list(&format!("{root}/.services")).await {
        Ok(entries) => entries,
        Err(Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut hosts: Vec<(std::net::IpAddr, String)> = entries
        .into_iter()
        .filter_map(|e| Some((e.name.parse().ok()?, e.name)))
        .collect();
    hosts.sort();
    Ok(hosts.into_iter().map(|(_, name)| name).collect())
}

/// The node a store client is on: its `local_host`, else 127.0.0.1.
pub fn host_of(store: &Store) -> String {
    store
        .config()
        .local_host
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
        .to_string()
}

/// A value unlikely to repeat, for hidden names of things being built.
pub fn nonce() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_back() {
        for text in ["tcp:127.0.0.2:9070", "unix:/tmp/s.sock", "unix:@crail/x"] {
            let endpoint: Endpoint = text.parse().unwrap();
            assert_eq!(endpoint.to_string(), text);
        }
        assert_eq!(
            "127.0.0.3:1".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.3:1".parse().unwrap())
        );
        assert!("unix:relative".parse::<Endpoint>().is_err());
        assert!("nonsense".parse::<Endpoint>().is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Note {
            #[prost(string, tag = "1")]
            text: String,
        }
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let note = Note { text: "hi".into() };
        write_with(&mut a, &note, b"raw").await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(read::<Note, _>(&mut b, &mut buf).await.unwrap(), note);
        let mut raw = [0u8; 3];
        b.read_exact(&mut raw).await.unwrap();
        assert_eq!(&raw, b"raw");
        a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        assert!(matches!(
            read::<Note, _>(&mut b, &mut buf).await,
            Err(ReadError::Bad(_))
        ));
        drop(a);
        assert!(matches!(
            read::<Note, _>(&mut b, &mut buf).await,
            Err(ReadError::Closed)
        ));
    }
}
