//! Where a node's service listens ([`Endpoint`], [`Listener`]) and the connections of either
//! kind ([`Stream`]).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream, tcp, unix};

use crail_store::wire::tls::{Tls, TlsReadHalf, TlsStream, TlsWriteHalf};

use crate::error::Error;

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
    type Err = Error;

    /// `tcp:host:port` or `host:port`; `unix:/path`, `unix:@name`, `/path` or `@name`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |problem: &str| Error::BadEndpoint {
            text: s.to_owned(),
            problem: problem.to_owned(),
        };
        let unix = |p: &str| {
            if p.starts_with('/') || p.starts_with('@') {
                Ok(Self::Unix(p.to_owned()))
            } else {
                Err(bad("a Unix socket is an absolute path or @name"))
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
            .map_err(|_| bad("not host:port, unix:/path or unix:@name"))
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

/// A connection of any kind.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(TlsStream),
    Unix(UnixStream),
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Tls(TlsReadHalf),
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Tls(TlsWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl Stream {
    /// The peer's address, on a TCP connection.
    pub(crate) fn peer_ip(&self) -> Option<std::net::IpAddr> {
        let tcp = match self {
            Self::Tcp(tcp) => tcp,
            Self::Tls(tls) => tls.tcp(),
            Self::Unix(_) => return None,
        };
        tcp.peer_addr().ok().map(|a| a.ip().to_canonical())
    }

    /// Opens a connection to `endpoint` (TCP without Nagle's delay, over TLS when `tls` is
    /// given; a Unix socket never takes TLS).
    pub(crate) async fn connect(endpoint: &Endpoint, tls: Option<&Tls>) -> Result<Self, Connect> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                crail_store::wire::keepalive(&stream);
                match tls {
                    None => Ok(Self::Tcp(stream)),
                    Some(tls) => {
                        let host = addr.ip().to_canonical().to_string();
                        let addr = addr.to_string();
                        Ok(Self::Tls(tls.connect(stream, &host, &addr).await?))
                    }
                }
            }
            Endpoint::Unix(path) => {
                let std = std::os::unix::net::UnixStream::connect_addr(&unix_addr(path)?)?;
                std.set_nonblocking(true)?;
                widen(&std);
                Ok(Self::Unix(UnixStream::from_std(std)?))
            }
        }
    }

    /// The server side of TLS on a TCP connection (other kinds are returned as they are).
    pub(crate) async fn accept_tls(self, tls: &Tls) -> crail_store::Result<Self> {
        match self {
            Self::Tcp(tcp) => {
                let peer = tcp
                    .peer_addr()
                    .map_or_else(|_| "a peer".to_owned(), |a| a.to_string());
                Ok(Self::Tls(tls.accept(tcp, &peer).await?))
            }
            other => Ok(other),
        }
    }

    pub(crate) fn is_unix(&self) -> bool {
        matches!(self, Self::Unix(_))
    }

    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Self::Tls(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
            Self::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }
}

/// Why [`Stream::connect`] failed: the socket, or the TLS handshake.
#[derive(Debug)]
pub(crate) enum Connect {
    Io(std::io::Error),
    Tls(crail_store::Error),
}

impl From<std::io::Error> for Connect {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<crail_store::Error> for Connect {
    fn from(e: crail_store::Error) -> Self {
        Self::Tls(e)
    }
}

macro_rules! either {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Self::Tcp($s) => $e,
            Self::Tls($s) => $e,
            Self::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        either!(self, s => std::pin::Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        either!(self, s => std::pin::Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        either!(self, s => std::pin::Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        either!(self, s => std::pin::Pin::new(s).poll_shutdown(cx))
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

    /// Where it listens.
    pub fn endpoint(&self) -> std::io::Result<Endpoint> {
        match self {
            Self::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?)),
            Self::Unix(l) => {
                let addr = l.local_addr()?;
                if let Some(path) = addr.as_pathname() {
                    return Ok(Endpoint::Unix(path.display().to_string()));
                }
                use std::os::linux::net::SocketAddrExt;
                let addr: std::os::unix::net::SocketAddr = addr.into();
                match addr.as_abstract_name() {
                    Some(name) => Ok(Endpoint::Unix(format!(
                        "@{}",
                        String::from_utf8_lossy(name)
                    ))),
                    None => Err(std::io::Error::other("an unnamed Unix socket")),
                }
            }
        }
    }

    pub(crate) async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Self::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                stream.set_nodelay(true)?;
                crail_store::wire::keepalive(&stream);
                Ok(Stream::Tcp(stream))
            }
            Self::Unix(l) => {
                let stream = l.accept().await?.0;
                widen(&stream);
                Ok(Stream::Unix(stream))
            }
        }
    }
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
}
