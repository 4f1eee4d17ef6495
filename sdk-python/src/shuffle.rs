//! Shuffles from Python: map writers (serialized bytes, single records, or records split by
//! key range in one call), partition reads as chunks, records, or one sorted buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crail_sdk::crail_serializers::{Fixed, Framing};
use crail_sdk::{MapOutput, Shuffle, crail_shuffle, crail_sorters};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::buffers::{self, Buffer, Bytesish, Chunk, borrow};
use crate::{ClosedError, CrailError, InvalidArgument, block, raise};

/// Records a record read fetches per trip to the runtime.
const RECORD_BATCH: usize = 4096;

/// A registered shuffle.
#[pyclass(module = "crail", name = "Shuffle", frozen)]
pub(crate) struct PyShuffle {
    shuffle: Shuffle,
}

impl PyShuffle {
    pub(crate) fn new(shuffle: Shuffle) -> Self {
        Self { shuffle }
    }

    fn range(&self, start: u32, end: Option<u32>) -> PyResult<std::ops::Range<u32>> {
        let end = end.unwrap_or(start.saturating_add(1));
        if end <= start || end > self.shuffle.partitions() {
            return Err(InvalidArgument::new_err(format!(
                "partitions {start}..{end} are not a range of the shuffle's {}",
                self.shuffle.partitions()
            )));
        }
        Ok(start..end)
    }

    /// The shuffle's fixed-length format, for the calls that need one.
    fn fixed(&self, call: &str) -> PyResult<Fixed> {
        fixed_format(&self.shuffle, call)
    }
}

fn fixed_format(shuffle: &Shuffle, call: &str) -> PyResult<Fixed> {
    let serializer = shuffle.serializer();
    match (serializer.format().fixed_lens(), serializer.framing()) {
        (Some((key, value)), Framing::None) => Fixed::new(key, value).map_err(|e| raise(e.into())),
        _ => Err(InvalidArgument::new_err(format!(
            "{call} needs fixed-length records without frames (serializer fixed:KEY:VALUE), \
             not {}",
            serializer.name()
        ))),
    }
}

#[pymethods]
impl PyShuffle {
    /// The shuffle's number in its application.
    #[getter]
    fn id(&self) -> u32 {
        self.shuffle.id().shuffle
    }

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

    /// The serializer's name.
    #[getter]
    fn serializer(&self) -> String {
        self.shuffle.serializer().name()
    }

    fn __repr__(&self) -> String {
        format!(
            "Shuffle({}, maps={}, partitions={}, serializer={:?})",
            self.shuffle.id(),
            self.shuffle.maps(),
            self.shuffle.partitions(),
            self.shuffle.serializer().name()
        )
    }

    /// The output of attempt `attempt` of map `map`.
    #[pyo3(signature = (map, attempt=0))]
    fn map_writer(&self, py: Python<'_>, map: u32, attempt: u64) -> PyResult<MapWriter> {
        let shuffle = self.shuffle.clone();
        let out = block(py, async { shuffle.map_writer(map, attempt).await })?.map_err(raise)?;
        Ok(MapWriter {
            out: Mutex::new(Some(out)),
            shuffle: self.shuffle.clone(),
        })
    }

    /// The chunks of partitions `start..end` (every map's), each as it arrives: iterate and
    /// take `memoryview(chunk)` (no copy) or `bytes(chunk)`.
    #[pyo3(signature = (start, end=None))]
    fn read(&self, py: Python<'_>, start: u32, end: Option<u32>) -> PyResult<PartitionReader> {
        let range = self.range(start, end)?;
        let shuffle = self.shuffle.clone();
        let reader = block(py, async { shuffle.read_chunks(range).await })?.map_err(raise)?;
        Ok(PartitionReader {
            reader: tokio::sync::Mutex::new(reader),
        })
    }

    /// The records of partitions `start..end` as `(key, value)` bytes pairs: as they come,
    /// or in key order by the sorter `sorted` names (`radix`, `radsort`, `comparison`).
    #[pyo3(signature = (start, end=None, sorted=None))]
    fn records(
        &self,
        py: Python<'_>,
        start: u32,
        end: Option<u32>,
        sorted: Option<&str>,
    ) -> PyResult<RecordReader> {
        let range = self.range(start, end)?;
        let mut options = self.shuffle.reader(range);
        if let Some(sorter) = sorted {
            options = options.sorted(sorter);
        }
        let records = block(py, options.open())?.map_err(raise)?;
        Ok(RecordReader {
            records: tokio::sync::Mutex::new(Some(records)),
            ready: Mutex::new(VecDeque::new()),
        })
    }

    /// Every record of partitions `start..end` in key order (stable), as the serializer
    /// encodes them, in one buffer: for fixed-length records, `numpy.frombuffer(buf,
    /// numpy.uint8).reshape(-1, record_len)`.
    #[pyo3(signature = (start, end=None, sorter="radix"))]
    fn read_sorted(
        &self,
        py: Python<'_>,
        start: u32,
        end: Option<u32>,
        sorter: &str,
    ) -> PyResult<Buffer> {
        let range = self.range(start, end)?;
        let sorted = self.sorted(py, range, sorter)?;
        Ok(Buffer {
            data: buffers::freeze(sorted),
        })
    }

