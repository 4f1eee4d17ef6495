//! The baseline: the same sort in this one process and in memory (no shuffle, no store):
//! read every part, radix-sort all records in place, write the output parts.
//!
//! Its two buffers (the input's size each) are faulted in before the clock starts: fresh
//! memory is slow on some machines (this VM clears a page at about 1 GB/s), and the baseline
//! should show the sort's work at its best, not the kernel's. The time it took is reported
//! apart (`prepare_secs`).

use std::path::Path;
use std::time::Instant;

use crail_serializers::Fixed;
use rayon::prelude::*;
use serde::Serialize;

use crate::{Error, KEY, RECORD, Result, create_output, part_name, parts};

/// What the in-memory sort took.
#[derive(Debug, Clone, Serialize)]
pub struct LocalReport {
    /// Input bytes.
    pub bytes: u64,
    /// Seconds to fault its buffers in (not part of the sort's time).
    pub prepare_secs: f64,
    /// Seconds to read the input.
    pub read_secs: f64,
    /// Seconds to sort it.
    pub sort_secs: f64,
    /// Seconds to write the output.
    pub write_secs: f64,
}

impl LocalReport {
    /// The whole sort's seconds.
    pub fn secs(&self) -> f64 {
        self.read_secs + self.sort_secs + self.write_secs
    }
}

/// Sorts the parts of `input` into `output` (created; it must not exist), as many output
/// parts as input parts.
pub fn sort(input: &Path, output: &Path) -> Result<LocalReport> {
    let parts = parts(input)?;
    let bytes: u64 = parts.iter().map(|(_, size)| size).sum();
    let len = usize::try_from(bytes).map_err(|_| Error::Invalid("input too large".into()))?;
    create_output(output)?;

    let start = Instant::now();
    let buffer = |path: &Path| {
        let mut buf = crail_sorters::sort_buffer(len).map_err(|cause| Error::Io {
            path: path.to_owned(),
            cause,
        })?;
        // Touch every page, in parallel.
        buf.par_chunks_mut(1 << 20).for_each(|c| c.fill(1));
        Ok::<_, Error>(buf)
    };
    let mut data = buffer(input)?;
    let mut scratch = buffer(output)?;
    let prepare_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut pieces = Vec::new();
    let mut rest: &mut [u8] = &mut data[..len];
    for (_, size) in &parts {
        let (piece, tail) = rest.split_at_mut(*size as usize);
        pieces.push(piece);
        rest = tail;
    }
    pieces
        .par_iter_mut()
        .zip(&parts)
        .try_for_each(|(piece, (path, _))| {
            use std::io::Read;
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(piece))
                .map_err(|cause| Error::Io {
                    path: path.clone(),
                    cause,
                })
        })?;
    let read_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let format = Fixed::new(KEY, RECORD - KEY).map_err(|e| Error::Invalid(e.to_string()))?;
    crail_sorters::sort_fixed_in_place(
        &crail_sorters::Radix,
        &mut data[..len],
        &mut scratch[..len],
        &format,
    )
    .map_err(|e| Error::Invalid(e.to_string()))?;
    drop(scratch);
    let sort_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let records = len / RECORD;
    let count = parts.len();
    (0..count).into_par_iter().try_for_each(|i| {
        let from = records * i / count * RECORD;
        let to = records * (i + 1) / count * RECORD;
        let path = output.join(part_name(i));
        // Through the page cache: right after the scratch buffer is freed, its pages are the
        // cheapest memory there is, and the baseline should be at its best.
        std::fs::write(&path, &data[from..to]).map_err(|cause| Error::Io { path, cause })
    })?;
    let write_secs = start.elapsed().as_secs_f64();
    Ok(LocalReport {
        bytes,
        prepare_secs,
        read_secs,
        sort_secs,
        write_secs,
    })
}
