//! The data-plane server: accept loop and connections, generic over the tier.
//!
//! A connection has two halves. The reader takes requests in order: a write's payload goes
//! from the socket straight into the tier's write target (the DRAM region itself, or the flash
//! tier's aligned staging buffer); a read runs inline (DRAM: a lock and a checksum pass) or as
//! its own task (flash: it waits for the device). The writer sends replies as they complete,
//! a read's bytes straight from the tier. Replies carry request ids, so order does not matter
//! and several requests are in flight per connection. The reply queue is bounded: a client that
//! stops reading stops being read.
//!
//! The same listener logic serves the same-host fast path (see [`crate::local`]): a
//! connection on the Unix socket attaches staging memory right after the handshake, and its
//! requests name staging slots instead of carrying payloads.
//!
//! Bad requests fail alone: a range outside the storage, a wrong checksum, an unknown message
//! kind each get a typed error reply, and the connection goes on. Only a request whose payload
//! cannot be skipped (undecodable, or longer than a block) closes the connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};

use super::tier::Tier;
use crate::error::{Error, Result};
use crate::local::Staging;
use crate::proto as pb;
use crate::wire::frame::{self, FLAG_RESPONSE, Frame};
use crate::wire::handshake::{self, Secret};
use crate::wire::io;
use crate::wire::kind::Kind;

use super::conn_io::{Attach, MAX_REQUEST_BODY, Reply, no_staging, slot_error, write_replies};

mod write;

pub(super) const READ_BUFFER: usize = 64 << 10;
/// Replies queued per connection before its reader waits.
pub(super) const REPLY_QUEUE: usize = 64;
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every connection needs to know.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) secret: Option<Secret>,
    pub(crate) handshake_timeout: Duration,
    /// How long a write's payload may take to arrive (its block is locked meanwhile).
    pub(crate) payload_timeout: Duration,
    /// How long a connection may idle between requests, none of its replies pending (zero:
    /// for ever).
    pub(crate) idle_timeout: Duration,
    pub(crate) block_size: u64,
    pub(crate) max_connections: usize,
    /// TCP connections in their handshake at once.
    pub(crate) max_handshakes: usize,
    /// This datanode's id and grant key now (the heartbeat loop changes them when
    /// registering again).
    pub(crate) identity: Arc<parking_lot::RwLock<super::Identity>>,
    /// Whether requests need valid grants: false only in the fuzz harness.
    pub(crate) check_grants: bool,
    /// Who may start a handshake.
    pub(crate) gate: crate::wire::gate::Gate,
    /// TLS on the TCP port, when the cluster has it.
    pub(crate) tls: Option<Arc<crate::wire::tls::Tls>>,
}

/// A connection just accepted.
pub(super) enum Accepted {
    Tcp(tokio::net::TcpStream),
    Local(UnixStream),
}