    /// As `read_sorted`, for fixed-length records, split into a buffer of the keys and one of
    /// the values (record `i`'s key at `i * key_len`): what columnar engines (Arrow) take.
    #[pyo3(signature = (start, end=None, sorter="radix"))]
    fn read_sorted_columns(
        &self,
        py: Python<'_>,
        start: u32,
        end: Option<u32>,
        sorter: &str,
    ) -> PyResult<(Buffer, Buffer)> {
        let format = self.fixed("read_sorted_columns")?;
        let range = self.range(start, end)?;
        let sorted = self.sorted(py, range, sorter)?;
        let (keys, values) = py.allow_threads(|| {
            let (k, r) = (format.key_len(), format.record_len());
            let n = sorted.len() / r;
            let (mut keys, mut values) = (buffers::take(n * k), buffers::take(n * (r - k)));
            for record in sorted.chunks_exact(r) {
                keys.extend_from_slice(&record[..k]);
                values.extend_from_slice(&record[k..]);
            }
            buffers::give(sorted);
            (keys, values)
        });
        Ok((
            Buffer {
                data: buffers::freeze(keys),
            },
            Buffer {
                data: buffers::freeze(values),
            },
        ))
    }
}

impl PyShuffle {
    fn sorted(
        &self,
        py: Python<'_>,
        range: std::ops::Range<u32>,
        sorter: &str,
    ) -> PyResult<Vec<u8>> {
        let (mut out, mut scratch) = (buffers::take(0), buffers::take(0));
        let options = self.shuffle.reader(range).sorted(sorter);
        let read = block(py, options.read_sorted_into(&mut out, &mut scratch))?;
        buffers::give(scratch);
        read.map_err(raise)?;
        Ok(out)
    }
}

/// A map task's output; nothing is visible before `commit()`.
#[pyclass(module = "crail", frozen)]
pub(crate) struct MapWriter {
    out: Mutex<Option<MapOutput>>,
    shuffle: Shuffle,
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

    /// Runs `work` on the output with the GIL released, keeping the output for later calls
    /// whatever the result.
    fn with_output<F>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(MapOutput) -> F + Send,
    ) -> PyResult<()>
    where
        F: Future<Output = (MapOutput, crail_sdk::Result<()>)> + Send,
    {
        let out = self.take()?;
        let (out, result) = block(py, work(out))?;
        self.put(out)?;
        result.map_err(raise)
    }

    /// Checks that `partitioner` splits into this shuffle's partitions.
    fn check(&self, partitioner: &RangePartitioner) -> PyResult<()> {
        let (have, want) = (partitioner.inner.partitions(), self.shuffle.partitions());
        if have != want {
            return Err(InvalidArgument::new_err(format!(
                "the partitioner makes {have} partitions; the shuffle has {want}"
            )));
        }
        Ok(())
    }
}

/// Writes each partition's slice of `grouped` (`starts` from a scatter) to `out`.
async fn write_grouped(
    out: &mut MapOutput,
    grouped: &[u8],
    starts: &[usize],
) -> crail_sdk::Result<()> {
    for (p, range) in starts.windows(2).enumerate() {
        if range[1] > range[0] {
            out.write_serialized(p as u32, &grouped[range[0]..range[1]])
                .await?;
        }
    }
    Ok(())
}

#[pymethods]
impl MapWriter {
    /// Appends `data` (any object with the buffer protocol holding bytes: bytes, bytearray,
    /// memoryview, a uint8 numpy array; whole records of the shuffle's serializer) to
    /// `partition`. The bytes are read in place: do not change them while the call runs.
    fn write(&self, py: Python<'_>, partition: u32, data: Bytesish) -> PyResult<()> {
        let data = borrow(py, &data)?;
        self.with_output(py, |mut out| async move {
            let result = out.write_serialized(partition, &data).await;
            (out, result)
        })
    }

    /// Appends one record (key, value) to `partition`, encoded by the shuffle's serializer.
    fn write_record(
        &self,
        py: Python<'_>,
        partition: u32,
        key: Bytesish,
        value: Bytesish,
    ) -> PyResult<()> {
        let (key, value) = (borrow(py, &key)?, borrow(py, &value)?);
        self.with_output(py, |mut out| async move {
            let result = out.write(partition, &key, &value).await;
            (out, result)
        })
    }

    /// Appends the fixed-length records of `data`, each to the partition `partitioner`
    /// gives its key (records keep their order within a partition). The shuffle's serializer
    /// must be `fixed:KEY:VALUE`.
    fn write_by_range(
        &self,
        py: Python<'_>,
        partitioner: &RangePartitioner,
        data: Bytesish,
    ) -> PyResult<()> {
        let format = fixed_format(&self.shuffle, "write_by_range")?;
        self.check(partitioner)?;
        let data = borrow(py, &data)?;
        let partitioner = partitioner.inner.clone();
        self.with_output(py, |mut out| async move {
            let mut grouped = buffers::take(data.len());
            let result =
                match partitioner.scatter_into(&data, &format, &mut grouped, &mut Vec::new()) {
                    Ok(starts) => write_grouped(&mut out, &grouped, &starts).await,
                    Err(e) => Err(e.into()),
                };
            buffers::give(grouped);
            (out, result)
        })
    }

