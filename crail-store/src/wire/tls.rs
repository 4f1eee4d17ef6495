//! TLS (rustls) on TCP connections: every byte after the TCP handshake is encrypted and
//! authenticated, the store's own handshake included.
//!
//! The store's connections read by readiness (see [`super::io`]): a task waits until the
//! socket is readable, then takes what is there without blocking, and the reply path writes
//! from another task. [`TlsStream`] keeps that shape: both halves share one rustls connection
//! behind a short lock; a read first takes decrypted bytes already there, then feeds the
//! ciphertext read so far (one `recv` of up to [`TLS_READ`] bytes at a time, not rustls's
//! 4 KiB), then the socket. Writes encrypt into rustls's queue and send it at once; what the
//! socket does not take leaves with the next write or `flush`, so writers flush at the end of
//! each batch (they do: the store's writers and the node services' all end a batch with
//! `flush`).
//!
//! The handshake itself runs through `tokio-rustls`; only TLS 1.3 is spoken, AES-128-GCM
//! preferred (the fastest with AES instructions). Session tickets are off: connections are
//! long-lived and never resumed.

use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::wire::io::{Socket, Stream};

/// Ciphertext read from the socket at once.
const TLS_READ: usize = 64 << 10;
/// Ciphertext queued for sending before a write waits for the socket.
const SEND_QUEUE: usize = 256 << 10;

/// Where the TLS files are (`[security] tls_*`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM certificates of the authorities that sign the cluster's certificates.
    pub ca: PathBuf,
    /// This process's certificate chain (PEM): servers need one; clients present it when the
    /// servers ask (`client_auth`).
    pub cert: Option<PathBuf>,
    /// The key of `cert` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Servers require a certificate from the CA of every peer (mutual TLS).
    pub client_auth: bool,
    /// The name every server's certificate is checked against, instead of the host dialled.
    pub server_name: Option<String>,
}

