//! The handshake that opens every connection.
//!
//! ```text
//! client                                   server
//!   Hello { version, client_nonce }   ->
//!                                     <-   Challenge { version, server_nonce, secret_required }
//!   Auth { mac }                      ->                     (or Error and close: version)
//!                                     <-   Welcome { server_mac }  (or Error and close: auth)
//! ```
//!
//! With a shared secret both sides prove they know it: the client MACs the server's nonce, the
//! server MACs the client's, each with a different label, so neither MAC can be replayed as the
//! other. A client configured with a secret refuses a server that does not ask for one (no
//! silent downgrade).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::proto as pb;
use crate::wire::PROTOCOL_VERSION;
use crate::wire::frame::{self, FLAG_RESPONSE, Frame};
use crate::wire::kind::Kind;

/// Handshake frames are tiny; anything larger is not a handshake.
const MAX_HANDSHAKE_FRAME: usize = 4096;
const NONCE_LEN: usize = 32;

/// A shared secret. Its `Debug` form never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// The fewest bytes a server accepts in a secret.
    pub const MIN_LEN: usize = 16;

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a secret has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A secret from its bytes (at least one).
    pub fn new(bytes: impl AsRef<[u8]>) -> Option<Self> {
        let bytes = bytes.as_ref();
        (!bytes.is_empty()).then(|| Self(Arc::from(bytes)))
    }

    fn mac(&self, label: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac
    }

    /// A key for another purpose, derived from this secret: HMAC-SHA256 of `label` and `data`.
    #[cfg(feature = "server")]
    pub(crate) fn derive(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        self.mac(label, data, &[]).finalize().into_bytes().into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn nonce() -> Result<Bytes> {
    let mut bytes = [0u8; NONCE_LEN];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(Bytes::copy_from_slice(&bytes))
}

/// Reads the next frame of the handshake into `buf`.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<Frame> {
    loop {
        if let Some(frame) = frame::decode(buf, MAX_HANDSHAKE_FRAME)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::ConnectionLost {
                addr: "peer".into(),
                reason: "closed during the handshake".into(),
            });
        }
    }
}

/// Reads a frame of the expected kind; an error frame becomes its error.
async fn expect<S: AsyncRead + Unpin, M: prost::Message + Default>(
    stream: &mut S,
    buf: &mut BytesMut,
    kind: Kind,
) -> Result<M> {
    let frame = read_frame(stream, buf).await?;
    if frame.is_error() {
        return Err(frame.into_error());
    }
    if frame.kind != kind as u16 {
        return Err(Error::UnexpectedMessage {
            expected: kind.name().into(),
            kind: u32::from(frame.kind),
        });
    }
    frame.decode_body(kind.name())
}

async fn send<S: AsyncWrite + Unpin, M: prost::Message>(
    stream: &mut S,
    kind: Kind,
    msg: &M,
) -> Result<()> {
    let mut out = BytesMut::new();
    frame::encode(&mut out, kind, FLAG_RESPONSE, 0, msg, MAX_HANDSHAKE_FRAME)?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

/// Sends an error frame and flushes it; the caller then closes the connection.
pub async fn send_error<S: AsyncWrite + Unpin>(stream: &mut S, error: &Error) {
    let mut out = BytesMut::new();
    frame::encode_error(&mut out, 0, error);
    // The peer may already be gone; the error is logged by the caller either way.
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
}

/// What a server announces of itself in its Welcome.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// Its name: "namenode", "datanode", "shuffle", "broadcast".
    pub name: &'static str,
    /// Datanodes: the size of request a buffer is best written in (0: whole buffers).
    pub write_piece: u32,
    /// How long a connection may idle between requests before the server closes it (zero:
    /// for ever).
    pub idle_timeout: Duration,
}

impl Service {
    #[cfg(feature = "server")]
    pub(crate) const NAMENODE: Service = Service {
        name: "namenode",
        write_piece: 0,
        idle_timeout: Duration::ZERO,
    };
}

