//! A node's copy of a variable in shared memory: a memfd the node's fetch fills front to back,
//! which local readers map read-only (the file reaches them over the Unix socket), so a value
//! crosses no socket and is copied by nobody once it is on the node.
//!
//! The rule that makes sharing sound: bytes are written once, each before the length that
//! covers them is published (to the node's readers through the cache, to other processes in
//! `Arrived` messages); nobody writes below a published length, and slices are only ever
//! made of published bytes. The file is sealed against shrinking and growing, so a mapping
//! never faults past its end; readers get a read-only descriptor, so they cannot write.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
#[cfg(feature = "node")]
use std::os::unix::fs::FileExt;
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
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        Self::map(File::from(fd), size)
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
            Some(mapping::Map::new(&file, len)?)
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
        // Through the file, not the mapping: the kernel fills its pages without a fault per
        // page, and it checks the range (the file cannot grow).
        self.file.write_all_at(data, offset)
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

    /// A read-only shared mapping of a whole memory file.
    #[derive(Debug)]
    pub(super) struct Map(MmapRaw);

    // SAFETY: the mapping is read-only here and only read through `published`, whose bytes
    // nobody writes any more (the module's rule), so threads may share it.
    unsafe impl Send for Map {}
    unsafe impl Sync for Map {}

    impl Map {
        pub(super) fn new(file: &File, len: usize) -> io::Result<Self> {
            MmapOptions::new()
                .len(len)
                .map_raw_read_only(file)
                .map(Self)
        }

        /// Bytes `start..end` (`start < end <= len`), which must be published.
        pub(super) fn published(&self, start: usize, end: usize) -> &[u8] {
            assert!(
                start < end && end <= self.0.len(),
                "a slice past the mapping"
            );
            // SAFETY: the range lies in the mapping (asserted), which lives as long as `self`;
            // the file cannot shrink (sealed), so the pages stay; published bytes are never
            // written again, so the shared reference sees no change while it lives.
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(start), end - start) }
        }
    }
}

#[cfg(test)]
mod tests {
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
