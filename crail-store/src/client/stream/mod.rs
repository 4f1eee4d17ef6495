//! Streams over files: [`FileWriter`] and [`FileReader`] (direct: they take and return
//! buffers and keep several block operations in flight), [`MultiReader`] (a multifile's
//! children as one stream), and tokio `AsyncWrite`/`AsyncRead` adapters for code that wants
//! plain byte streams. Blocking `std::io` code wraps the adapters in
//! `tokio_util::io::SyncIoBridge`.
//!
//! Every data-plane request covers at most one block (a buffer never straddles two), so a
//! request goes to exactly one datanode and the datanode never has to split it.

mod adapters;
mod reader;
mod writer;

pub use adapters::{AsyncBufferReader, AsyncFileWriter};
pub use reader::{FileReader, MultiReader};
pub use writer::FileWriter;