/// Client side. Returns the server's Welcome (its service name and hints). Bytes the server sent after its
/// Welcome stay in `buf` for the connection's reader.
pub(crate) async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    secret: Option<&Secret>,
    client_name: &str,
    timeout: Duration,
) -> Result<pb::Welcome> {
    let work = async {
        let client_nonce = nonce()?;
        let hello = pb::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_nonce: client_nonce.clone(),
            client_name: client_name.to_owned(),
        };
        send(stream, Kind::Hello, &hello).await?;
        let challenge: pb::Challenge = expect(stream, buf, Kind::Challenge).await?;
        if challenge.protocol_version != PROTOCOL_VERSION {
            return Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: challenge.protocol_version,
            });
        }
        let mac = match (secret, challenge.secret_required) {
            (Some(secret), true) => Bytes::copy_from_slice(
                &secret
                    .mac(b"crail-client", &challenge.server_nonce, &client_nonce)
                    .finalize()
                    .into_bytes(),
            ),
            (None, false) => Bytes::new(),
            (None, true) => {
                return Err(Error::AuthFailed {
                    reason: "the server requires a shared secret and none is configured".into(),
                });
            }
            (Some(_), false) => {
                return Err(Error::AuthFailed {
                    reason: "a secret is configured but the server does not require one".into(),
                });
            }
        };
        send(stream, Kind::Auth, &pb::Auth { mac }).await?;
        let welcome: pb::Welcome = expect(stream, buf, Kind::Welcome).await?;
        if let Some(secret) = secret {
            secret
                .mac(b"crail-server", &client_nonce, &challenge.server_nonce)
                .verify_slice(&welcome.server_mac)
                .map_err(|_| Error::AuthFailed {
                    reason: "the server does not know the shared secret".into(),
                })?;
        }
        Ok(welcome)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::Timeout {
            what: "handshake".into(),
            after_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        })?
}

/// Client side for a peer that is not the store: returns the service name the server announced
/// (a node service checks it is talking to the service it meant). Bytes the server sent after
/// its Welcome stay in `buf`.
pub async fn client_of<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    secret: Option<&Secret>,
    client_name: &str,
    timeout: Duration,
) -> Result<String> {
    Ok(client_welcome(stream, buf, secret, client_name, timeout)
        .await?
        .service)
}

/// What a server's Welcome told a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcomed {
    /// The service that answered ("namenode", "datanode", "shuffle", ...).
    pub service: String,
    /// How long it lets a connection idle between requests (zero: for ever).
    pub idle_timeout: Duration,
}

/// [`client_of`], returning the rest of the Welcome too.
pub async fn client_welcome<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    secret: Option<&Secret>,
    client_name: &str,
    timeout: Duration,
) -> Result<Welcomed> {
    let welcome = client(stream, buf, secret, client_name, timeout).await?;
    Ok(Welcomed {
        service: welcome.service,
        idle_timeout: Duration::from_millis(welcome.idle_timeout_ms),
    })
}

/// Who a peer proved to be in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The name it gave (for logs).
    pub name: String,
    /// Whether it may act as a datanode (register, heartbeat, deregister): it proved the
    /// datanodes' secret, or the server has none.
    pub datanode: bool,
}

/// The secrets a server asks for: the clients' (every peer proves it, or the datanodes') and
/// the datanodes' (a peer that proves it may act as a datanode; needs the clients' too).
#[derive(Debug, Clone, Copy, Default)]
pub struct Secrets<'a> {
    /// Every connection proves this secret or the datanodes'; `None`: open.
    pub clients: Option<&'a Secret>,
    /// Proves a datanode; `None`: any peer that passed may act as one.
    pub datanodes: Option<&'a Secret>,
}

impl<'a> Secrets<'a> {
    /// Only the clients' secret (services that have no datanode role).
    pub fn clients(secret: Option<&'a Secret>) -> Self {
        Self {
            clients: secret,
            datanodes: None,
        }
    }
}