/// TLS settings loaded and ready: how this process connects, and (with a certificate) how it
/// serves.
pub struct Tls {
    client: Arc<ClientConfig>,
    server: Option<Arc<ServerConfig>>,
    server_name: Option<ServerName<'static>>,
    client_auth: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves", &self.server.is_some())
            .field("client_auth", &self.client_auth)
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn config_error(key: &str, reason: impl std::fmt::Display) -> Error {
    Error::Config {
        key: format!("security.{key}"),
        reason: reason.to_string(),
    }
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| config_error(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(config_error(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// ring's suites, AES-128-GCM first. (ring is deprecated in rustls for lacking post-quantum key
/// exchange; it builds with no C toolchain beyond `cc`, and a cluster's connections are made
/// once and kept.)
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    })
}

impl Tls {
    /// Loads the files; every problem is a [`Error::Config`] naming the setting.
    pub fn load(files: &TlsFiles) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs("tls_ca", &files.ca)? {
            roots
                .add(cert)
                .map_err(|e| config_error("tls_ca", format!("{}: {e}", files.ca.display())))?;
        }
        let roots = Arc::new(roots);
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("tls_cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| config_error("tls_key", format!("{}: {e}", key.display())))?;
                Some((chain, key))
            }
            (None, None) => None,
            (Some(_), None) => return Err(config_error("tls_key", "tls_cert needs its key")),
            (None, Some(_)) => return Err(config_error("tls_cert", "tls_key needs its cert")),
        };
        let server_name = files
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map_err(|e| config_error("tls_server_name", format!("{name:?}: {e}")))
            })
            .transpose()?;
        let provider = provider();
        let tls13 = [&rustls::version::TLS13];
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&tls13)
            .map_err(|e| config_error("tls_ca", e))?
            .with_root_certificates(roots.clone());
        let client = match &identity {
            Some((chain, key)) => client
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| config_error("tls_key", e))?,
            None => client.with_no_client_auth(),
        };
        let server = match identity {
            Some((chain, key)) => {
                let verifier = if files.client_auth {
                    WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                        .build()
                        .map_err(|e| config_error("tls_ca", e))?
                } else {
                    WebPkiClientVerifier::no_client_auth()
                };
                let mut server = ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&tls13)
                    .map_err(|e| config_error("tls_cert", e))?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .map_err(|e| config_error("tls_cert", e))?;
                server.send_tls13_tickets = 0;
                Some(Arc::new(server))
            }
            None if files.client_auth => {
                return Err(config_error(
                    "tls_client_auth",
                    "needs tls_cert and tls_key (every peer presents one)",
                ));
            }
            None => None,
        };
        Ok(Self {
            client: Arc::new(client),
            server,
            server_name,
            client_auth: files.client_auth,
        })
    }

    /// Whether these settings can serve (a certificate and its key were given).
    pub fn serves(&self) -> bool {
        self.server.is_some()
    }

    /// The server side of a server that takes TLS: refuses at once to start without a
    /// certificate.
    pub fn check_serves(&self) -> Result<()> {
        if self.serves() {
            return Ok(());
        }
        Err(config_error(
            "tls_cert",
            "a server needs tls_cert and tls_key when tls_ca turns TLS on",
        ))
    }

    /// Runs the client side of the TLS handshake on `tcp`, checking the server's certificate
    /// against `host` (or `tls_server_name`). `addr` names the peer in errors.
    pub async fn connect(&self, tcp: TcpStream, host: &str, addr: &str) -> Result<TlsStream> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).map_err(|e| {
                    Error::AuthFailed {
                        reason: format!("TLS with {addr}: no server name in {host:?}: {e}"),
                    }
                })?
            }
        };
        let connector = tokio_rustls::TlsConnector::from(self.client.clone());
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| match tls_error(&e) {
                // Bytes that are no TLS at all: a server in the clear answered.
                Some(rustls::Error::InvalidMessage(_)) => Error::AuthFailed {
                    reason: format!("TLS with {addr}: {e} (does the server take TLS?)"),
                },
                Some(_) => Error::AuthFailed {
                    reason: format!("TLS with {addr}: {e}"),
                },
                // Reset or closed: the peer could not be reached, nothing was refused.
                None => Error::Connect {
                    addr: addr.to_owned(),
                    cause: e,
                },
            })?;
        let (tcp, conn) = stream.into_inner();
        Ok(TlsStream::new(tcp, conn.into()))
    }

    /// Runs the server side of the TLS handshake on `tcp`. A peer that speaks the store's
    /// protocol in the clear is told, in the clear, that this server takes TLS only.
    pub async fn accept(&self, mut tcp: TcpStream, peer: &str) -> Result<TlsStream> {
        let server = self.server.clone().ok_or_else(|| {
            config_error("tls_cert", "this process has no certificate to serve TLS")
        })?;
        if !starts_with_client_hello(&tcp).await? {
            let refused = Error::AuthFailed {
                reason: "this server takes TLS only (set [security] tls_ca on the client)".into(),
            };
            super::handshake::send_error(&mut tcp, &refused).await;
            return Err(Error::AuthFailed {
                reason: format!("{peer} spoke without TLS"),
            });
        }
        let stream = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| match tls_error(&e) {
                Some(_) => Error::AuthFailed {
                    reason: format!("TLS with {peer}: {e}"),
                },
                // Gone mid-handshake: not a failed attempt (the gate does not count it).
                None => Error::ConnectionLost {
                    addr: peer.to_owned(),
                    reason: e.to_string(),
                },
            })?;
        let (tcp, conn) = stream.into_inner();
        Ok(TlsStream::new(tcp, conn.into()))
    }

    /// [`Self::accept`] within `timeout`.
    pub async fn accept_within(
        &self,
        tcp: TcpStream,
        peer: &str,
        timeout: Duration,
    ) -> Result<TlsStream> {
        tokio::time::timeout(timeout, self.accept(tcp, peer))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("TLS handshake of {peer}"),
                after_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            })?
    }
}

/// The host part of `host:port` (an IPv6 address without its brackets).
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_matches(['[', ']'])
}

/// The TLS failure inside an I/O error, if it is one (else the socket failed).
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Whether the peer's first bytes start a TLS handshake record (0x16 0x03): the store's first
/// frame (a Hello of a few hundred bytes at most) does not (they are its length, lowest byte
/// first). Decided on what one look finds, even a single byte: a peer that sends one and
/// stops cannot make this wait spin.
async fn starts_with_client_hello(tcp: &TcpStream) -> Result<bool> {
    let mut head = [0u8; 2];
    let n = tcp.peek(&mut head).await?;
    if n == 0 {
        return Err(Error::ConnectionLost {
            addr: "peer".into(),
            reason: "closed before its first bytes".into(),
        });
    }
    Ok(head[0] == 0x16 && (n < 2 || head[1] == 0x03))
}

/// What both halves of a TLS connection share.
pub struct TlsShared {
    tcp: TcpStream,
    state: Mutex<State>,
}

impl Drop for TlsShared {
    /// Both halves are gone: tell the peer this is a clean end (best effort, never waiting).
    fn drop(&mut self) {
        let st = self.state.get_mut();
        st.conn.send_close_notify();
        let _ = st.conn.write_tls(&mut TcpOut(&self.tcp));
    }
}

