//! The `crail._crail` extension module: Python's face of `crail_sdk`.
//!
//! Every call that waits on the cluster releases the GIL and runs on one shared Tokio runtime.
//! Errors become exceptions of the `crail.CrailError` hierarchy, each with the layer's one-line
//! message. Partition reads hand out chunks that expose the received bytes through the buffer
//! protocol (`memoryview(chunk)`), without a copy.

mod buffers;
mod client;
mod shuffle;

use crail_sdk::{Error, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(crail, CrailError, PyException, "Any error of crail.");
create_exception!(
    crail,
    NotFound,
    CrailError,
    "No such path, shuffle or variable."
);
create_exception!(crail, AlreadyExists, CrailError, "It exists already.");
create_exception!(crail, StoreFull, CrailError, "The store has no room left.");
create_exception!(
    crail,
    FetchFailed,
    CrailError,
    "Stored data could not be read (a node died): run its writers again."
);
create_exception!(
    crail,
    InvalidArgument,
    CrailError,
    "A bad name, range or record."
);
create_exception!(
    crail,
    ServiceError,
    CrailError,
    "A node's service is unreachable."
);
create_exception!(
    crail,
    ClosedError,
    CrailError,
    "The object was closed or used up."
);

/// The runtime every call runs on.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    crail_sdk::shared_runtime().map_err(CrailError::new_err)
}

/// Runs `work` on the runtime with the GIL released.
pub(crate) fn block<T: Send>(py: Python<'_>, work: impl Future<Output = T> + Send) -> PyResult<T> {
    let rt = runtime()?;
    Ok(py.allow_threads(|| rt.block_on(work)))
}

/// The exception of `e`'s kind.
pub(crate) fn raise(e: Error) -> PyErr {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::NotFound => NotFound::new_err(text),
        ErrorKind::AlreadyExists => AlreadyExists::new_err(text),
        ErrorKind::StoreFull => StoreFull::new_err(text),
        ErrorKind::FetchFailed => FetchFailed::new_err(text),
        ErrorKind::InvalidArgument => InvalidArgument::new_err(text),
        ErrorKind::Unreachable | ErrorKind::NodeLost => ServiceError::new_err(text),
        ErrorKind::Other => CrailError::new_err(text),
    }
}

/// The module.
#[pymodule]
fn _crail(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<client::Client>()?;
    m.add_class::<shuffle::PyShuffle>()?;
    m.add_class::<shuffle::MapWriter>()?;
    m.add_class::<shuffle::RangePartitioner>()?;
    m.add_class::<shuffle::PartitionReader>()?;
    m.add_class::<shuffle::RecordReader>()?;
    m.add_class::<buffers::Chunk>()?;
    m.add_class::<buffers::Buffer>()?;
    m.add("CrailError", py.get_type::<CrailError>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("StoreFull", py.get_type::<StoreFull>())?;
    m.add("FetchFailed", py.get_type::<FetchFailed>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("ServiceError", py.get_type::<ServiceError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    Ok(())
}
