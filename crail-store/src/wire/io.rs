//! Socket reads that save a system call per message.
//!
//! Tokio keeps a socket marked readable until a read fails with `WouldBlock`, so the usual
//! read loop pays one failing `read` after every message. A read that returns less than the
//! room it was given has drained the socket: we clear readiness right there (through
//! `try_io`, which only clears if no newer readiness event arrived meanwhile, so no wakeup is
//! lost). On loopback this is one of about six system calls per request on each side.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// The readiness-based reads these helpers need: TCP and Unix sockets alike.
pub(crate) trait Socket: Send + Sync {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_read(&self, dst: &mut [u8]) -> io::Result<usize>;
    fn try_read_buf<B: BufMut>(&self, dst: &mut B) -> io::Result<usize>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    /// One non-blocking read straight on the socket, past tokio's readiness flags (see
    /// [`BusyPoll`]); `WouldBlock` when nothing is there.
    fn recv_now(&self, dst: &mut [u8]) -> io::Result<usize>;
}

/// A connected stream that splits into halves that are owned by separate tasks.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Socket: Socket;
    type ReadHalf: AsRef<Self::Socket> + Send + Sync + 'static;
    type WriteHalf: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::ReadHalf, Self::WriteHalf);
}

macro_rules! socket {
    ($stream:ty, $module:ident) => {
        impl Socket for $stream {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$stream>::readable(self)
            }
            fn try_read(&self, dst: &mut [u8]) -> io::Result<usize> {
                <$stream>::try_read(self, dst)
            }
            fn try_read_buf<B: BufMut>(&self, dst: &mut B) -> io::Result<usize> {
                <$stream>::try_read_buf(self, dst)
            }
            fn try_io<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                <$stream>::try_io(self, interest, f)
            }
            fn recv_now(&self, dst: &mut [u8]) -> io::Result<usize> {
                let flags = rustix::net::RecvFlags::DONTWAIT;
                Ok(rustix::net::recv(self.as_fd(), dst, flags)?.0)
            }
        }

        impl Stream for $stream {
            type Socket = $stream;
            type ReadHalf = tokio::net::$module::OwnedReadHalf;
            type WriteHalf = tokio::net::$module::OwnedWriteHalf;
            fn split(self) -> (Self::ReadHalf, Self::WriteHalf) {
                self.into_split()
            }
        }
    };
}

socket!(TcpStream, tcp);
socket!(UnixStream, unix);

/// Runs `read`, the next read of a connection whose buffer holds `pending` bytes of a frame
/// not yet whole: with bytes pending it must bring more within `after`, or the peer is taken
/// to stall inside a frame (and whatever it holds of the server with it) and dropped with
/// [`Error::Timeout`](crate::Error::Timeout). Between frames a connection may be idle for
/// `idle` (zero: for ever); then it is closed with the idle notice
/// ([`Error::is_idle_close`](crate::Error::is_idle_close)).
#[cfg(feature = "server")]
pub(crate) async fn within_frame(
    pending: usize,
    after: Duration,
    idle: Duration,
    read: impl Future<Output = io::Result<usize>>,
) -> crate::Result<usize> {
    let (limit, what) = match pending {
        0 if idle.is_zero() => return Ok(read.await?),
        0 => (idle, crate::error::IDLE_CONNECTION),
        _ => (after, "the rest of a frame"),
    };
    match tokio::time::timeout(limit, read).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(crate::Error::Timeout {
            what: what.into(),
            after_ms: limit.as_millis().try_into().unwrap_or(u64::MAX),
        }),
    }
}

/// Writes `bytes` and flushes: over TLS, ciphertext the socket did not take at once leaves
/// only with a flush.
pub(crate) async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Room kept free in the read buffer before each read.
const MIN_ROOM: usize = 16 << 10;

/// Reads what is available into `buf` (waiting until something is); `Ok(0)` means the peer
/// closed the connection.
pub(crate) async fn read_some(stream: &impl Socket, buf: &mut BytesMut) -> io::Result<usize> {
    read_some_upto(stream, buf, usize::MAX).await
}

