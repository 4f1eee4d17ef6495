//! Aligned, reusable I/O buffers.
//!
//! Every buffer starts on a 4 KiB boundary and spans whole 4 KiB pages, so the same buffer can
//! go to a socket, to an `O_DIRECT` file or to io_uring without a bounce copy. A
//! [`BufferPool`] hands buffers out and takes them back when they drop, so a stream that moves
//! gigabytes allocates a handful of buffers, not one per request.

use std::fmt;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

/// Alignment and granularity of every buffer (the `O_DIRECT` unit of common disks).
pub const ALIGN: usize = 4096;

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; ALIGN]);

/// `count` zeroed pages, from zeroed memory (fresh pages from the kernel are not cleared a
/// second time).
fn zeroed_pages(count: usize) -> Vec<Page> {
    bytemuck::allocation::zeroed_vec(count)
}

/// A byte buffer aligned to [`ALIGN`], holding `len` valid bytes out of `capacity`. Bytes past
/// `len` are initialised (zero or old contents), never undefined.
pub struct Buffer {
    pages: Vec<Page>,
    len: usize,
    pool: Weak<PoolShared>,
}

impl Buffer {
    /// A zeroed buffer of at least `capacity` bytes (rounded up to whole pages), length 0.
    pub fn new(capacity: usize) -> Self {
        Self {
            pages: zeroed_pages(capacity.div_ceil(ALIGN).max(1)),
            len: 0,
            pool: Weak::new(),
        }
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_from(data: &[u8]) -> Self {
        let mut buf = Self::new(data.len());
        buf.extend_from_slice(data);
        buf
    }

    /// Bytes it can hold.
    pub fn capacity(&self) -> usize {
        self.pages.len() * ALIGN
    }

    /// Valid bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left after the valid bytes.
    pub fn remaining(&self) -> usize {
        self.capacity() - self.len
    }

    /// Sets the number of valid bytes (at most the capacity; clamped).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    /// Forgets the contents (length 0).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.remaining());
        let at = self.len;
        self.whole_mut()[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// The whole capacity, valid bytes or not (to fill before [`Buffer::set_len`]).
    pub fn whole_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.pages)
    }

    /// The whole capacity, read-only.
    pub fn whole(&self) -> &[u8] {
        bytemuck::cast_slice(&self.pages)
    }

    /// Turns the buffer into shared [`Bytes`] without a copy; it returns to its pool when the
    /// last clone drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.whole()[..self.len]
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.whole_mut()[..len]
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(std::mem::take(&mut self.pages));
        }
    }
}

/// A pool of equally sized [`Buffer`]s. Cheap to clone (clones share the pool). Buffers come
/// back to it when dropped, up to `keep` of them; more are freed.
#[derive(Clone)]
pub struct BufferPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    pages_per_buffer: usize,
    keep: usize,
    free: Mutex<Vec<Vec<Page>>>,
}

impl PoolShared {
    fn put(&self, pages: Vec<Page>) {
        if pages.len() != self.pages_per_buffer {
            return;
        }
        let mut free = self.free.lock();
        if free.len() < self.keep {
            free.push(pages);
        }
    }
}

impl BufferPool {
    /// A pool of buffers of `buffer_size` bytes (rounded up to [`ALIGN`]) keeping at most
    /// `keep` idle ones.
    pub fn new(buffer_size: usize, keep: usize) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                pages_per_buffer: buffer_size.div_ceil(ALIGN).max(1),
                keep,
                free: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Size of each buffer.
    pub fn buffer_size(&self) -> usize {
        self.shared.pages_per_buffer * ALIGN
    }

    /// A buffer of length 0, reused if one is idle.
    pub fn get(&self) -> Buffer {
        let pages = self.shared.free.lock().pop();
        let pages = pages.unwrap_or_else(|| zeroed_pages(self.shared.pages_per_buffer));
        Buffer {
            pages,
            len: 0,
            pool: Arc::downgrade(&self.shared),
        }
    }

    /// Idle buffers held now.
    pub fn idle(&self) -> usize {
        self.shared.free.lock().len()
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("buffer_size", &self.buffer_size())
            .field("keep", &self.shared.keep)
            .field("idle", &self.idle())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_come_back() {
        let pool = BufferPool::new(10_000, 2);
        assert_eq!(pool.buffer_size(), 3 * ALIGN);
        let mut a = pool.get();
        assert_eq!(a.whole().as_ptr() as usize % ALIGN, 0);
        assert_eq!(a.extend_from_slice(&[7; 20_000]), 3 * ALIGN);
        assert_eq!(a.remaining(), 0);
        let b = pool.get();
        let c = pool.get();
        drop(a);
        drop(b);
        drop(c);
        assert_eq!(pool.idle(), 2, "keeps at most `keep`");
        let frozen = pool.get().freeze();
        let clone = frozen.clone();
        drop(frozen);
        assert_eq!(pool.idle(), 1);
        drop(clone);
        assert_eq!(pool.idle(), 2, "returns when the last Bytes clone drops");
    }

    #[test]
    fn length_is_clamped_to_capacity() {
        let mut b = Buffer::copy_from(b"hello");
        assert_eq!(&*b, b"hello");
        b.set_len(1 << 30);
        assert_eq!(b.len(), ALIGN);
    }
}
