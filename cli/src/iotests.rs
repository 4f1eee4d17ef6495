//! What the two I/O benchmarks share: the tests `crail iobench -t` names (metadata tests run
//! in `iobench`, data tests in `databench`) and the latency quantile both report.

use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub(crate) enum Test {
    /// Create empty files in a fresh directory.
    #[value(name = "createFile")]
    #[serde(rename = "createFile")]
    CreateFile,
    /// Look up existing files.
    #[value(name = "lookupFile")]
    #[serde(rename = "lookupFile")]
    LookupFile,
    /// Delete files created during setup.
    #[value(name = "deleteFile")]
    #[serde(rename = "deleteFile")]
    DeleteFile,
    /// List a directory of `--entries` files (one page).
    #[value(name = "listDir")]
    #[serde(rename = "listDir")]
    ListDir,
    /// Write a file of `-s` bytes in `-b` byte buffers, one at a time, `-k` times.
    #[value(name = "write")]
    #[serde(rename = "write")]
    Write,
    /// As write, with `-o` buffers in flight.
    #[value(name = "writeAsync")]
    #[serde(rename = "writeAsync")]
    WriteAsync,
    /// Read a file of `-s` bytes in `-b` byte buffers, one at a time, `-k` times.
    #[value(name = "read")]
    #[serde(rename = "read")]
    Read,
    /// As read, with `-o` buffers in flight.
    #[value(name = "readAsync")]
    #[serde(rename = "readAsync")]
    ReadAsync,
    /// `-k` reads of `-b` bytes at random aligned offsets of a file of `-s` bytes, `-o` at once.
    #[value(name = "readRandom")]
    #[serde(rename = "readRandom")]
    ReadRandom,
}

/// The `q` quantile of sorted `latencies` (0 if there are none).
pub(crate) fn quantile(latencies: &[f64], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[i]
}
