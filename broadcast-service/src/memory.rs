//! A node's copy of a variable in shared memory: a memfd the node's fetch fills front to back,
//! which local readers map read-only (the file reaches them over the Unix socket), so a value
//! crosses no socket and is copied by nobody once it is on the node.
//!
//! The rule that makes sharing sound: bytes are written once, each before the length that
//! covers them is published (to the node's readers through the cache, to other processes in
//! `Arrived` messages); nobody writes below a published length, and slices are only ever
//! made of published bytes. The file is sealed against shrinking and growing, so a mapping
//! never faults past its end, and against writes from the moment it is made
//! (`F_SEAL_FUTURE_WRITE`): the node writes through the one writable mapping it took before
//! sealing, and nobody, not even a local process that reopens the file through `/proc` with
//! write access, can write it or map it writable. Readers refuse a file without that seal.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use rustix::fs::SealFlags;
#[cfg(feature = "node")]
use rustix::fs::{MemfdFlags, OFlags};

/// Most bytes a reader's chunk holds (a slice of the memory, so any size costs the same;
/// bounded so chunks stay a size callers can pass on).
pub(crate) const CHUNK: usize = 4 << 20;

/// A value's bytes in a memory file, mapped read-only.
#[derive(Debug)]
pub(crate) struct Memory {
    /// Written through and shared by the node's half; a reader only keeps it open.
    #[cfg_attr(not(feature = "node"), allow(dead_code))]
    file: File,
    len: usize,
    /// `None` for an empty value (nothing to map).
    map: Option<mapping::Map>,
}

impl Memory {
    /// Memory for a value of `size` bytes, to be filled with [`Memory::write_at`].
    #[cfg(feature = "node")]
    pub(crate) fn create(size: u64) -> io::Result<Arc<Self>> {
        let fd = rustix::fs::memfd_create(
            "crail-broadcast",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, size)?;
        let file = File::from(fd);
        let len = usize::try_from(size).map_err(|_| io::Error::other("value too large"))?;
        // The writable mapping first: once sealed, no new one can be made.
        let map = if len == 0 {
            None
        } else {
            Some(mapping::Map::writable(&file, len)?)
        };
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::FUTURE_WRITE | SealFlags::SEAL,
        )?;
        Ok(Arc::new(Self { file, len, map }))
    }

    /// Maps memory another process sent for a value of `size` bytes: it must be sealed
    /// against shrinking and hold exactly `size` bytes.
    pub(crate) fn open(fd: OwnedFd, size: u64) -> io::Result<Arc<Self>> {
        let refused = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|e| refused(format!("not a sealable memory file ({e})")))?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(refused(
                "the memory file is not sealed against shrinking".into(),
            ));
        }
        if !seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
            return Err(refused(
                "the memory file is not sealed against writes: another process could change the value".into(),
            ));
        }
        let len = rustix::fs::fstat(&fd)?.st_size;
        if u64::try_from(len).ok() != Some(size) {
            return Err(refused(format!(
                "the memory file holds {len} bytes, not the value's {size}"
            )));
        }
        Self::map(File::from(fd), size)
    }

    fn map(file: File, size: u64) -> io::Result<Arc<Self>> {
        let len = usize::try_from(size).map_err(|_| io::Error::other("value too large"))?;
        let map = if len == 0 {
            None
        } else {
            Some(mapping::Map::read_only(&file, len)?)
        };
        Ok(Arc::new(Self { file, len, map }))
    }

    /// The value's size.
    #[cfg(feature = "node")]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes `data` at `offset`, which no reader may have been told is in place yet.
    #[cfg(feature = "node")]
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        match (&self.map, start.checked_add(data.len())) {
            (Some(map), Some(end)) if end <= self.len => map.write(start, data),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes at {offset}: past the value's {} bytes",
                    data.len(),
                    self.len
                ),
            )),
        }
    }

    /// A read-only descriptor of the memory file, to send to a reader.
    #[cfg(feature = "node")]
    pub(crate) fn reader_fd(&self) -> io::Result<OwnedFd> {
        // A new open of the same file, read-only: the reader cannot write or resize it.
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.file)
        );
        Ok(rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?)
    }

    /// The memory file itself (for tests).
    #[cfg(test)]
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.file)
    }

    /// Bytes `start..end`, without a copy. The caller must have been told they are in place
    /// (see the module's rule); out-of-range bounds are clamped to the value.
    pub(crate) fn slice(self: &Arc<Self>, start: usize, end: usize) -> Bytes {
        let end = end.min(self.len);
        let start = start.min(end);
        if start == end {
            return Bytes::new();
        }
        Bytes::from_owner(Slice {
            memory: Arc::clone(self),
            start,
            end,
        })
    }
}

/// Published bytes of a [`Memory`], owned by a [`Bytes`].
struct Slice {
    memory: Arc<Memory>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        match &self.memory.map {
            Some(map) => map.published(self.start, self.end),
            None => &[],
        }
    }
}

/// The one place this crate touches raw memory.
#[allow(unsafe_code)]
mod mapping {
    use std::fs::File;
    use std::io;

    use memmap2::{MmapOptions, MmapRaw};

    /// A shared mapping of a whole memory file: read-only for readers, writable for the node
    /// that fills it (taken before the file was sealed against writes).
    #[derive(Debug)]
    pub(super) struct Map {
        raw: MmapRaw,
        #[cfg_attr(not(feature = "node"), allow(dead_code))]
        writable: bool,
    }