/// Serves `tier` on `listener` (and on the fast-path socket `local`, if any) until `shutdown`.
pub(crate) async fn serve<T: Tier>(
    listener: TcpListener,
    local: Option<UnixListener>,
    tier: Arc<T>,
    settings: Arc<Settings>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // TCP peers and same-host peers have limits of their own; TCP peers still in their
    // handshake one more (Unix peers passed the gate's credential check already).
    let (limit_tcp, limit_local) = (
        Arc::new(Semaphore::new(settings.max_connections)),
        Arc::new(Semaphore::new(settings.max_connections)),
    );
    let handshakes = Arc::new(Semaphore::new(settings.max_handshakes.max(1)));
    let (stop_tx, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted.map(|(s, peer)| (Accepted::Tcp(s), peer.to_string())),
            accepted = accept_local(local.as_ref()) => accepted.map(|s| (Accepted::Local(s), "a local client".to_owned())),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = match &stream {
            Accepted::Tcp(tcp) => tcp.peer_addr().ok().map(|a| a.ip().to_canonical()),
            Accepted::Local(_) => None,
        };
        let admitted = match (&stream, ip) {
            (Accepted::Local(unix), _) => settings.gate.check_local(unix),
            (Accepted::Tcp(_), Some(ip)) => settings.gate.check_remote(ip),
            (Accepted::Tcp(_), None) => Ok(()),
        };
        if let Err(refused) = admitted {
            tracing::debug!(%peer, %refused, "connection refused");
            tokio::spawn(async move {
                match stream {
                    Accepted::Tcp(mut s) => handshake::send_error(&mut s, &refused).await,
                    Accepted::Local(mut s) => handshake::send_error(&mut s, &refused).await,
                }
            });
            continue;
        }
        let tcp = matches!(stream, Accepted::Tcp(_));
        let limit = if tcp { &limit_tcp } else { &limit_local };
        let handshaking = tcp.then(|| handshakes.clone().try_acquire_owned().ok());
        let permit = match handshaking {
            Some(None) => None,
            _ => limit.clone().try_acquire_owned().ok(),
        };
        let handshaking = handshaking.flatten();
        let conn = Conn {
            tier: tier.clone(),
            settings: settings.clone(),
            tasks: Arc::new(Semaphore::new(REPLY_QUEUE)),
            checked: parking_lot::Mutex::default(),
        };
        let (stop, done) = (stop_tx.subscribe(), done_tx.clone());
        tokio::spawn(async move {
            match stream {
                Accepted::Tcp(stream) => {
                    let _ = stream.set_nodelay(true);
                    crate::wire::keepalive(&stream);
                    match conn.settings.tls.clone() {
                        None => {
                            conn.run(stream, peer, ip, (permit, handshaking), stop)
                                .await
                        }
                        Some(tls) => {
                            let timeout = conn.settings.handshake_timeout;
                            match tls.accept_within(stream, &peer, timeout).await {
                                Ok(stream) => {
                                    conn.run(stream, peer, ip, (permit, handshaking), stop)
                                        .await
                                }
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    if let Some(ip) = ip {
                                        conn.settings.gate.failed_with(ip, &e);
                                    }
                                }
                            }
                        }
                    }
                }
                Accepted::Local(stream) => conn.run(stream, peer, None, (permit, None), stop).await,
            }
            drop(done);
        });
    }
    drop(stop_tx);
    drop(done_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("data connections still open after {SHUTDOWN_GRACE:?}");
    }
    Ok(())
}

