//! The same-host fast path: payloads through shared memory instead of a socket.
//!
//! A datanode also listens on a Unix socket in the abstract namespace, named after its TCP
//! address. A client whose host is the datanode's connects there, runs the usual handshake,
//! and attaches **staging memory**: a memfd it created, sealed against shrinking, sent with the
//! Attach frame as `SCM_RIGHTS`. Both map it. A request then names a slot instead of carrying
//! its payload: the client copies a write's bytes into the slot, the datanode copies them into
//! its tier; a read's bytes travel the other way. Each side checksums its own copy, so a peer
//! scribbling on the shared memory can garble a transfer (a typed checksum error) but never
//! what is stored. The socket carries only small frames.
//!
//! An abstract socket exists per network namespace: a client in another one (another host, a
//! container) cannot connect and keeps using TCP.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

#[cfg(feature = "server")]
use bytes::BytesMut;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
#[cfg(feature = "server")]
use tokio::net::UnixListener;
use tokio::net::UnixStream;

use crate::error::Error;

pub(crate) use memory::Staging;

/// Largest staging memory a datanode maps for one connection.
pub(crate) const MAX_STAGING: u64 = 4 << 30;
/// Most slots a client asks for.
const MAX_SLOTS: u64 = 16;
/// Most staging memory a client creates per datanode.
const CLIENT_STAGING: u64 = 256 << 20;

/// The abstract Unix socket name of the datanode listening on TCP `addr`.
fn socket_name(addr: SocketAddr) -> String {
    format!("\0crail-datanode/{addr}")
}

#[cfg(feature = "server")]
/// Binds the fast-path socket of the datanode listening on `addr`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UnixListener> {
    UnixListener::bind(socket_name(addr))
}

/// Connects to the fast-path socket of the datanode listening on `addr`; fails at once when
/// there is none in this network namespace.
pub(crate) async fn connect(addr: SocketAddr) -> io::Result<UnixStream> {
    UnixStream::connect(socket_name(addr)).await
}

/// Slot size and count a client uses with blocks of `block_size` bytes: a slot holds the
/// largest request (one block).
pub(crate) fn client_slots(block_size: u64) -> (u64, u32) {
    let slots = (CLIENT_STAGING / block_size.max(1)).clamp(1, MAX_SLOTS);
    (block_size, u32::try_from(slots).unwrap_or(1))
}

/// Sends `bytes` with `fd` attached (all of `bytes` in one call, as small frames go).
pub async fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let fds = [fd];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(
                stream,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "sent {n} of {} bytes of a frame carrying a file descriptor",
                    bytes.len()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(feature = "server")]
/// Reads what is available into `buf`, keeping a file descriptor that came with it. `Ok(0)`:
/// the peer closed.
pub(crate) async fn recv_with_fd(
    stream: &UnixStream,
    buf: &mut BytesMut,
    fd: &mut Option<OwnedFd>,
) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = recv_into_with_fd(stream, &mut chunk, fd).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Reads at most `buf.len()` bytes into `buf`, keeping a file descriptor that came with
/// them (the first one only; others are closed). `Ok(0)`: the peer closed.
pub async fn recv_into_with_fd(
    stream: &UnixStream,
    buf: &mut [u8],
    fd: &mut Option<OwnedFd>,
) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = rustix::net::recvmsg(
                stream,
                &mut [IoSliceMut::new(buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    for received in fds {
                        // A second descriptor is closed as it drops: one is all we take.
                        if fd.is_none() {
                            *fd = Some(received);
                        }
                    }
                }
            }
            Ok(msg.bytes)
        });
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            got => return got,
        }
    }
}

fn refused(reason: impl Into<String>) -> Error {
    Error::Unsupported {
        feature: "staging memory".into(),
        reason: reason.into(),
    }
}

/// The one place this module touches raw memory: the shared mapping.
#[allow(unsafe_code)]
mod memory {
    use std::fs::File;
    #[cfg(feature = "server")]
    use std::os::fd::OwnedFd;

