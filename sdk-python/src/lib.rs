//! The `crail._crail` extension module: Python's face of `crail_sdk`.
//!
//! Every call that waits on the cluster releases the GIL and runs on one shared Tokio runtime.
//! Errors become exceptions of the `crail.CrailError` hierarchy, each with the layer's one-line
//! message. Partition reads hand out chunks that expose the received bytes through the buffer
//! protocol (`memoryview(chunk)`), without a copy.

use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use crail_sdk::{
    Config, Crail, Error, MapOutput, Shuffle, crail_broadcast, crail_shuffle, crail_store,
};
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

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
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| CrailError::new_err(format!("cannot start the I/O runtime: {e}")))
}

/// Runs `work` on the runtime with the GIL released.
fn block<T: Send>(py: Python<'_>, work: impl Future<Output = T> + Send) -> PyResult<T> {
    let rt = runtime()?;
    Ok(py.allow_threads(|| rt.block_on(work)))
}

/// The exception of `e`'s kind.
fn raise(e: Error) -> PyErr {
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

/// A connection to crail on behalf of one application, from one node.
#[pyclass(module = "crail", frozen)]
struct Client {
    crail: Mutex<Option<Crail>>,
}

impl Client {
    fn get(&self) -> PyResult<Crail> {
        self.crail
            .lock()
            .map_err(|_| CrailError::new_err("client state poisoned"))?
            .clone()
            .ok_or_else(|| ClosedError::new_err("the client is closed"))
    }
}

#[pymethods]
impl Client {
    /// Connects application `app` to the cluster of the client configuration file `config`
    /// (what `crail cluster --config-out FILE` writes), as an engine on node `host` (its
    /// address; default: the configuration's, else 127.0.0.1).
    #[staticmethod]
    #[pyo3(signature = (config, app, host=None))]
    fn connect(py: Python<'_>, config: &str, app: &str, host: Option<&str>) -> PyResult<Self> {
        let config = Config::from_file(config).map_err(|e| raise(e.into()))?;
        let host = host
            .map(|h| {
                h.parse::<std::net::IpAddr>().map_err(|_| {
                    InvalidArgument::new_err(format!("host {h:?} is not an IP address"))
                })
            })
            .transpose()?;
        let app = app.to_owned();
        let crail = block(py, async move {
            match host {
                Some(host) => Crail::connect_on(&config.client, host, &app).await,
                None => Crail::connect(&config.client, &app).await,
            }
        })?
        .map_err(raise)?;
        Ok(Self {
            crail: Mutex::new(Some(crail)),
        })
    }

    /// The application.
    #[getter]
    fn app(&self) -> PyResult<String> {
        Ok(self.get()?.app().to_owned())
    }

    /// The node the client is on.
    #[getter]
    fn host(&self) -> PyResult<String> {
        Ok(self.get()?.host().to_owned())
    }

    /// Names in directory `path` of the store.
    fn list(&self, py: Python<'_>, path: &str) -> PyResult<Vec<String>> {
        let crail = self.get()?;
        let path = path.to_owned();
        let entries = block(py, async move { crail.store().list(&path).await })?
            .map_err(|e| raise(e.into()))?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    /// Writes broadcast variable `id` (any bytes-like object); returns its size.
    fn put_broadcast(&self, py: Python<'_>, id: &str, value: PyBuffer<u8>) -> PyResult<u64> {
        let crail = self.get()?;
        let (id, value) = (id.to_owned(), value.to_vec(py)?);
        block(py, async move { crail.put_broadcast(&id, &value).await })?.map_err(raise)
    }

    /// Reads broadcast variable `id` whole (from the node's copy).
    fn get_broadcast<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyBytes>> {
        let crail = self.get()?;
        let id = id.to_owned();
        let value = block(py, async move { crail.read_broadcast(&id).await })?.map_err(raise)?;
        Ok(PyBytes::new(py, &value))
    }

    /// Destroys broadcast variable `id` everywhere.
    fn destroy_broadcast(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let crail = self.get()?;
        let id = id.to_owned();
        block(py, async move { crail.destroy_broadcast(&id).await })?.map_err(raise)
    }

    /// Registers shuffle `shuffle` of the application: `maps` map tasks, `partitions`
    /// partitions of records in the format `serializer` names (`kv`, `fixed:10:90`, ...).
    #[pyo3(signature = (shuffle, maps, partitions, serializer="kv"))]
    fn register_shuffle(
        &self,
        py: Python<'_>,
        shuffle: u32,
        maps: u32,
        partitions: u32,
        serializer: &str,
    ) -> PyResult<PyShuffle> {
        let crail = self.get()?;
        let serializer = serializer.to_owned();
        let shuffle = block(py, async move {
            crail
                .register_shuffle(shuffle, maps, partitions, &serializer)
                .await
        })?
        .map_err(raise)?;
        Ok(PyShuffle { shuffle })
    }

    /// A shuffle of the application registered elsewhere.
    fn shuffle(&self, py: Python<'_>, shuffle: u32) -> PyResult<PyShuffle> {
        let crail = self.get()?;
        let shuffle = block(py, async move { crail.shuffle(shuffle).await })?.map_err(raise)?;
        Ok(PyShuffle { shuffle })
    }

    /// Removes shuffle `shuffle` and its data.
    fn unregister_shuffle(&self, py: Python<'_>, shuffle: u32) -> PyResult<()> {
        let crail = self.get()?;
        block(py, async move { crail.unregister_shuffle(shuffle).await })?.map_err(raise)
    }

    /// The application is over: removes all of its shuffles and broadcast variables.
    fn end_application(&self, py: Python<'_>) -> PyResult<()> {
        let crail = self.get()?;
        block(py, async move { crail.end_application().await })?.map_err(raise)
    }

    /// Closes the client; later calls raise ClosedError.
    fn close(&self) -> PyResult<()> {
        self.crail
            .lock()
            .map_err(|_| CrailError::new_err("client state poisoned"))?
            .take();
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _ty: Option<PyObject>,
        _value: Option<PyObject>,
        _tb: Option<PyObject>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }
}

/// A registered shuffle.
#[pyclass(module = "crail", name = "Shuffle", frozen)]
struct PyShuffle {
    shuffle: Shuffle,
}

#[pymethods]
impl PyShuffle {
    /// Map tasks.
    #[getter]
    fn maps(&self) -> u32 {
        self.shuffle.maps()
    }

    /// Partitions.
    #[getter]
    fn partitions(&self) -> u32 {
        self.shuffle.partitions()
    }

    /// The output of attempt `attempt` of map `map`.
    #[pyo3(signature = (map, attempt=0))]
    fn map_writer(&self, py: Python<'_>, map: u32, attempt: u64) -> PyResult<MapWriter> {
        let shuffle = self.shuffle.clone();
        let out =
            block(py, async move { shuffle.map_writer(map, attempt).await })?.map_err(raise)?;
        Ok(MapWriter {
            out: Mutex::new(Some(out)),
        })
    }

    /// The chunks of partitions `start..end` (every map's), each as it arrives: iterate and
    /// take `memoryview(chunk)` (no copy) or `bytes(chunk)`.
    #[pyo3(signature = (start, end=None))]
    fn read(&self, py: Python<'_>, start: u32, end: Option<u32>) -> PyResult<PartitionReader> {
        let end = end.unwrap_or(start + 1);
        if end <= start {
            return Err(InvalidArgument::new_err(format!(
                "an empty partition range {start}..{end}"
            )));
        }
        let shuffle = self.shuffle.clone();
        let reader =
            block(py, async move { shuffle.read_chunks(start..end).await })?.map_err(raise)?;
        Ok(PartitionReader {
            reader: tokio::sync::Mutex::new(reader),
        })
    }
}

/// A map task's output; nothing is visible before `commit()`.
#[pyclass(module = "crail", frozen)]
struct MapWriter {
    out: Mutex<Option<MapOutput>>,
}

impl MapWriter {
    fn take(&self) -> PyResult<MapOutput> {
        self.out
            .lock()
            .map_err(|_| CrailError::new_err("writer state poisoned"))?
            .take()
            .ok_or_else(|| ClosedError::new_err("the map writer was committed or aborted"))
    }

    fn put(&self, out: MapOutput) -> PyResult<()> {
        *self
            .out
            .lock()
            .map_err(|_| CrailError::new_err("writer state poisoned"))? = Some(out);
        Ok(())
    }
}

#[pymethods]
impl MapWriter {
    /// Appends `data` (any object with the buffer protocol holding bytes: bytes, bytearray,
    /// memoryview, a uint8 numpy array; whole records of the shuffle's serializer) to
    /// `partition`.
    fn write(&self, py: Python<'_>, partition: u32, data: PyBuffer<u8>) -> PyResult<()> {
        let data = data.to_vec(py)?;
        let mut out = self.take()?;
        let (out, result) = block(py, async move {
            let result = out.write_serialized(partition, &data).await;
            (out, result)
        })?;
        self.put(out)?;
        result.map_err(raise)
    }

    /// Appends one record (key, value) to `partition`, encoded by the shuffle's serializer.
    fn write_record(
        &self,
        py: Python<'_>,
        partition: u32,
        key: PyBuffer<u8>,
        value: PyBuffer<u8>,
    ) -> PyResult<()> {
        let (key, value) = (key.to_vec(py)?, value.to_vec(py)?);
        let mut out = self.take()?;
        let (out, result) = block(py, async move {
            let result = out.write(partition, &key, &value).await;
            (out, result)
        })?;
        self.put(out)?;
        result.map_err(raise)
    }

    /// Makes the output readable; returns the bytes written to each partition.
    fn commit(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        let out = self.take()?;
        let status = block(py, async move { out.commit().await })?.map_err(raise)?;
        Ok(status.bytes)
    }

    /// Gives the output up.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let out = self.take()?;
        block(py, async move { out.abort().await })
    }
}

/// Chunks of a partition read, in arrival order.
#[pyclass(module = "crail")]
struct PartitionReader {
    reader: tokio::sync::Mutex<crail_shuffle::PartitionReader>,
}

#[pymethods]
impl PartitionReader {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Chunk>> {
        let next = block(py, async { self.reader.lock().await.next_chunk().await })?;
        match next {
            Ok(Some(chunk)) => Ok(Some(Chunk {
                partition: chunk.partition,
                map: chunk.map,
                data: chunk.data,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(raise(e.into())),
        }
    }
}

/// Bytes of one map's output for one partition. Supports the buffer protocol.
#[pyclass(module = "crail", frozen)]
struct Chunk {
    /// The partition.
    #[pyo3(get)]
    partition: u32,
    /// The map that wrote it.
    #[pyo3(get)]
    map: u32,
    data: Bytes,
}

#[pymethods]
impl Chunk {
    fn __len__(&self) -> usize {
        self.data.len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }

    /// Exposes the bytes read-only, without a copy (`memoryview(chunk)`).
    #[allow(unsafe_code)]
    unsafe fn __getbuffer__(
        slf: PyRef<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        if flags & pyo3::ffi::PyBUF_WRITABLE != 0 {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "a chunk is read-only",
            ));
        }
        let data = slf.data.as_ptr() as *mut std::os::raw::c_void;
        let len = slf.data.len() as pyo3::ffi::Py_ssize_t;
        // SAFETY: `view` is the buffer the interpreter asks us to fill. FillInfo takes a
        // reference to the chunk (released with the view), which keeps its bytes, immutable
        // `Bytes`, alive and in place; the view is read-only.
        let filled =
            unsafe { pyo3::ffi::PyBuffer_FillInfo(view, slf.as_ptr(), data, len, 1, flags) };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }
}

/// The module.
#[pymodule]
fn _crail(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<PyShuffle>()?;
    m.add_class::<MapWriter>()?;
    m.add_class::<PartitionReader>()?;
    m.add_class::<Chunk>()?;
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
