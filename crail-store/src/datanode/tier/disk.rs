//! Block I/O on an `O_DIRECT` file: io_uring where the kernel allows, `pread`/`pwrite` on
//! tokio's blocking pool otherwise. Buffers are [`Buffer`]s (4 KiB aligned) moved into the
//! operation and handed back with its result, so nothing is copied and nothing borrowed across
//! threads.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::buffer::Buffer;
use crate::config::IoEngine;

type Done = (Buffer, io::Result<()>);

/// A file and the engine that moves its bytes.
#[derive(Debug)]
pub(crate) struct Disk {
    file: Arc<File>,
    ring: Option<uring::Ring>,
}

impl Disk {
    /// Opens the engine for `file`. Returns the engine actually used.
    /// Flushes what was written to the device (its volatile cache included).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    pub(crate) fn new(file: File, engine: IoEngine) -> io::Result<(Self, &'static str)> {
        let file = Arc::new(file);
        let ring = match engine {
            IoEngine::Pread => None,
            IoEngine::Uring => Some(uring::start(file.clone())?),
            IoEngine::Auto => match uring::start(file.clone()) {
                Ok(ring) => Some(ring),
                Err(e) => {
                    tracing::info!(error = %e, "io_uring unavailable; using pread/pwrite");
                    None
                }
            },
        };
        let name = if ring.is_some() { "io_uring" } else { "pread" };
        Ok((Self { file, ring }, name))
    }

    /// Reads `buf[range]` from `offset`.
    pub(crate) async fn read(&self, buf: Buffer, range: Range<usize>, offset: u64) -> Done {
        self.io(buf, range, offset, false).await
    }

    /// Writes `buf[range]` at `offset`.
    pub(crate) async fn write(&self, buf: Buffer, range: Range<usize>, offset: u64) -> Done {
        self.io(buf, range, offset, true).await
    }

    async fn io(&self, buf: Buffer, range: Range<usize>, offset: u64, write: bool) -> Done {
        if range.end > buf.capacity() || range.start > range.end {
            return (buf, Err(io::Error::other("I/O range outside the buffer")));
        }
        if let Some(ring) = &self.ring {
            let (tx, rx) = oneshot::channel();
            let op = uring::Op {
                write,
                buf,
                range,
                offset,
                done: tx,
            };
            if let Err(op) = ring.send(op) {
                return (op.buf, Err(io::Error::other("io_uring thread is gone")));
            }
            return match rx.await {
                Ok(done) => done,
                // The thread died holding the buffer: it is lost; report without one.
                Err(_) => (
                    Buffer::new(0),
                    Err(io::Error::other("io_uring thread is gone")),
                ),
            };
        }
        let file = self.file.clone();
        let work = move || {
            let mut buf = buf;
            let result = if write {
                file.write_all_at(&buf.whole()[range], offset)
            } else {
                file.read_exact_at(&mut buf.whole_mut()[range], offset)
            };
            (buf, result)
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(done) => done,
            Err(e) => (Buffer::new(0), Err(io::Error::other(e))),
        }
    }
}

/// The io_uring engine: one thread owns the ring, takes operations from a channel, submits them
/// in batches and completes them as the kernel reports.
#[allow(unsafe_code)]
mod uring {
    use std::collections::{HashMap, VecDeque};
    use std::fs::File;
    use std::io;
    use std::ops::Range;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::Arc;
    use std::sync::mpsc::{Receiver, Sender};

    use io_uring::{IoUring, opcode, types};
    use tokio::sync::oneshot;

    use super::Done;
    use crate::buffer::Buffer;

    const DEPTH: u32 = 128;

    #[derive(Debug)]
    pub(super) struct Op {
        pub(super) write: bool,
        pub(super) buf: Buffer,
        pub(super) range: Range<usize>,
        pub(super) offset: u64,
        pub(super) done: oneshot::Sender<Done>,
    }

    /// Key of the ring's read of the wake eventfd.
    const WAKE: u64 = u64::MAX - 1;

    /// The way to the ring thread: a channel of operations, and an eventfd whose read the
    /// thread keeps posted in the ring, so an operation sent while the thread waits for
    /// completions is submitted at once rather than after the next completion (which made
    /// the device run one request at a time).
    #[derive(Debug)]
    pub(super) struct Ring {
        ops: Sender<Op>,
        wake: Arc<OwnedFd>,
    }

    impl Ring {
        /// Queues `op` and wakes the thread; gives `op` back if the thread is gone.
        pub(super) fn send(&self, op: Op) -> Result<(), Op> {
            self.ops.send(op).map_err(|e| e.0)?;
            // A failed wake leaves the op to the next completion: slower, never lost.
            let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
            Ok(())
        }
    }