impl std::fmt::Debug for TlsShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsShared").field("tcp", &self.tcp).finish()
    }
}

struct State {
    conn: rustls::Connection,
    /// Ciphertext read from the socket, not yet given to rustls.
    inbuf: BytesMut,
}

impl State {
    /// Whether a read would find something without the socket: plaintext, ciphertext not yet
    /// decrypted, the end, or an error to report.
    fn ready(&mut self) -> bool {
        if !self.inbuf.is_empty() {
            return true;
        }
        match self.conn.process_new_packets() {
            Ok(io) => io.plaintext_bytes_to_read() > 0 || io.peer_has_closed(),
            Err(_) => true,
        }
    }

    /// Gives rustls the ciphertext read so far and decrypts it.
    fn feed(&mut self) -> io::Result<()> {
        let mut src = &self.inbuf[..];
        let before = src.len();
        self.conn.read_tls(&mut src)?;
        let used = before - src.len();
        self.inbuf.advance(used);
        self.conn
            .process_new_packets()
            .map(drop)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// How a read reaches the socket.
#[derive(Clone, Copy)]
enum Recv {
    /// Through tokio, which clears the socket's readiness on `WouldBlock`.
    Tokio,
    /// Straight on the socket (busy polling; see `io::BusyPoll`).
    Raw,
}

impl TlsShared {
    /// Reads decrypted bytes into `dst` without waiting: as many as are there, `WouldBlock`
    /// if none, `Ok(0)` at a clean end.
    fn read_plain(&self, dst: &mut [u8], recv: Recv) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        let mut st = match recv {
            Recv::Tokio => self.state.lock(),
            // A busy-polling reader must never make the writer's thread park on the lock
            // (waking it costs tens of microseconds here): it tries again instead.
            Recv::Raw => self
                .state
                .try_lock()
                .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?,
        };
        let mut total = 0;
        // Whatever goes wrong once bytes were read, they are returned first: the error comes
        // again on the next read (a server's last frame before its reset is not lost).
        let done = |total: usize, e: io::Error| if total > 0 { Ok(total) } else { Err(e) };
        loop {
            match st.conn.reader().read(&mut dst[total..]) {
                Ok(n) => {
                    total += n;
                    // 0: the end (close_notify), or `dst` is full.
                    if n == 0 || total == dst.len() {
                        return Ok(total);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: frames are self-delimiting (a cut
                // inside one is its reader's error), so this is an end like any other.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(total),
                Err(e) => return done(total, e),
            }
            if !st.inbuf.is_empty() {
                if let Err(e) = st.feed() {
                    return done(total, e);
                }
                continue;
            }
            // An error rustls kept from ciphertext fed before.
            if let Err(e) = st.conn.process_new_packets() {
                return done(total, io::Error::new(io::ErrorKind::InvalidData, e));
            }
            st.inbuf.reserve(TLS_READ);
            let got = match recv {
                Recv::Tokio => self.tcp.try_read_buf(&mut st.inbuf),
                Recv::Raw => recv_raw(&self.tcp, &mut st.inbuf),
            };
            match got {
                Ok(0) => {
                    // The end of the TCP stream: rustls tells a clean close from a cut one.
                    if let Err(e) = st.conn.read_tls(&mut io::empty()) {
                        return done(total, e);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if st.inbuf.is_empty() && e.kind() == io::ErrorKind::WouldBlock {
                        // Nothing buffered: an idle connection keeps no receive buffer.
                        st.inbuf = BytesMut::new();
                    }
                    return done(total, e);
                }
            }
        }
    }

    /// Sends queued ciphertext until none is left (`Ready`) or the socket is full (`Pending`,
    /// woken when it has room).
    fn poll_send_queued(&self, st: &mut State, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while st.conn.wants_write() {
            match st.conn.write_tls(&mut TcpOut(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut st = self.state.lock();
        ready!(self.poll_send_queued(&mut st, cx))?;
        let n = st.conn.writer().write(buf)?;
        // Sends what the socket takes now; the rest goes with the next write or flush.
        if let Poll::Ready(Err(e)) = self.poll_send_queued(&mut st, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.state.lock();
        self.poll_send_queued(&mut st, cx)
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.state.lock();
        st.conn.send_close_notify();
        ready!(self.poll_send_queued(&mut st, cx))?;
        drop(st);
        // Both halves share the socket: shut down its sending side through the descriptor.
        match rustix::net::shutdown(&self.tcp, rustix::net::Shutdown::Write) {
            Ok(()) | Err(rustix::io::Errno::NOTCONN) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.read_plain(buf.initialize_unfilled(), Recv::Tokio) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A non-blocking `recv` into `buf`, past tokio's readiness flag (busy polling waits for small
/// replies: a small scratch suffices).
fn recv_raw(tcp: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut scratch = [0u8; 16 << 10];
    let (n, _) = rustix::net::recv(tcp, &mut scratch, rustix::net::RecvFlags::DONTWAIT)?;
    buf.extend_from_slice(&scratch[..n]);
    Ok(n)
}

/// The socket as a non-blocking `Write` for rustls.
struct TcpOut<'a>(&'a TcpStream);

impl Write for TcpOut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for TlsShared {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        let ready = self.state.lock().ready();
        async move {
            if ready {
                return Ok(());
            }
            self.tcp.readable().await
        }
    }
    fn try_read(&self, dst: &mut [u8]) -> io::Result<usize> {
        self.read_plain(dst, Recv::Tokio)
    }
    fn try_read_buf<B: BufMut>(&self, dst: &mut B) -> io::Result<usize> {
        let mut scratch = [0u8; 16 << 10];
        let room = dst.remaining_mut().min(scratch.len());
        let n = self.read_plain(&mut scratch[..room], Recv::Tokio)?;
        dst.put_slice(&scratch[..n]);
        Ok(n)
    }
    fn try_io<R>(&self, _interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        // Reads clear the socket's readiness themselves (they go through tokio).
        f()
    }
    fn recv_now(&self, dst: &mut [u8]) -> io::Result<usize> {
        self.read_plain(dst, Recv::Raw)
    }
}

/// A TLS connection over TCP, readable by readiness like the plain sockets.
pub struct TlsStream {
    shared: Arc<TlsShared>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.shared.tcp.peer_addr().ok())
            .finish()
    }
}

impl TlsStream {
    fn new(tcp: TcpStream, mut conn: rustls::Connection) -> Self {
        conn.set_buffer_limit(Some(SEND_QUEUE));
        Self {
            shared: Arc::new(TlsShared {
                tcp,
                state: Mutex::new(State {
                    conn,
                    inbuf: BytesMut::new(),
                }),
            }),
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.shared.tcp
    }

    /// Splits into halves owned by separate tasks.
    pub fn into_split(self) -> (TlsReadHalf, TlsWriteHalf) {
        (TlsReadHalf(self.shared.clone()), TlsWriteHalf(self.shared))
    }
}

/// The reading half of a [`TlsStream`].
pub struct TlsReadHalf(Arc<TlsShared>);

/// The writing half of a [`TlsStream`]; shutting it down sends TLS's close and the TCP FIN.
pub struct TlsWriteHalf(Arc<TlsShared>);

impl std::fmt::Debug for TlsReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsReadHalf")
    }
}

impl std::fmt::Debug for TlsWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsWriteHalf")
    }
}

impl AsRef<TlsShared> for TlsReadHalf {
    fn as_ref(&self) -> &TlsShared {
        &self.0
    }
}

impl Socket for TlsStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.shared.readable()
    }
    fn try_read(&self, dst: &mut [u8]) -> io::Result<usize> {
        self.shared.try_read(dst)
    }
    fn try_read_buf<B: BufMut>(&self, dst: &mut B) -> io::Result<usize> {
        self.shared.try_read_buf(dst)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.shared.try_io(interest, f)
    }
    fn recv_now(&self, dst: &mut [u8]) -> io::Result<usize> {
        self.shared.recv_now(dst)
    }
}

impl Stream for TlsStream {
    type Socket = TlsShared;
    type ReadHalf = TlsReadHalf;
    type WriteHalf = TlsWriteHalf;
    fn split(self) -> (TlsReadHalf, TlsWriteHalf) {
        self.into_split()
    }
}

macro_rules! async_read {
    ($ty:ty, $shared:ident => $get:expr) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let $shared = &*self;
                $get.poll_read(cx, buf)
            }
        }
    };
}

macro_rules! async_write {
    ($ty:ty, $shared:ident => $get:expr) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let $shared = &*self;
                $get.poll_write(cx, buf)
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $shared = &*self;
                $get.poll_flush(cx)
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $shared = &*self;
                $get.poll_shutdown(cx)
            }
        }
    };
}

async_read!(TlsStream, s => s.shared);
async_read!(TlsReadHalf, s => s.0);
async_write!(TlsStream, s => s.shared);
async_write!(TlsWriteHalf, s => s.0);
