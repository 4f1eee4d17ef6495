//! The `crail._crail` extension module: Python's face of `crail_sdk`.
//!
//! Every call that waits on the cluster releases the GIL and runs on one shared Tokio runtime.
//! Errors become exceptions of the `crail.CrailError` hierarchy, each with the layer's one-line
//! message. Partition reads hand out chunks that expose the received bytes through the buffer
//! protocol (`memoryview(chunk)`), without a copy.

mod buffers;
mod client;
mod shuffle;

use crail_sdk::{Error, crail_broadcast, crail_shuffle, crail_store};
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
    use crail_broadcast::Error as B;
    use crail_shuffle::Error as S;
    use crail_store::Error as T;
    let text = e.to_string();
    let store = |e: &T| match e {
        T::NotFound { .. } | T::UnknownFile { .. } => NotFound::new_err(text.clone()),
        T::AlreadyExists { .. } => AlreadyExists::new_err(text.clone()),
        T::StoreFull { .. } => StoreFull::new_err(text.clone()),
        T::LostBlocks { .. } | T::ChecksumMismatch { .. } => FetchFailed::new_err(text.clone()),
        T::InvalidPath { .. } | T::WrongType { .. } | T::NotAContainer { .. } => {
            InvalidArgument::new_err(text.clone())
        }
        T::Connect { .. } | T::ConnectionLost { .. } | T::Timeout { .. } => {
            ServiceError::new_err(text.clone())
        }
        _ => CrailError::new_err(text.clone()),
    };
    match &e {
        Error::Store(s) | Error::Shuffle(S::Store(s)) | Error::Broadcast(B::Store(s)) => store(s),
        Error::Shuffle(S::UnknownShuffle { .. }) | Error::Broadcast(B::UnknownVariable { .. }) => {
            NotFound::new_err(text)
        }
        Error::Shuffle(S::AlreadyRegistered { .. } | S::AlreadyCommitted { .. })
        | Error::Broadcast(B::AlreadyExists { .. }) => AlreadyExists::new_err(text),
        Error::Broadcast(B::StoreFull { .. }) => StoreFull::new_err(text),
        Error::Shuffle(S::FetchFailed { .. }) | Error::Broadcast(B::Unreadable { .. }) => {
            FetchFailed::new_err(text)
        }
        Error::Shuffle(
            S::Invalid { .. } | S::PartitionOutOfRange { .. } | S::MapOutOfRange { .. },
        )
        | Error::Broadcast(B::Invalid { .. })
        | Error::Records(_) => InvalidArgument::new_err(text),
        Error::Shuffle(S::Service { .. }) | Error::Broadcast(B::Service { .. }) => {
            ServiceError::new_err(text)
        }
        _ => CrailError::new_err(text),
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