/// Server side. Returns who the peer proved to be. On failure the client has been sent the
/// error.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    secrets: Secrets<'_>,
    service: Service,
    timeout: Duration,
) -> Result<Peer> {
    let work = async {
        let hello: pb::Hello = expect(stream, buf, Kind::Hello).await?;
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.protocol_version,
            });
        }
        let server_nonce = nonce()?;
        let challenge = pb::Challenge {
            protocol_version: PROTOCOL_VERSION,
            server_nonce: server_nonce.clone(),
            secret_required: secrets.clients.is_some(),
        };
        send(stream, Kind::Challenge, &challenge).await?;
        let auth: pb::Auth = expect(stream, buf, Kind::Auth).await?;
        let proves = |secret: &Secret| {
            secret
                .mac(b"crail-client", &server_nonce, &hello.client_nonce)
                .verify_slice(&auth.mac)
                .is_ok()
        };
        let (proved, datanode) = match (secrets.clients, secrets.datanodes) {
            (None, _) => (None, true),
            (Some(clients), datanodes) if proves(clients) => (Some(clients), datanodes.is_none()),
            (Some(_), Some(datanodes)) if proves(datanodes) => (Some(datanodes), true),
            (Some(_), _) => {
                return Err(Error::AuthFailed {
                    reason: "wrong shared secret".into(),
                });
            }
        };
        let server_mac = proved.map_or_else(Bytes::new, |secret| {
            Bytes::copy_from_slice(
                &secret
                    .mac(b"crail-server", &hello.client_nonce, &server_nonce)
                    .finalize()
                    .into_bytes(),
            )
        });
        let welcome = pb::Welcome {
            server_mac,
            service: service.name.to_owned(),
            write_piece: service.write_piece,
            idle_timeout_ms: service
                .idle_timeout
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
        };
        send(stream, Kind::Welcome, &welcome).await?;
        Ok(Peer {
            name: hello.client_name,
            datanode,
        })
    };
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            what: "handshake".into(),
            after_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        }),
    };
    if let Err(error) = &result {
        send_error(stream, error).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        client_secret: Option<&str>,
        server_secret: Option<&str>,
    ) -> (Result<pb::Welcome>, Result<String>) {
        let (c, s) = run_with(client_secret, server_secret, None).await;
        (c, s.map(|peer| peer.name))
    }

    async fn run_with(
        client_secret: Option<&str>,
        server_secret: Option<&str>,
        datanode_secret: Option<&str>,
    ) -> (Result<pb::Welcome>, Result<Peer>) {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let cs = client_secret.and_then(Secret::new);
        let ss = server_secret.and_then(Secret::new);
        let ds = datanode_secret.and_then(Secret::new);
        let t = Duration::from_secs(5);
        let client = async {
            let mut buf = BytesMut::new();
            let r = super::client(&mut a, &mut buf, cs.as_ref(), "test", t).await;
            drop(a);
            r
        };
        let server = async {
            let mut buf = BytesMut::new();
            let secrets = Secrets {
                clients: ss.as_ref(),
                datanodes: ds.as_ref(),
            };
            super::server(&mut b, &mut buf, secrets, Service::NAMENODE, t).await
        };
        tokio::join!(client, server)
    }

    #[tokio::test]
    async fn the_datanode_secret_proves_a_datanode_and_the_clients_one_does_not() {
        let (c, s) = run_with(Some("client-secret"), Some("client-secret"), Some("dn")).await;
        c.unwrap();
        assert!(!s.unwrap().datanode, "a client is no datanode");
        let (c, s) = run_with(Some("dn"), Some("client-secret"), Some("dn")).await;
        c.unwrap();
        assert!(s.unwrap().datanode);
        let (c, s) = run_with(Some("client-secret"), Some("client-secret"), None).await;
        c.unwrap();
        assert!(
            s.unwrap().datanode,
            "without a datanode secret anyone may be one"
        );
        let (c, s) = run_with(Some("guess"), Some("client-secret"), Some("dn")).await;
        assert!(matches!(s, Err(Error::AuthFailed { .. })));
        assert!(matches!(c, Err(Error::AuthFailed { .. })));
    }

    #[tokio::test]
    async fn open_handshake() {
        let (c, s) = run(None, None).await;
        assert_eq!(c.unwrap().service, "namenode");
        assert_eq!(s.unwrap(), "test");
    }

    #[tokio::test]
    async fn matching_secrets() {
        let (c, s) = run(Some("s3cret"), Some("s3cret")).await;
        assert_eq!(c.unwrap().service, "namenode");
        assert_eq!(s.unwrap(), "test");
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_on_both_sides() {
        let (c, s) = run(Some("guess"), Some("s3cret")).await;
        assert!(matches!(s, Err(Error::AuthFailed { .. })), "{s:?}");
        let c = c.unwrap_err();
        assert!(
            matches!(&c, Error::AuthFailed { reason } if reason == "wrong shared secret"),
            "{c}"
        );
    }

    #[tokio::test]
    async fn missing_secret_is_refused() {
        let (c, _) = run(None, Some("s3cret")).await;
        assert!(matches!(c, Err(Error::AuthFailed { .. })));
    }

    #[tokio::test]
    async fn secret_without_server_secret_is_refused() {
        let (c, _) = run(Some("s3cret"), None).await;
        assert!(matches!(c, Err(Error::AuthFailed { .. })));
    }

    #[tokio::test]
    async fn version_mismatch_is_reported_to_the_client() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            super::server(
                &mut b,
                &mut buf,
                Secrets::default(),
                Service::NAMENODE,
                Duration::from_secs(5),
            )
            .await
        });
        let hello = pb::Hello {
            protocol_version: 99,
            ..Default::default()
        };
        send(&mut a, Kind::Hello, &hello).await.unwrap();
        let mut buf = BytesMut::new();
        let err = expect::<_, pb::Challenge>(&mut a, &mut buf, Kind::Challenge)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::VersionMismatch {
                    ours: 99,
                    theirs: PROTOCOL_VERSION
                }
            ),
            "{err}"
        );
        assert!(matches!(
            server.await.unwrap(),
            Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            })
        ));
    }
}