/// Most bytes read at once where a frame may be followed by a large payload (a data-plane
/// write request, a read reply). Whatever a read brings past the frame is copied again into
/// its destination; reading at most this much keeps that copy to a few KiB per payload
/// (with 64 KiB it was up to a quarter of every 256 KiB write piece, 9% of a datanode's CPU),
/// while a whole 4 KiB read reply still arrives in one read.
pub(crate) const FRAME_READ: usize = 8 << 10;

/// [`read_some`], reading at most `limit` bytes.
pub(crate) async fn read_some_upto(
    stream: &impl Socket,
    buf: &mut BytesMut,
    limit: usize,
) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        if buf.capacity() - buf.len() < MIN_ROOM {
            buf.reserve(MIN_ROOM * 4);
        }
        let room = (buf.capacity() - buf.len()).min(limit);
        let mut got = None;
        let result = stream.try_io(Interest::READABLE, || {
            match stream.try_read_buf(&mut (&mut *buf).limit(room)) {
                Ok(n) if n > 0 && n < room => {
                    got = Some(n);
                    // Drained: report WouldBlock so tokio clears readiness now.
                    Err(io::ErrorKind::WouldBlock.into())
                }
                other => other,
            }
        });
        match (result, got) {
            (_, Some(n)) | (Ok(n), None) => return Ok(n),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Err(e),
        }
    }
}

/// Fills `dst` with the next bytes of the stream: first those already in `buf`, then straight
/// from the socket into `dst` (a payload is never staged in `buf` beyond what one read
/// happened to bring).
pub(crate) async fn read_payload(
    stream: &impl Socket,
    buf: &mut BytesMut,
    dst: &mut [u8],
) -> io::Result<()> {
    let n = buf.len().min(dst.len());
    dst[..n].copy_from_slice(&buf[..n]);
    buf.advance(n);
    read_exact(stream, &mut dst[n..]).await
}

/// Consumes the next `len` bytes of the stream (a payload nobody wants).
pub(crate) async fn skip_payload(
    stream: &impl Socket,
    buf: &mut BytesMut,
    mut len: usize,
) -> io::Result<()> {
    let n = buf.len().min(len);
    buf.advance(n);
    len -= n;
    let mut scratch = [0u8; 16 << 10];
    while len > 0 {
        let take = len.min(scratch.len());
        read_exact(stream, &mut scratch[..take]).await?;
        len -= take;
    }
    Ok(())
}

async fn read_exact(stream: &impl Socket, dst: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < dst.len() {
        stream.readable().await?;
        match stream.try_read(&mut dst[at..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection mid-payload",
                ));
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Busy polling of a client's reply socket, for the requests where latency is the point.
///
/// On this kind of machine (a VM without guest halt-polling) a CPU that goes idle while a
/// reply is on its way costs about 40 µs to wake: a plain two-process TCP ping-pong measured
/// 58 µs at p50 when both sides sleep, 21 µs when one side spins. So after a small reply is
/// handed out (the caller will likely send the next request at once), the reader keeps trying
/// the socket without sleeping for up to `window`, yielding to other tasks between tries, and
/// the reply to that next request finds its CPU awake. Large transfers never arm it: they are
/// bound by bandwidth, and the spinning would take CPU from the peer on a small machine.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    window: Duration,
    until: Option<Instant>,
}

/// Largest request whose reply arms busy polling.
pub(crate) const BUSY_POLL_MAX_BYTES: usize = 64 << 10;

impl BusyPoll {
    /// `window` zero disables it.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            until: None,
        }
    }

    /// A small reply was just handed out: keep the socket hot for a while.
    pub(crate) fn arm(&mut self) {
        if !self.window.is_zero() {
            self.until = Some(Instant::now() + self.window);
        }
    }

    /// Reads what is available into `buf` like [`read_some`], but while armed tries the
    /// socket without sleeping first. `Ok(0)`: the peer closed.
    pub(crate) async fn read_some(
        &mut self,
        stream: &impl Socket,
        buf: &mut BytesMut,
    ) -> io::Result<usize> {
        self.read_some_upto(stream, buf, usize::MAX).await
    }

    /// [`Self::read_some`], reading at most `limit` bytes.
    pub(crate) async fn read_some_upto(
        &mut self,
        stream: &impl Socket,
        buf: &mut BytesMut,
        limit: usize,
    ) -> io::Result<usize> {
        while let Some(until) = self.until {
            if let Some(n) = recv_now(stream, buf, limit)? {
                return Ok(n);
            }
            if Instant::now() >= until {
                self.until = None;
                break;
            }
            // Lets the caller run (and send its next request); tokio polls the I/O driver
            // without blocking before it resumes this task, so the CPU never idles.
            tokio::task::yield_now().await;
        }
        read_some_upto(stream, buf, limit).await
    }
}

