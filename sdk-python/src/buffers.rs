//! Bytes in and out of Python without copies: callers' buffers borrowed while a call runs,
//! results handed out through the buffer protocol, and a pool of large buffers that a worker
//! process reuses from task to task (fresh memory costs the kernel a page clear per 4 KiB).

use std::borrow::Cow;
use std::sync::Mutex;

use bytes::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bytes of buffers the pool keeps for reuse, at most.
const POOL_BYTES: usize = 512 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer from the pool (empty, with the capacity of an earlier one), the smallest that
/// holds `len` bytes if any does.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let Ok(mut pool) = POOL.lock() else {
        return Vec::new();
    };
    let fits = pool
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    let largest = || {
        pool.iter()
            .enumerate()
            .max_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i)
    };
    match fits.or_else(largest) {
        Some(i) => {
            let mut buf = pool.swap_remove(i);
            buf.clear();
            buf
        }
        None => Vec::new(),
    }
}

/// Gives `buf` back for reuse (dropped if the pool is full).
pub(crate) fn give(buf: Vec<u8>) {
    if buf.capacity() == 0 {
        return;
    }
    let Ok(mut pool) = POOL.lock() else {
        return;
    };
    let held: usize = pool.iter().map(Vec::capacity).sum();
    if held + buf.capacity() <= POOL_BYTES {
        pool.push(buf);
    }
}

/// A pooled buffer as immutable bytes: back to the pool when the last view of it goes.
pub(crate) fn freeze(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(buf))
}

struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// A caller's bytes: any object with the buffer protocol and one-byte items (`bytes`,
/// `bytearray`, `memoryview`, a `uint8` or `int8` numpy array, a `pyarrow.Buffer`).
pub(crate) struct Bytesish(PyBuffer<u8>);

impl<'py> FromPyObject<'py> for Bytesish {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(buf) = PyBuffer::<u8>::get(ob) {
            return Ok(Self(buf));
        }
        // Other one-byte formats ('b', 'c'): viewed as unsigned bytes.
        let view = pyo3::types::PyMemoryView::from(ob)?;
        let itemsize: usize = view.getattr("itemsize")?.extract()?;
        if itemsize != 1 {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "expected bytes (items of one byte), got items of {itemsize} bytes; \
                 view them as uint8 first"
            )));
        }
        Ok(Self(PyBuffer::get(&view.call_method1("cast", ("B",))?)?))
    }
}

/// The bytes of a caller's buffer: borrowed when contiguous (the caller must not change them
/// while the call runs), else copied.
pub(crate) fn borrow<'a>(py: Python<'_>, buf: &'a Bytesish) -> PyResult<Cow<'a, [u8]>> {
    let buf = &buf.0;
    if !buf.is_c_contiguous() {
        return Ok(Cow::Owned(buf.to_vec(py)?));
    }
    #[allow(unsafe_code)]
    // SAFETY: the buffer is C-contiguous, `len_bytes` long at `buf_ptr`, and stays valid and in
    // place while `buf` (the exporter's Py_buffer) is held, which the borrow's lifetime ties
    // us to. It is only read.
    let bytes = unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) };
    Ok(Cow::Borrowed(bytes))
}

/// Fills `view` to expose `data`, read-only, for as long as `owner` (which holds `data`)
/// lives: the view holds a reference to it.
#[allow(unsafe_code)]
fn expose(
    py: Python<'_>,
    owner: *mut pyo3::ffi::PyObject,
    data: &Bytes,
    view: *mut pyo3::ffi::Py_buffer,
    flags: std::os::raw::c_int,
) -> PyResult<()> {
    if flags & pyo3::ffi::PyBUF_WRITABLE != 0 {
        return Err(pyo3::exceptions::PyBufferError::new_err(
            "crail's buffers are read-only",
        ));
    }
    let ptr = data.as_ptr() as *mut std::os::raw::c_void;
    let len = data.len() as pyo3::ffi::Py_ssize_t;
    // SAFETY: `view` is the buffer the interpreter asks us to fill. FillInfo takes a reference
    // to `owner` (released with the view), which keeps `data`, immutable `Bytes`, alive and in
    // place; the view is read-only.
    let filled = unsafe { pyo3::ffi::PyBuffer_FillInfo(view, owner, ptr, len, 1, flags) };
    if filled == -1 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// Read-only bytes crail made (a sorted partition, a column of it). Supports the buffer
/// protocol: `memoryview(buf)`, `numpy.frombuffer(buf, ...)`, `pyarrow.py_buffer(buf)`.
#[pyclass(module = "crail", frozen, subclass)]
pub(crate) struct Buffer {
    pub(crate) data: Bytes,
}

#[pymethods]
impl Buffer {
    fn __len__(&self) -> usize {
        self.data.len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }

    fn __repr__(&self) -> String {
        format!("Buffer({} bytes)", self.data.len())
    }

    /// Exposes the bytes read-only, without a copy.
    #[allow(unsafe_code)]
    unsafe fn __getbuffer__(
        slf: PyRef<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        expose(slf.py(), slf.as_ptr(), &slf.data, view, flags)
    }
}

/// Bytes of one map's output for one partition: a `Buffer` that knows where it came from.
#[pyclass(module = "crail", frozen, extends = Buffer)]
pub(crate) struct Chunk {
    /// The partition.
    #[pyo3(get)]
    partition: u32,
    /// The map that wrote it.
    #[pyo3(get)]
    map: u32,
}

impl Chunk {
    /// A chunk of `data` from map `map` for `partition`.
    pub(crate) fn new(
        py: Python<'_>,
        partition: u32,
        map: u32,
        data: Bytes,
    ) -> PyResult<Py<Chunk>> {
        let init = PyClassInitializer::from(Buffer { data }).add_subclass(Chunk { partition, map });
        Py::new(py, init)
    }
}

#[pymethods]
impl Chunk {
    fn __repr__(slf: PyRef<'_, Self>) -> String {
        format!(
            "Chunk(partition={}, map={}, {} bytes)",
            slf.partition,
            slf.map,
            slf.as_super().data.len()
        )
    }
}
