//! TeraSort on crail-rs, the `terasort` binary's library.
//!
//! - [`gensort`]: input byte for byte as the sort benchmark's `gensort` writes it (binary
//!   mode), in parts generated in parallel ([`generate`]).
//! - [`sort`]: a range partitioner from sampled keys, map tasks writing each part's records
//!   to their partitions through the shuffle service (`fixed:10:90`), reduce tasks reading a
//!   partition each, radix-sorting it and writing an output part.
//! - [`validate`]: what `valsort` checks.
//! - [`local`]: the same sort in one process and in memory, the baseline.
//! - [`run`]: all of it on a cluster (an embedded one, or a running one), timed and charted.
//!
//! Parts are files named `part-00000`, `part-00001`, ... of whole 100-byte records.

pub mod chart;
pub mod gensort;
pub mod local;
pub mod partition;
pub mod run;
pub mod sort;
pub mod validate;

use std::path::{Path, PathBuf};

pub use gensort::generate;
pub use validate::{Summary, validate};

/// Bytes per record.
pub const RECORD: usize = 100;
/// Bytes of a record's key.
pub const KEY: usize = 10;
/// The records' serializer in the shuffle.
pub const SERIALIZER: &str = "fixed:10:90";

/// What can go wrong, typed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// An input directory without parts.
    #[error("{}: no input parts (files named part-*)", dir.display())]
    NoParts {
        /// The directory.
        dir: PathBuf,
    },
    /// A part that does not hold whole records.
    #[error("{}: {size} bytes is not whole {RECORD}-byte records (truncated?)", path.display())]
    Truncated {
        /// The part.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// An output directory that is already there.
    #[error("{}: the output directory exists; remove it or name another", path.display())]
    OutputExists {
        /// The directory.
        path: PathBuf,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The cluster: the store, the shuffle service, a node.
    #[error(transparent)]
    Crail(#[from] crail_sdk::Error),
    /// The cluster failed otherwise (a node died, it could not start).
    #[error("{0}")]
    Cluster(String),
}

/// The result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The parts of `dir` in name order, with their sizes; a part of partial records is
/// [`Error::Truncated`].
pub fn parts(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let io = |cause| Error::Io {
        path: dir.to_owned(),
        cause,
    };
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("part-") {
            continue;
        }
        let path = entry.path();
        let size = entry
            .metadata()
            .map_err(|cause| Error::Io {
                path: path.clone(),
                cause,
            })?
            .len();
        if size % RECORD as u64 != 0 {
            return Err(Error::Truncated { path, size });
        }
        parts.push((path, size));
    }
    if parts.is_empty() {
        return Err(Error::NoParts {
            dir: dir.to_owned(),
        });
    }
    parts.sort();
    Ok(parts)
}

/// The name of part `i`.
pub fn part_name(i: usize) -> String {
    format!("part-{i:05}")
}

/// Writes `data` to the new file `path` (it must not exist), around the page cache where the
/// file system allows (`O_DIRECT`: from `data` itself when it starts on a 4 KiB boundary, as
/// a store [`Buffer`](crail_sdk::crail_store::Buffer) does, else through an aligned bounce
/// buffer; the last partial 4 KiB written normally). Why: a sort's output is not read back soon, and page cache is fresh
/// memory, which costs more to fill than the disk takes to write (on this machine's VM,
/// about 0.7 GB/s against 1.5 GB/s).
pub fn write_part(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const ALIGN: usize = 4096;
    const BOUNCE: usize = 8 << 20;
    thread_local! {
        static BOUNCE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let whole = data.len() / ALIGN * ALIGN;
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    let mut file = match direct {
        Ok(file) => file,
        // No O_DIRECT here (tmpfs): through the page cache.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            return file.write_all(data);
        }
        Err(e) => return Err(e),
    };
    if data.as_ptr().align_offset(ALIGN) == 0 {
        // Aligned already (a store buffer): written as it lies.
        file.write_all(&data[..whole])?;
    } else {
        BOUNCE_BUF.with_borrow_mut(|buf| {
            if buf.len() < BOUNCE + ALIGN {
                buf.resize(BOUNCE + ALIGN, 0);
            }
            let at = buf.as_ptr().align_offset(ALIGN);
            let bounce = &mut buf[at..at + BOUNCE];
            for piece in data[..whole].chunks(BOUNCE) {
                bounce[..piece.len()].copy_from_slice(piece);
                file.write_all(&bounce[..piece.len()])?;
            }
            Ok::<_, std::io::Error>(())
        })?;
    }
    drop(file);
    if whole < data.len() {
        let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
        file.write_all(&data[whole..])?;
    }
    Ok(())
}

/// Creates output directory `dir`, which must not exist.
pub fn create_output(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::OutputExists {
            path: dir.to_owned(),
        }),
        Err(cause) => Err(Error::Io {
            path: dir.to_owned(),
            cause,
        }),
    }
}