    use memmap2::{MmapOptions, MmapRaw};
    use rustix::fs::{MemfdFlags, SealFlags};

    use super::{MAX_STAGING, refused};
    use crate::error::{Error, Result};

    /// Staging memory shared with the peer process: `slots` slots of `slot_size` bytes.
    #[derive(Debug)]
    pub(crate) struct Staging {
        map: MmapRaw,
        file: File,
        slot_size: usize,
        slots: u32,
    }

    // SAFETY: the mapping is only ever accessed with raw copies (`copy_in`/`copy_out`), never
    // through references, so sharing it between threads (and with the peer process, which may
    // write at any time) creates no aliasing references. Racing copies can only garble bytes,
    // which both sides detect with checksums of their own copies.
    unsafe impl Sync for Staging {}
    unsafe impl Send for Staging {}

    impl Staging {
        /// Creates staging memory for a client: a memfd sealed so that neither side can
        /// shrink or grow it (shrinking would make the peer's accesses fault).
        pub(crate) fn create(slot_size: u64, slots: u32) -> Result<Self> {
            let failed = |what: &str, e: std::io::Error| Error::Io {
                cause: std::io::Error::new(e.kind(), format!("staging memory: {what}: {e}")),
            };
            let total = slot_size
                .checked_mul(u64::from(slots))
                .filter(|t| *t > 0 && *t <= MAX_STAGING)
                .ok_or_else(|| refused(format!("{slots} slots of {slot_size} bytes")))?;
            let fd = rustix::fs::memfd_create(
                "crail-staging",
                MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
            )
            .map_err(|e| failed("memfd_create", e.into()))?;
            rustix::fs::ftruncate(&fd, total).map_err(|e| failed("ftruncate", e.into()))?;
            rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
                .map_err(|e| failed("sealing", e.into()))?;
            Self::map(File::from(fd), slot_size, slots, total)
        }

        #[cfg(feature = "server")]
        /// Maps staging memory a client sent: it must be sealed against shrinking and hold
        /// exactly `slots` slots of `slot_size` bytes.
        pub(crate) fn attach(fd: OwnedFd, slot_size: u64, slots: u32) -> Result<Self> {
            let total = slot_size
                .checked_mul(u64::from(slots))
                .filter(|t| *t > 0 && *t <= MAX_STAGING)
                .ok_or_else(|| {
                    refused(format!(
                        "{slots} slots of {slot_size} bytes (at most {MAX_STAGING} bytes in all)"
                    ))
                })?;
            let seals = rustix::fs::fcntl_get_seals(&fd)
                .map_err(|e| refused(format!("not a sealable memory file: {e}")))?;
            if !seals.contains(SealFlags::SHRINK) {
                return Err(refused("the memory file is not sealed against shrinking"));
            }
            let size = rustix::fs::fstat(&fd)
                .map_err(|e| refused(format!("cannot stat the memory file: {e}")))?
                .st_size;
            if u64::try_from(size).ok() != Some(total) {
                return Err(refused(format!(
                    "the memory file has {size} bytes, not {slots} x {slot_size}"
                )));
            }
            Self::map(File::from(fd), slot_size, slots, total)
        }

        fn map(file: File, slot_size: u64, slots: u32, total: u64) -> Result<Self> {
            let len = usize::try_from(total).map_err(|_| refused("too large"))?;
            let slot_size = usize::try_from(slot_size).map_err(|_| refused("slot too large"))?;
            let map = MmapOptions::new()
                .len(len)
                .map_raw(&file)
                .map_err(|cause| Error::Io { cause })?;
            Ok(Self {
                map,
                file,
                slot_size,
                slots,
            })
        }

        /// The memory file, to send to the peer.
        pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
            std::os::fd::AsFd::as_fd(&self.file)
        }

        #[cfg(feature = "server")]
        pub(crate) fn slot_size(&self) -> usize {
            self.slot_size
        }

        pub(crate) fn slots(&self) -> u32 {
            self.slots
        }

