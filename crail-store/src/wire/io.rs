//! Socket reads that save a system call per message.
//!
//! Tokio keeps a socket marked readable until a read fails with `WouldBlock`, so the usual
//! read loop pays one failing `read` after every message. A read that returns less than the
//! room it was given has drained the socket: we clear readiness right there (through
//! `try_io`, which only clears if no newer readiness event arrived meanwhile, so no wakeup is
//! lost). On loopback this is one of about six system calls per request on each side.

use std::future::Future;
use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// The readiness-based reads these helpers need: TCP and Unix sockets alike.
pub(crate) trait Socket: Send + Sync {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_read(&self, dst: &mut [u8]) -> io::Result<usize>;
    fn try_read_buf(&self, dst: &mut BytesMut) -> io::Result<usize>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
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
            fn try_read_buf(&self, dst: &mut BytesMut) -> io::Result<usize> {
                <$stream>::try_read_buf(self, dst)
            }
            fn try_io<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                <$stream>::try_io(self, interest, f)
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

/// Room kept free in the read buffer before each read.
const MIN_ROOM: usize = 16 << 10;

/// Reads what is available into `buf` (waiting until something is); `Ok(0)` means the peer
/// closed the connection.
pub(crate) async fn read_some(stream: &impl Socket, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        if buf.capacity() - buf.len() < MIN_ROOM {
            buf.reserve(MIN_ROOM * 4);
        }
        let room = buf.capacity() - buf.len();
        let mut got = None;
        let result = stream.try_io(Interest::READABLE, || match stream.try_read_buf(buf) {
            Ok(n) if n > 0 && n < room => {
                got = Some(n);
                // Drained: report WouldBlock so tokio clears readiness now.
                Err(io::ErrorKind::WouldBlock.into())
            }
            other => other,
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
