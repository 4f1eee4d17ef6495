//! `crail.Client`: an application's connection, from one node: the store, broadcast
//! variables, shuffles.

use std::sync::Mutex;

use crail_sdk::crail_store::CreateOptions;
use crail_sdk::{Config, Crail, crail_broadcast, crail_store};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::buffers::{Bytesish, borrow};
use crate::shuffle::PyShuffle;
use crate::{ClosedError, CrailError, InvalidArgument, block, raise};

/// Runs a store operation with the GIL released.
fn store_op<T: Send>(
    py: Python<'_>,
    work: impl Future<Output = crail_store::Result<T>> + Send,
) -> PyResult<T> {
    block(py, work)?.map_err(|e| raise(e.into()))
}

/// A connection to crail on behalf of one application, from one node.
#[pyclass(module = "crail", frozen)]
pub(crate) struct Client {
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

    /// Names in directory `path` of the store, in name order.
    fn list(&self, py: Python<'_>, path: &str) -> PyResult<Vec<String>> {
        let crail = self.get()?;
        let entries = store_op(py, async { crail.store().list(path).await })?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    /// Writes `data` (any bytes-like object) as a new file at `path`; returns its size.
    fn write_file(&self, py: Python<'_>, path: &str, data: Bytesish) -> PyResult<u64> {
        let data = borrow(py, &data)?;
        let crail = self.get()?;
        let stat = store_op(py, async {
            let options = CreateOptions::default();
            crail.store().write_file(path, &data, &options).await
        })?;
        Ok(stat.size)
    }

    /// The whole content of the file at `path`.
    fn read_file<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyBytes>> {
        let crail = self.get()?;
        let data = store_op(py, async {
            crail
                .store()
                .lookup(path)
                .await?
                .into_file()?
                .read_to_end()
                .await
        })?;
        Ok(PyBytes::new(py, &data))
    }

    /// Type (`file`, `directory`, `multifile`, `table`, `keyvalue`), size, blocks, children
    /// and times (seconds since the epoch) of the node at `path`, as a dict.
    fn stat<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyDict>> {
        let crail = self.get()?;
        let stat = store_op(py, async { crail.store().stat(path).await })?;
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let dict = PyDict::new(py);
        dict.set_item("type", stat.node_type.to_string())?;
        dict.set_item("size", stat.size)?;
        dict.set_item("blocks", stat.block_count)?;
        dict.set_item("children", stat.children)?;
        dict.set_item("created", secs(stat.created))?;
        dict.set_item("modified", secs(stat.modified))?;
        Ok(dict)
    }

    /// Whether a node is at `path`.
    fn exists(&self, py: Python<'_>, path: &str) -> PyResult<bool> {
        let crail = self.get()?;
        match block(py, async { crail.store().stat(path).await })? {
            Ok(_) => Ok(true),
            Err(crail_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(raise(e.into())),
        }
    }

    /// Makes directory `path` (its parent must exist).
    fn mkdir(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        let crail = self.get()?;
        store_op(py, async {
            let options = CreateOptions::default();
            crail.store().create_dir(path, &options).await
        })?;
        Ok(())
    }

    /// Deletes the node at `path`; a directory with children only when `recursive`.
    #[pyo3(signature = (path, recursive=false))]
    fn delete(&self, py: Python<'_>, path: &str, recursive: bool) -> PyResult<()> {
        let crail = self.get()?;
        store_op(py, async { crail.store().delete(path, recursive).await })
    }

    /// Moves `src` to `dst` atomically; `dst` must not exist.
    fn rename(&self, py: Python<'_>, src: &str, dst: &str) -> PyResult<()> {
        let crail = self.get()?;
        store_op(py, async { crail.store().rename(src, dst).await })
    }

    /// Writes broadcast variable `id` (any bytes-like object); returns its size.
    fn put_broadcast(&self, py: Python<'_>, id: &str, value: Bytesish) -> PyResult<u64> {
        let crail = self.get()?;
        let (id, value) = (id.to_owned(), borrow(py, &value)?);
        block(py, async move { crail.put_broadcast(&id, &value).await })?.map_err(raise)
    }

    /// Reads broadcast variable `id` whole (from the node's copy).
    fn get_broadcast<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyBytes>> {
        let crail = self.get()?;
        let id = id.to_owned();
        let value = block(py, async move { crail.read_broadcast(&id).await })?.map_err(raise)?;
        Ok(PyBytes::new(py, &value))
    }

    /// How many times this client's node fetched broadcast variable `id` from the store (once,
    /// however many readers it had, unless its copy was dropped in between).
    fn broadcast_fetches(&self, py: Python<'_>, id: &str) -> PyResult<u64> {
        let crail = self.get()?;
        let var = crail_broadcast::VarId::new(crail.app(), id);
        block(py, async move {
            crail.broadcast_client().fetches_of(&var).await
        })?
        .map_err(|e| raise(e.into()))
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
        Ok(PyShuffle::new(shuffle))
    }

    /// A shuffle of the application registered elsewhere.
    fn shuffle(&self, py: Python<'_>, shuffle: u32) -> PyResult<PyShuffle> {
        let crail = self.get()?;
        let shuffle = block(py, async move { crail.shuffle(shuffle).await })?.map_err(raise)?;
        Ok(PyShuffle::new(shuffle))
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