        /// Start of `len` bytes at `from` of slot `slot`, if they fit.
        fn at(&self, slot: u32, from: usize, len: usize) -> Result<*mut u8> {
            if slot >= self.slots || from.saturating_add(len) > self.slot_size {
                return Err(Error::BadRange {
                    offset: u64::from(slot),
                    length: len as u64,
                    reason: format!(
                        "not inside a staging slot ({} slots of {} bytes)",
                        self.slots, self.slot_size
                    ),
                });
            }
            // SAFETY: slot < slots and from + len <= slot_size, so the offset is inside the
            // mapping.
            Ok(unsafe {
                self.map
                    .as_mut_ptr()
                    .add(slot as usize * self.slot_size + from)
            })
        }

        /// Copies `src` to the start of slot `slot`.
        pub(crate) fn copy_in(&self, slot: u32, src: &[u8]) -> Result<()> {
            self.copy_in_at(slot, 0, src)
        }

        /// Copies `src` to `from` bytes into slot `slot`.
        pub(crate) fn copy_in_at(&self, slot: u32, from: usize, src: &[u8]) -> Result<()> {
            let dst = self.at(slot, from, src.len())?;
            // SAFETY: `dst..dst + len` lies in the mapping (checked by `at`), which lives as
            // long as `self`; it cannot overlap `src`, which Rust memory owns.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
            Ok(())
        }

        /// Copies the start of slot `slot` into `dst`.
        pub(crate) fn copy_out(&self, slot: u32, dst: &mut [u8]) -> Result<()> {
            self.copy_out_at(slot, 0, dst)
        }

        /// Copies the bytes `from` bytes into slot `slot` into `dst`.
        pub(crate) fn copy_out_at(&self, slot: u32, from: usize, dst: &mut [u8]) -> Result<()> {
            let src = self.at(slot, from, dst.len())?;
            // SAFETY: as in `copy_in`, the other way.
            unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_round_trips_and_bounds_slots() {
        let staging = Staging::create(8192, 3).unwrap();
        staging.copy_in(2, b"hello").unwrap();
        let mut out = [0u8; 5];
        staging.copy_out(2, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert!(matches!(
            staging.copy_in(3, b"x"),
            Err(Error::BadRange { .. })
        ));
        assert!(matches!(
            staging.copy_out(0, &mut [0u8; 8193]),
            Err(Error::BadRange { .. })
        ));
    }

    #[test]
    fn attach_checks_seals_and_size() {
        let staging = Staging::create(4096, 2).unwrap();
        let dup = || staging.fd().try_clone_to_owned().unwrap();
        let peer = Staging::attach(dup(), 4096, 2).unwrap();
        staging.copy_in(1, b"shared").unwrap();
        let mut out = [0u8; 6];
        peer.copy_out(1, &mut out).unwrap();
        assert_eq!(&out, b"shared");
        assert!(matches!(
            Staging::attach(dup(), 4096, 3),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            Staging::attach(dup(), u64::MAX, 2),
            Err(Error::Unsupported { .. })
        ));
        // Not sealed: a plain file.
        let file = tempfile::tempfile().unwrap();
        file.set_len(8192).unwrap();
        assert!(matches!(
            Staging::attach(file.into(), 4096, 2),
            Err(Error::Unsupported { .. })
        ));
    }

    #[tokio::test]
    async fn a_descriptor_travels_with_its_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let staging = Staging::create(4096, 1).unwrap();
        send_with_fd(&a, b"attach", staging.fd()).await.unwrap();
        let (mut buf, mut got) = (BytesMut::new(), None);
        let n = recv_with_fd(&b, &mut buf, &mut got).await.unwrap();
        assert_eq!((n, &buf[..]), (6, &b"attach"[..]));
        let peer = Staging::attach(got.unwrap(), 4096, 1).unwrap();
        peer.copy_in(0, b"back").unwrap();
        let mut out = [0u8; 4];
        staging.copy_out(0, &mut out).unwrap();
        assert_eq!(&out, b"back");
    }
}