/// One read that does not wait, straight on the socket: tokio's `try_read` trusts a readiness
/// flag that only the I/O driver sets, and the driver does not run while this task spins.
/// Skipping the flag loses no wakeup: the socket's edge-triggered registration still fires for
/// data that arrives later, and a stale flag costs one `WouldBlock`. `None`: nothing there yet.
fn recv_now(stream: &impl Socket, buf: &mut BytesMut, limit: usize) -> io::Result<Option<usize>> {
    let mut scratch = [0u8; MIN_ROOM];
    let room = scratch.len().min(limit);
    match stream.recv_now(&mut scratch[..room]) {
        Ok(n) => {
            buf.extend_from_slice(&scratch[..n]);
            Ok(Some(n))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::{BusyPoll, FRAME_READ, read_some_upto};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (near, far) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (near.expect("connect"), far.expect("accept").0)
    }

    #[tokio::test]
    async fn a_capped_read_leaves_the_rest_on_the_socket() {
        let (near, mut far) = pair().await;
        far.write_all(&[5u8; 100 << 10]).await.expect("write");
        let mut buf = BytesMut::new();
        let mut total = 0;
        while total < 100 << 10 {
            let n = read_some_upto(&near, &mut buf, FRAME_READ)
                .await
                .expect("read");
            assert!(n > 0 && n <= FRAME_READ, "read {n} bytes");
            total += n;
        }
        assert_eq!(buf.len(), 100 << 10);
        assert!(buf.iter().all(|&b| b == 5));
    }

    #[tokio::test]
    async fn busy_polling_finds_data_that_arrives_within_and_after_its_window() {
        let (near, mut far) = pair().await;
        let mut poll = BusyPoll::new(Duration::from_millis(20));
        let mut buf = BytesMut::new();

        // Unarmed: an ordinary wait.
        far.write_all(b"one").await.expect("write");
        assert_eq!(poll.read_some(&near, &mut buf).await.expect("read"), 3);

        // Armed, the data comes while it polls.
        poll.arm();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            far.write_all(b"two").await.expect("write");
            tokio::time::sleep(Duration::from_millis(60)).await;
            far.write_all(b"three").await.expect("write");
            far
        });
        assert_eq!(poll.read_some(&near, &mut buf).await.expect("read"), 3);

        // Armed, the data comes long after the window: it falls back to waiting, no wakeup
        // lost for bytes consumed behind tokio's back.
        poll.arm();
        let start = Instant::now();
        assert_eq!(poll.read_some(&near, &mut buf).await.expect("read"), 5);
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(&buf[..], b"onetwothree");

        // The peer closes: 0, polling or not.
        drop(writer.await.expect("writer"));
        poll.arm();
        assert_eq!(poll.read_some(&near, &mut buf).await.expect("read"), 0);
    }

    #[tokio::test]
    async fn a_zero_window_never_polls() {
        let (near, mut far) = pair().await;
        let mut poll = BusyPoll::new(Duration::ZERO);
        poll.arm();
        assert!(poll.until.is_none());
        far.write_all(b"x").await.expect("write");
        let mut buf = BytesMut::new();
        assert_eq!(poll.read_some(&near, &mut buf).await.expect("read"), 1);
    }
}