    pub(super) fn start(file: Arc<File>) -> io::Result<Ring> {
        let mut ring = IoUring::new(DEPTH)?;
        // Probe with a no-op: some sandboxes create rings but refuse every operation.
        let nop = opcode::Nop::new().build().user_data(u64::MAX);
        // SAFETY: a no-op references no memory.
        unsafe { ring.submission().push(&nop) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        ring.submit_and_wait(1)?;
        if let Some(cqe) = ring.completion().next()
            && cqe.result() < 0
        {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        let wake = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_wake = wake.clone();
        std::thread::Builder::new()
            .name("crail-uring".into())
            .spawn(move || run(ring, file, rx, thread_wake))?;
        Ok(Ring { ops: tx, wake })
    }

    fn run(mut ring: IoUring, file: Arc<File>, rx: Receiver<Op>, wake: Arc<OwnedFd>) {
        let fd = types::Fd(file.as_raw_fd());
        // Where the ring's eventfd read lands. Leaked: a read may still be posted when this
        // thread ends, and the kernel must never write into freed memory.
        let wake_buf: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
        let wake_ptr = wake_buf.as_mut_ptr();
        let mut wake_posted = false;
        let mut inflight: HashMap<u64, Op> = HashMap::new();
        let mut next = 0u64;
        let mut queued: VecDeque<Op> = VecDeque::new();
        loop {
            if inflight.is_empty() && queued.is_empty() {
                match rx.recv() {
                    Ok(op) => queued.push_back(op),
                    Err(_) => return,
                }
            }
            while let Ok(op) = rx.try_recv() {
                queued.push_back(op);
            }
            // One entry stays free for the wake read.
            while inflight.len() < DEPTH as usize - 1 {
                let Some(mut op) = queued.pop_front() else {
                    break;
                };
                let len = u32::try_from(op.range.len()).unwrap_or(u32::MAX);
                let entry = if op.write {
                    let ptr = op.buf.whole()[op.range.clone()].as_ptr();
                    opcode::Write::new(fd, ptr, len).offset(op.offset).build()
                } else {
                    let ptr = op.buf.whole_mut()[op.range.clone()].as_mut_ptr();
                    opcode::Read::new(fd, ptr, len).offset(op.offset).build()
                };
                let key = next;
                next += 1;
                // SAFETY: the buffer's pages are heap memory owned by `op`, which stays in
                // `inflight` (moving `op` does not move the pages) until the kernel reports
                // the operation complete; the file stays open through `file`.
                let pushed = unsafe { ring.submission().push(&entry.user_data(key)) };
                if pushed.is_err() {
                    queued.push_front(op);
                    break;
                }
                inflight.insert(key, op);
            }
            if inflight.is_empty() {
                continue;
            }
            if !wake_posted {
                let read = opcode::Read::new(types::Fd(wake.as_raw_fd()), wake_ptr, 8)
                    .build()
                    .user_data(WAKE);
                // SAFETY: `wake_buf` is leaked, so it outlives any posted read; the eventfd
                // stays open through `wake`, which this thread holds until it ends.
                wake_posted = unsafe { ring.submission().push(&read) }.is_ok();
            }
            if let Err(e) = ring.submit_and_wait(1) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The ring is unusable: fail everything and stop.
                for (_, op) in inflight.drain() {
                    let _ = op
                        .done
                        .send((op.buf, Err(io::Error::new(e.kind(), e.to_string()))));
                }
                for op in queued.drain(..) {
                    let _ = op
                        .done
                        .send((op.buf, Err(io::Error::new(e.kind(), e.to_string()))));
                }
                return;
            }
            for cqe in ring.completion() {
                if cqe.user_data() == WAKE {
                    // Operations are waiting in the channel: the loop submits them now.
                    wake_posted = false;
                    continue;
                }
                let Some(op) = inflight.remove(&cqe.user_data()) else {
                    continue;
                };
                let res = cqe.result();
                let result = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else if usize::try_from(res).unwrap_or(0) < op.range.len() {
                    // O_DIRECT transfers of whole aligned blocks are not split by the kernel;
                    // a short count means end of device or file.
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("short transfer: {res} of {} bytes", op.range.len()),
                    ))
                } else {
                    Ok(())
                };
                let _ = op.done.send((op.buf, result));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Disk, IoEngine};
    use crate::buffer::Buffer;

    /// Many operations at once, as a connection's spawned reads and writes issue them: every
    /// one completes with its own bytes, through both engines.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_operations_complete_with_their_own_bytes() {
        const OPS: usize = 64;
        const LEN: usize = 64 << 10;
        for engine in [IoEngine::Auto, IoEngine::Pread] {
            let file = tempfile::tempfile().expect("temp file");
            file.set_len((OPS * LEN) as u64).expect("size");
            let (disk, _) = Disk::new(file, engine).expect("disk");
            let disk = std::sync::Arc::new(disk);
            let writes = (0..OPS).map(|i| {
                let disk = disk.clone();
                tokio::spawn(async move {
                    let mut buf = Buffer::new(LEN);
                    buf.whole_mut().fill(i as u8);
                    let (_, done) = disk.write(buf, 0..LEN, (i * LEN) as u64).await;
                    done.expect("write");
                })
            });
            for write in writes.collect::<Vec<_>>() {
                write.await.expect("write task");
            }
            let reads = (0..OPS).map(|i| {
                let disk = disk.clone();
                tokio::spawn(async move {
                    let (buf, done) = disk.read(Buffer::new(LEN), 0..LEN, (i * LEN) as u64).await;
                    done.expect("read");
                    assert!(buf.whole()[..LEN].iter().all(|&b| b == i as u8), "op {i}");
                })
            });
            for read in reads.collect::<Vec<_>>() {
                read.await.expect("read task");
            }
        }
    }
}