pub(super) async fn accept_local(local: Option<&UnixListener>) -> std::io::Result<UnixStream> {
    match local {
        Some(listener) => listener.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

pub(super) struct Conn<T> {
    pub(super) tier: Arc<T>,
    pub(super) settings: Arc<Settings>,
    /// Reads and writes running as tasks of their own, at most `REPLY_QUEUE` per connection:
    /// each holds a staging buffer, so a client pipelining tiny requests cannot make the
    /// datanode allocate without bound.
    pub(super) tasks: Arc<Semaphore>,
    /// The grants this connection's requests carried that passed.
    pub(super) checked: parking_lot::Mutex<crate::grant::Checked>,
}

impl<T: Tier> Conn<T> {
    async fn run<S: Attach>(
        self,
        mut stream: S,
        peer: String,
        ip: Option<std::net::IpAddr>,
        (permit, handshaking): (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>),
        mut stop: broadcast::Receiver<()>,
    ) {
        if permit.is_none() {
            let busy = Error::ServerBusy {
                limit: self.settings.max_connections as u64,
            };
            handshake::send_error(&mut stream, &busy).await;
            return;
        }
        let mut rbuf = BytesMut::with_capacity(READ_BUFFER);
        let s = &self.settings;
        let handshake = handshake::server(
            &mut stream,
            &mut rbuf,
            handshake::Secrets::clients(s.secret.as_ref()),
            handshake::Service {
                name: "datanode",
                write_piece: T::WRITE_PIECE,
                idle_timeout: s.idle_timeout,
            },
            s.handshake_timeout,
        );
        let client = tokio::select! {
            result = handshake => result,
            _ = stop.recv() => return,
        };
        if let Err(e) = client {
            tracing::debug!(%peer, error = %e, "data handshake failed");
            if let Some(ip) = ip {
                s.gate.failed_with(ip, &e);
            }
            return;
        }
        let attached = tokio::select! {
            result = tokio::time::timeout(s.handshake_timeout, stream.attach(&mut rbuf)) => result,
            _ = stop.recv() => return,
        };
        let staging = match attached {
            Ok(Ok(staging)) => staging.map(Arc::new),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "attaching staging memory failed");
                handshake::send_error(&mut stream, &e).await;
                return;
            }
            Err(_) => return,
        };
        drop(handshaking);
        let (rd, wr) = stream.split();
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        let writer = tokio::spawn(write_replies(wr, rx, staging.clone()));
        tokio::select! {
            end = self.read_requests(rd.as_ref(), rbuf, &tx, staging.as_deref()) => {
                if let Err(error) = end {
                    tracing::debug!(%peer, %error, "data connection closed");
                    let _ = tx.send(Reply::Fatal(error)).await;
                }
            }
            _ = stop.recv() => {
                let _ = tx.send(Reply::Fatal(Error::ShuttingDown)).await;
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    /// Whether replies of this connection are still being made or sent.
    fn busy(&self, tx: &mpsc::Sender<Reply<T::Read>>) -> bool {
        self.tasks.available_permits() < REPLY_QUEUE || tx.capacity() < tx.max_capacity()
    }

    /// Reads and handles requests until the peer closes (`Ok`) or the stream cannot go on.
    pub(super) async fn read_requests(
        &self,
        rd: &impl io::Socket,
        mut rbuf: BytesMut,
        tx: &mpsc::Sender<Reply<T::Read>>,
        staging: Option<&Staging>,
    ) -> Result<()> {
        loop {
            let Some(frame) = frame::decode(&mut rbuf, MAX_REQUEST_BODY)? else {
                let pending = rbuf.len();
                let read = io::read_some_upto(rd, &mut rbuf, io::FRAME_READ);
                let s = &self.settings;
                match io::within_frame(pending, s.payload_timeout, s.idle_timeout, read).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    // Idle, but replies still on their way: not idle.
                    Err(e) if e.is_idle_close() && self.busy(tx) => {}
                    Err(e) => return Err(e),
                }
                continue;
            };
            let id = frame.id;
            let reply = match Kind::from_u16(frame.kind) {
                _ if frame.flags & FLAG_RESPONSE != 0 => Some(Reply::Failed {
                    id,
                    error: Error::UnexpectedMessage {
                        expected: "a request".into(),
                        kind: u32::from(frame.kind),
                    },
                }),
                Some(Kind::Write) => self.write(&frame, rd, &mut rbuf, tx, staging).await?,
                Some(Kind::Read) => self.read(&frame, tx, staging).await,
                Some(_) => Some(Reply::Failed {
                    id,
                    error: Error::UnexpectedMessage {
                        expected: "a data request (write or read)".into(),
                        kind: u32::from(frame.kind),
                    },
                }),
                None => Some(Reply::Failed {
                    id,
                    error: Error::UnknownMessage {
                        kind: u32::from(frame.kind),
                    },
                }),
            };
            if let Some(reply) = reply
                && tx.send(reply).await.is_err()
            {
                return Ok(());
            }
        }
    }

    /// Checks that the location is this datanode's current one, that `[offset, offset + len)`
    /// is inside the storage and inside one block, and that `grant` is a valid grant for that
    /// block (allowing writes if `write`). Returns the grant's generation.
    fn admit(
        &self,
        datanode: u64,
        offset: u64,
        len: usize,
        grant: Option<&pb::Grant>,
        write: bool,
    ) -> Result<u64> {
        let identity = self.settings.identity.read();
        stale(datanode, identity.id())?;
        self.check_bounds(offset, len)?;
        if self.settings.check_grants {
            self.checked.lock().check(
                &identity.grants,
                grant,
                identity.id(),
                offset,
                self.settings.block_size,
                write,
            )?;
        }
        Ok(grant.map_or(0, |g| g.generation))
    }

    /// Checks that a location naming datanode id `datanode` is this datanode's current one.
    fn check_identity(&self, datanode: u64) -> Result<()> {
        stale(datanode, self.settings.identity.read().id())
    }

    /// Checks that `[offset, offset + len)` is inside the storage and inside one block.
    fn check_bounds(&self, offset: u64, len: usize) -> Result<()> {
        let bad = |reason: String| Error::BadRange {
            offset,
            length: len as u64,
            reason,
        };
        let capacity = self.tier.capacity();
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| bad("overflows".into()))?;
        if end > capacity {
            return Err(bad(format!("past the capacity of {capacity} bytes")));
        }
        let bs = self.settings.block_size;
        if len > 0 && offset / bs != (end - 1) / bs {
            return Err(bad(format!(
                "crosses a block boundary (blocks of {bs} bytes)"
            )));
        }
        Ok(())
    }

    /// Runs a request's tier work inline (`Some(reply)`), or for a tier that waits for a
    /// device (`SPAWN_IO`) in a task of its own, at most `tasks` at once, that sends the reply
    /// (`None`) while the connection reads on.
    async fn run_io(
        &self,
        work: impl Future<Output = Reply<T::Read>> + Send + 'static,
        tx: &mpsc::Sender<Reply<T::Read>>,
    ) -> Option<Reply<T::Read>> {
        if !T::SPAWN_IO {
            return Some(work.await);
        }
        let Ok(permit) = self.tasks.clone().acquire_owned().await else {
            return None;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(work.await).await;
            drop(permit);
        });
        None
    }

    /// A read: answered now (`Some`) or by a task of its own (`None`).
    async fn read(
        &self,
        frame: &Frame,
        tx: &mpsc::Sender<Reply<T::Read>>,
        staging: Option<&Staging>,
    ) -> Option<Reply<T::Read>> {
        let id = frame.id;
        let req: pb::ReadRequest = match frame.decode_body("read request") {
            Ok(req) => req,
            Err(error) => return Some(Reply::Failed { id, error }),
        };
        let len = req.length as usize;
        let generation = match self.admit(req.datanode, req.offset, len, req.grant.as_ref(), false)
        {
            Ok(generation) => generation,
            Err(error) => return Some(Reply::Failed { id, error }),
        };
        let slot = req.slot;
        if slot != 0 {
            let checked = match staging {
                None => Err(no_staging()),
                Some(st) if slot > st.slots() || len > st.slot_size() => {
                    Err(slot_error(st, slot - 1, len))
                }
                Some(_) => Ok(()),
            };
            if let Err(error) = checked {
                return Some(Reply::Failed { id, error });
            }
        }
        let tier = self.tier.clone();
        let work = async move {
            match tier.read(req.offset, len, generation).await {
                Ok((read, crc)) => Reply::Data {
                    id,
                    read,
                    crc,
                    slot,
                },
                Err(error) => Reply::Failed { id, error },
            }
        };
        self.run_io(work, tx).await
    }
}

/// A location naming datanode id `expected` while this one is `current` now: it registered
/// again, so the blocks the location names are lost and may belong to other files.
fn stale(expected: u64, current: u64) -> Result<()> {
    if expected == current {
        return Ok(());
    }
    Err(Error::StaleLocation { expected, current })
}

pub(super) async fn with_deadline<F: Future<Output = Result<()>>>(
    after: Duration,
    work: F,
) -> Result<()> {
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| Error::Timeout {
            what: "receiving a write payload".into(),
            after_ms: after.as_millis().try_into().unwrap_or(u64::MAX),
        })?
}

#[cfg(test)]
mod tests;
