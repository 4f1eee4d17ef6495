//! Socket reads that save a system call per message.
//!
//! Tokio keeps a socket marked readable until a read fails with `WouldBlock`, so the usual
//! read loop pays one failing `read` after every message. A read that returns less than the
//! room it was given has drained the socket: we clear readiness right there (through
//! `try_io`, which only clears if no newer readiness event arrived meanwhile, so no wakeup is
//! lost). On loopback this is one of about six system calls per request on each side.

use std::io;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Room kept free in the read buffer before each read.
const MIN_ROOM: usize = 16 << 10;

/// Reads what is available into `buf` (waiting until something is); `Ok(0)` means the peer
/// closed the connection.
pub(crate) async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
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