    /// As `write_by_range`, the records given as a column of keys (`KEY` bytes each, back
    /// to back) and a column of values (`VALUE` bytes each): record `i` is key `i`, value `i`.
    fn write_columns_by_range(
        &self,
        py: Python<'_>,
        partitioner: &RangePartitioner,
        keys: Bytesish,
        values: Bytesish,
    ) -> PyResult<()> {
        let format = fixed_format(&self.shuffle, "write_columns_by_range")?;
        self.check(partitioner)?;
        let (keys, values) = (borrow(py, &keys)?, borrow(py, &values)?);
        let partitioner = partitioner.inner.clone();
        self.with_output(py, |mut out| async move {
            let mut grouped = buffers::take(keys.len() + values.len());
            let result = match partitioner.scatter_columns_into(
                &keys,
                &values,
                &format,
                &mut grouped,
                &mut Vec::new(),
            ) {
                Ok(starts) => write_grouped(&mut out, &grouped, &starts).await,
                Err(e) => Err(e.into()),
            };
            buffers::give(grouped);
            (out, result)
        })
    }

    /// Makes the output readable; returns the bytes written to each partition.
    fn commit(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        let out = self.take()?;
        let status = block(py, out.commit())?.map_err(raise)?;
        Ok(status.bytes)
    }

    /// Gives the output up.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let out = self.take()?;
        block(py, out.abort())
    }
}

/// Key ranges for a distributed sort: `splits` (in order) bound the partitions, partition
/// `p` holding the keys from split `p - 1` (inclusive) to split `p` (exclusive). Keys
/// compare as byte strings. Picklable, so a driver can make it and send it to tasks.
#[pyclass(module = "crail", frozen)]
pub(crate) struct RangePartitioner {
    inner: Arc<crail_sorters::RangePartitioner>,
}

#[pymethods]
impl RangePartitioner {
    #[new]
    fn new(py: Python<'_>, splits: Vec<Vec<u8>>) -> PyResult<Self> {
        let inner = py
            .allow_threads(|| crail_sorters::RangePartitioner::from_splits(splits))
            .map_err(|e| InvalidArgument::new_err(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// `partitions` ranges of about equal records, from a sample of keys (any order).
    #[staticmethod]
    fn from_sample(py: Python<'_>, sample: Vec<Vec<u8>>, partitions: u32) -> PyResult<Self> {
        let inner = py
            .allow_threads(|| crail_sorters::RangePartitioner::from_sample(sample, partitions))
            .map_err(|e| InvalidArgument::new_err(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Partitions.
    #[getter]
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    /// The split keys.
    #[getter]
    fn splits<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .splits()
            .iter()
            .map(|s| PyBytes::new(py, s))
            .collect()
    }

    /// The partition of `key`.
    fn partition(&self, key: &[u8]) -> u32 {
        self.inner.partition(key)
    }

    /// Pickles as the class and its splits.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let splits = slf.get().splits(slf.py());
        (slf.get_type(), (splits,)).into_pyobject(slf.py())
    }

    fn __repr__(&self) -> String {
        format!("RangePartitioner(partitions={})", self.inner.partitions())
    }
}

/// Chunks of a partition read, in arrival order.
#[pyclass(module = "crail")]
pub(crate) struct PartitionReader {
    reader: tokio::sync::Mutex<crail_shuffle::PartitionReader>,
}

#[pymethods]
impl PartitionReader {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<Chunk>>> {
        let next = block(py, async { self.reader.lock().await.next_chunk().await })?;
        match next {
            Ok(Some(chunk)) => Chunk::new(py, chunk.partition, chunk.map, chunk.data).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(raise(e.into())),
        }
    }
}

/// Records of a partition read, as `(key, value)` bytes pairs.
#[pyclass(module = "crail")]
pub(crate) struct RecordReader {
    records: tokio::sync::Mutex<Option<crail_sdk::Records>>,
    ready: Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
}

#[pymethods]
impl RecordReader {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        let lock = || {
            self.ready
                .lock()
                .map_err(|_| CrailError::new_err("reader state poisoned"))
        };
        if lock()?.is_empty() {
            let batch = block(py, async {
                let mut guard = self.records.lock().await;
                let mut batch = VecDeque::new();
                let Some(records) = guard.as_mut() else {
                    return Ok(batch);
                };
                while batch.len() < RECORD_BATCH {
                    match records.next_record().await? {
                        Some(r) => batch.push_back((r.key.to_vec(), r.value.to_vec())),
                        None => {
                            *guard = None;
                            break;
                        }
                    }
                }
                Ok::<_, crail_sdk::Error>(batch)
            })?
            .map_err(raise)?;
            *lock()? = batch;
        }
        Ok(lock()?
            .pop_front()
            .map(|(k, v)| (PyBytes::new(py, &k), PyBytes::new(py, &v))))
    }
}
