//! Writing a sequence of records into a buffer past the cache.
//!
//! A sort moves a gigabyte through memory twice; with ordinary stores every destination cache
//! line is first read from memory (to own it) and later written back, a third of the traffic
//! wasted. A [`Streamer`] collects what it is given in a small aligned window and writes each
//! full window with non-temporal stores, which write whole lines without reading them. The
//! partial windows at either end of the destination, which share lines with its neighbours,
//! are copied with ordinary stores. Elsewhere than x86_64 every window is an ordinary copy.
//!
//! Also here, beside the other use of the CPU's intrinsics: [`prefetch`], a hint that asks
//! for a cache line before it is read.

/// Bytes per window: four cache lines.
const WINDOW: usize = 256;
/// Room past the window: a piece this long or shorter is copied whole, in one move of a
/// length the compiler knows for TeraSort's records, and what spills past the window moves
/// to its start once the window is written.
const SLACK: usize = 128;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Window([u8; WINDOW + SLACK]);

/// Writes bytes one after another into `dst`; [`Streamer::finish`] writes what is still held.
pub(crate) struct Streamer<'a> {
    dst: &'a mut [u8],
    /// Bytes of `dst` given so far (written or held in the window).
    at: usize,
    /// Where the window starts, relative to `dst` (negative while `dst` starts inside it):
    /// window byte `i` is `dst[start + i]`. Windows lie on `WINDOW` boundaries in memory.
    start: isize,
    window: Window,
}

impl<'a> Streamer<'a> {
    pub(crate) fn new(dst: &'a mut [u8]) -> Self {
        let start = -((dst.as_ptr() as usize % WINDOW) as isize);
        Self {
            dst,
            at: 0,
            start,
            window: Window([0; WINDOW + SLACK]),
        }
    }

    /// Appends `bytes`. Panics past the end of the destination, as a slice copy would.
    #[inline]
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        assert!(self.at + bytes.len() <= self.dst.len(), "streamer overrun");
        if bytes.len() <= SLACK {
            let from = (self.at as isize - self.start) as usize;
            let to = from + bytes.len();
            copy_record(&mut self.window.0[from..to], bytes);
            self.at += bytes.len();
            if to >= WINDOW {
                self.flush();
                let (window, spill) = self.window.0.split_at_mut(WINDOW);
                window[..SLACK].copy_from_slice(spill);
            }
            return;
        }
        loop {
            let from = (self.at as isize - self.start) as usize;
            let take = bytes.len().min(WINDOW - from);
            copy_record(&mut self.window.0[from..from + take], &bytes[..take]);
            self.at += take;
            bytes = &bytes[take..];
            if from + take < WINDOW {
                return;
            }
            self.flush();
            if bytes.is_empty() {
                return;
            }
        }
    }

    /// Writes the full window out and moves it on.
    fn flush(&mut self) {
        if self.start >= 0 {
            let at = self.start as usize;
            store(&mut self.dst[at..at + WINDOW], &self.window);
        } else {
            let skip = (-self.start) as usize;
            self.dst[..WINDOW - skip].copy_from_slice(&self.window.0[skip..WINDOW]);
        }
        self.start += WINDOW as isize;
    }

    /// Writes what the window holds; every byte given is then in `dst`.
    pub(crate) fn finish(self) {
        let skip = (-self.start).max(0) as usize;
        let held = (self.at as isize - self.start) as usize;
        let at = self.start.max(0) as usize;
        self.dst[at..self.at].copy_from_slice(&self.window.0[skip..held]);
        fence();
    }
}

/// Writes one window to `dst` (as long as a window, on a window boundary) past the cache.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn store(dst: &mut [u8], window: &Window) {
    use std::arch::x86_64::{__m128i, _mm_load_si128, _mm_stream_si128};
    assert!(dst.len() == WINDOW && (dst.as_ptr() as usize).is_multiple_of(16));
    let (src, dst) = (window.0.as_ptr(), dst.as_mut_ptr());
    for i in (0..WINDOW).step_by(16) {
        // SAFETY: SSE2 is part of x86_64; both pointers are 16-byte aligned (the window is
        // 64-aligned, dst was checked) and `i + 16 <= WINDOW` bytes lie inside both.
        unsafe {
            let v = _mm_load_si128(src.add(i).cast::<__m128i>());
            _mm_stream_si128(dst.add(i).cast::<__m128i>(), v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn store(dst: &mut [u8], window: &Window) {
    dst.copy_from_slice(&window.0[..WINDOW]);
}

/// Asks for the cache line holding `byte` ahead of its use (a hint: no load, no fault).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline]
pub(crate) fn prefetch(byte: &u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: SSE is part of x86_64; a prefetch of a valid reference has no effect on memory.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(byte).cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn prefetch(_byte: &u8) {}

/// Orders the streamed stores before whatever this thread does next (another thread reading
/// the buffer after a join sees them).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn fence() {
    // SAFETY: SSE is part of x86_64; a fence has no other effect.
    unsafe { std::arch::x86_64::_mm_sfence() }
}

#[cfg(not(target_arch = "x86_64"))]
fn fence() {}

/// Copies one record; TeraSort's 100 bytes as a fixed-size move the compiler inlines, rather
/// than a call to memcpy per record.
#[inline]
pub(crate) fn copy_record(dst: &mut [u8], src: &[u8]) {
    match (
        <&mut [u8; 100]>::try_from(&mut *dst),
        <&[u8; 100]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_pieces_of_every_length_at_every_alignment() {
        let source: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in [0, 1, 15, 16, 63, 64, 100, 255] {
            for piece in [1, 7, 100, 256, 300] {
                for len in [0, 1, 99, 256, 257, 1000, 3000] {
                    let mut buffer = vec![0xeeu8; 4096 + 512];
                    let dst = &mut buffer[offset..offset + len];
                    let mut s = Streamer::new(dst);
                    for chunk in source[..len].chunks(piece) {
                        s.push(chunk);
                    }
                    s.finish();
                    assert_eq!(&buffer[offset..offset + len], &source[..len]);
                    assert!(buffer[..offset].iter().all(|&b| b == 0xee));
                    assert!(buffer[offset + len..].iter().all(|&b| b == 0xee));
                }
            }
        }
    }
}