    // SAFETY: bytes are only read through `published`, whose bytes nobody writes any more, and
    // only written through `write`, below no published length (the module's rule): no byte is
    // read and written at once, so threads may share the mapping.
    unsafe impl Send for Map {}
    unsafe impl Sync for Map {}

    impl Map {
        pub(super) fn read_only(file: &File, len: usize) -> io::Result<Self> {
            let raw = MmapOptions::new().len(len).map_raw_read_only(file)?;
            Ok(Self {
                raw,
                writable: false,
            })
        }

        /// Writable. Pages are not populated up front: a large value would stall the node's
        /// runtime while they are; they fault in as bytes arrive.
        #[cfg(feature = "node")]
        pub(super) fn writable(file: &File, len: usize) -> io::Result<Self> {
            let raw = MmapOptions::new().len(len).map_raw(file)?;
            Ok(Self {
                raw,
                writable: true,
            })
        }

        /// Copies `data` to `start` (the caller checked `start + data.len() <= len`), bytes
        /// no reader has been told are in place.
        #[cfg(feature = "node")]
        pub(super) fn write(&self, start: usize, data: &[u8]) -> io::Result<()> {
            if !self.writable {
                return Err(io::Error::other("a read-only mapping"));
            }
            assert!(
                start
                    .checked_add(data.len())
                    .is_some_and(|end| end <= self.raw.len()),
                "a write past the mapping"
            );
            // SAFETY: the range lies in the mapping (asserted), which is writable and lives as
            // long as `self`; no reference to these bytes exists (they are not published, so
            // no slice covers them), and `data` is not in the mapping (it is published bytes'
            // caller memory or elsewhere), so the copy does not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.raw.as_mut_ptr().add(start),
                    data.len(),
                );
            }
            Ok(())
        }

        /// Bytes `start..end` (`start < end <= len`), which must be published.
        pub(super) fn published(&self, start: usize, end: usize) -> &[u8] {
            assert!(
                start < end && end <= self.raw.len(),
                "a slice past the mapping"
            );
            // SAFETY: the range lies in the mapping (asserted), which lives as long as `self`;
            // the file cannot shrink (sealed), so the pages stay; published bytes are never
            // written again, so the shared reference sees no change while it lives.
            unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(start), end - start) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn written_bytes_are_read_through_a_read_only_descriptor() {
        let memory = Memory::create(10).unwrap();
        memory.write_at(0, b"hello").unwrap();
        memory.write_at(5, b"world").unwrap();
        assert_eq!(&memory.slice(0, 5)[..], b"hello");
        let reader = Memory::open(memory.reader_fd().unwrap(), 10).unwrap();
        assert_eq!(&reader.slice(3, 100)[..], b"loworld");
        assert!(reader.slice(7, 3).is_empty());
        // The reader's descriptor cannot write or resize the value.
        let fd = memory.reader_fd().unwrap();
        assert!(File::from(fd).write_at(b"x", 0).is_err());
        assert!(rustix::fs::ftruncate(memory.reader_fd().unwrap(), 1).is_err());
        // The writer cannot grow it either.
        assert!(memory.write_at(8, b"xyz").is_err());
        assert!(rustix::fs::ftruncate(memory.fd(), 1).is_err());
    }

    #[test]
    fn a_local_process_cannot_reopen_the_value_writable() {
        let memory = Memory::create(8192).unwrap();
        memory.write_at(0, b"the value").unwrap();
        // What a local process can do with a descriptor it was sent: reopen it through /proc
        // with write access (the file's mode allows it) ...
        let fd = memory.reader_fd().unwrap();
        let path = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // ... but neither write through it nor map it writable.
        let err = reopened.write_at(b"forged", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_eperm()), "{err}");
        assert!(
            memmap2::MmapOptions::new()
                .len(8192)
                .map_raw(&reopened)
                .is_err()
        );
        assert!(rustix::fs::ftruncate(&reopened, 1).is_err());
        assert_eq!(&memory.slice(0, 9)[..], b"the value");
        // A reader refuses memory that is not sealed against writes.
        let loose =
            rustix::fs::memfd_create("loose", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&loose, 16).unwrap();
        rustix::fs::fcntl_add_seals(&loose, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        let err = Memory::open(loose, 16).unwrap_err();
        assert!(err.to_string().contains("sealed against writes"), "{err}");
    }

    fn libc_eperm() -> i32 {
        rustix::io::Errno::PERM.raw_os_error()
    }

    #[test]
    fn empty_values_and_bad_files_are_handled() {
        let empty = Memory::create(0).unwrap();
        assert!(empty.slice(0, 10).is_empty());
        let reader = Memory::open(empty.reader_fd().unwrap(), 0).unwrap();
        assert_eq!(reader.len(), 0);
        let memory = Memory::create(4096).unwrap();
        let wrong = Memory::open(memory.reader_fd().unwrap(), 4095).unwrap_err();
        assert!(wrong.to_string().contains("4096"), "{wrong}");
        let plain = tempfile::tempfile().unwrap();
        plain.set_len(16).unwrap();
        let unsealed = Memory::open(plain.into(), 16).unwrap_err();
        assert!(unsealed.to_string().contains("sealable"), "{unsealed}");
    }
}
