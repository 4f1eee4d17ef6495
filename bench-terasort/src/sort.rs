//! The sort through the cluster: sample, map, reduce.
//!
//! One engine ([`Crail`]) per node runs that node's tasks: map `m` on node `m % nodes`, reduce
//! partition `p` on node `p % nodes`, `tasks` at a time per node. A map reads its input part,
//! groups its records by partition and writes each group to the shuffle as serialized
//! `fixed:10:90` records; a reduce reads its partition from every map, radix-sorts it and
//! writes output part `p`. Output parts in name order are the sorted input.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crail_sdk::Crail;
use crail_sdk::crail_serializers::Fixed;
use crail_sdk::crail_store::Buffer;
use rayon::prelude::*;
use serde::Serialize;

use crate::partition;
use crate::{Error, KEY, RECORD, Result, SERIALIZER, create_output, part_name, parts};

/// Input bytes per reduce partition the default aims at.
const PARTITION_BYTES: u64 = 128 << 20;

/// How to sort.
#[derive(Debug, Clone)]
pub struct SortOptions {
    /// Reduce partitions (output parts); `None`: one per 128 MiB of input, at least two per
    /// node.
    pub partitions: Option<u32>,
    /// Tasks at a time per node.
    pub tasks: usize,
    /// The shuffle's number in the engines' application.
    pub shuffle: u32,
}

impl Default for SortOptions {
    fn default() -> Self {
        Self {
            partitions: None,
            tasks: 1,
            shuffle: 0,
        }
    }
}

/// The phases of a sort, for progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Map tasks: bytes of input read and shuffled.
    Map,
    /// Reduce tasks: bytes sorted and written.
    Reduce,
}

/// What a sort did.
#[derive(Debug, Clone, Serialize)]
pub struct SortReport {
    /// Input bytes.
    pub bytes: u64,
    /// Records.
    pub records: u64,
    /// Map tasks (input parts).
    pub maps: u32,
    /// Reduce partitions (output parts).
    pub partitions: u32,
    /// Nodes the tasks ran on.
    pub nodes: usize,
    /// Seconds to fault in the tasks' buffers (not part of the sort's time).
    pub prepare_secs: f64,
    /// Seconds to sample the keys.
    pub sample_secs: f64,
    /// Seconds from the first map to the last map's commit.
    pub map_secs: f64,
    /// Seconds from the first reduce to the last output part written.
    pub reduce_secs: f64,
}

impl SortReport {
    /// The whole sort's seconds.
    pub fn secs(&self) -> f64 {
        self.sample_secs + self.map_secs + self.reduce_secs
    }
}

/// Sorts the parts of `input` into `output` (created; it must not exist) through the
/// shuffle service, one engine per node in `engines`. `progress` hears of every piece done.
/// On failure the output directory is removed.
pub async fn sort(
    engines: &[Crail],
    input: &Path,
    output: &Path,
    options: &SortOptions,
    progress: impl Fn(Phase, u64) + Send + Sync + 'static,
) -> Result<SortReport> {
    if engines.is_empty() {
        return Err(Error::Invalid("no nodes to run the sort on".into()));
    }
    let parts = parts(input)?;
    create_output(output)?;
    let sorted = run(engines, parts, output, options, Arc::new(progress)).await;
    if sorted.is_err() {
        let _ = std::fs::remove_dir_all(output);
    }
    sorted
}

async fn run(
    engines: &[Crail],
    parts: Vec<(PathBuf, u64)>,
    output: &Path,
    options: &SortOptions,
    progress: Arc<dyn Fn(Phase, u64) + Send + Sync>,
) -> Result<SortReport> {
    let bytes: u64 = parts.iter().map(|(_, size)| size).sum();
    let nodes = engines.len();
    let maps = u32::try_from(parts.len()).map_err(|_| Error::Invalid("too many parts".into()))?;
    let partitions = match options.partitions {
        Some(0) => return Err(Error::Invalid("--partitions must be at least 1".into())),
        Some(p) => p,
        None => u32::try_from(bytes.div_ceil(PARTITION_BYTES))
            .unwrap_or(u32::MAX)
            .max(2 * nodes as u32),
    };

    let start = Instant::now();
    let sampled = parts.clone();
    let partitioner = tokio::task::spawn_blocking(move || partition::sample(&sampled, partitions))
        .await
        .map_err(|e| Error::Cluster(format!("sampling failed: {e}")))??;
    let partitioner = Arc::new(partitioner);
    let format = Fixed::new(KEY, RECORD - KEY).map_err(crail_sdk::Error::from)?;
    let sample_secs = start.elapsed().as_secs_f64();

    engines[0]
        .register_shuffle(options.shuffle, maps, partitions, SERIALIZER)
        .await?;
    let mut shuffles = Vec::new();
    for engine in engines {
        shuffles.push(engine.shuffle(options.shuffle).await?);
    }

    // One pool for both phases (a reduce sorts in the memory a map read its input into),
    // faulted in before the clock starts, as the baseline's buffers are (see `local`). Its
    // buffers are aligned, so a sorted part goes to its `O_DIRECT` file as it lies.
    let start = Instant::now();
    let largest = parts.iter().map(|(_, size)| *size).max().unwrap_or(0);
    let buffer = largest.max(bytes / u64::from(partitions) * 9 / 8) as usize;
    let pool = Arc::new(Pool::default());
    // Per task a map's input and groups, or a reduce's records and scratch; per node one more
    // for the output part being written.
    let count = nodes * (options.tasks.max(1) * 2 + 1);
    let warmed = tokio::task::spawn_blocking(move || {
        (0..count)
            .into_par_iter()
            .map(|_| {
                let mut buf = Buffer::new(buffer);
                buf.whole_mut().fill(1);
                buf
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Cluster(format!("cannot prepare buffers: {e}")))?;
    for buf in warmed {
        pool.put(buf);
    }
    let prepare_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let parts = Arc::new(parts);
    // Bytes per partition, from the maps' statuses: what each reduce sorts.
    let sizes = Arc::new(Mutex::new(vec![0u64; partitions as usize]));
    on_every_node(&shuffles, options.tasks, maps, |shuffle, m| {
        let (parts, partitioner, progress, pool, sizes) = (
            parts.clone(),
            partitioner.clone(),
            progress.clone(),
            pool.clone(),
            sizes.clone(),
        );
        async move {
            let (path, size) = parts[m as usize].clone();
            let len = size as usize;
            let (mut input, mut grouped) = (pool.take(len), pool.take(len));
            let (input, grouped, starts) = tokio::task::spawn_blocking(move || {
                std::fs::File::open(&path)
                    .and_then(|mut f| {
                        std::io::Read::read_exact(&mut f, &mut input.whole_mut()[..len])
                    })
                    .map_err(|cause| Error::Io { path, cause })?;
                let starts = partitioner
                    .scatter_to(
                        &input.whole()[..len],
                        &format,
                        &mut grouped.whole_mut()[..len],
                        &mut Vec::new(),
                    )
                    .map_err(|e| Error::Invalid(format!("map {m}: {e}")))?;
                Ok::<_, Error>((input, grouped, starts))
            })
            .await
            .map_err(|e| Error::Cluster(format!("map {m} failed: {e}")))??;
            let mut out = shuffle.map_writer(m, 0).await?;
            for (p, range) in starts.windows(2).enumerate() {
                if range[1] > range[0] {
                    out.write_serialized(p as u32, &grouped.whole()[range[0]..range[1]])
                        .await?;
                }
            }
            let status = out.commit().await?;
            if let Ok(mut sizes) = sizes.lock() {
                for (total, bytes) in sizes.iter_mut().zip(&status.bytes) {
                    *total += bytes;
                }
            }
            pool.put(input);
            pool.put(grouped);
            progress(Phase::Map, size);
            Ok(())
        }
    })
    .await?;
    let map_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let output = Arc::new(output.to_owned());
    // A node's output part is written while its next reduce fetches and sorts, so the disk and
    // the CPUs work at once; one write at a time per node bounds the buffers held.
    let writing: Vec<Arc<tokio::sync::Semaphore>> = (0..nodes)
        .map(|_| Arc::new(tokio::sync::Semaphore::new(1)))
        .collect();
    let writes = Arc::new(Mutex::new(Vec::new()));
    let sizes = sizes.lock().map(|s| s.clone()).unwrap_or_default();
    on_every_node(&shuffles, options.tasks, partitions, |shuffle, p| {
        let (output, progress, pool) = (output.clone(), progress.clone(), pool.clone());
        let (writing, writes) = (writing[p as usize % nodes].clone(), writes.clone());
        let need = sizes.get(p as usize).copied().unwrap_or(0) as usize;
        async move {
            let (mut sorted, mut scratch) = (pool.take(need), pool.take(need));
            let len = shuffle
                .reader(p..p + 1)
                .sorted("radix")
                .read_sorted_to(sorted.whole_mut(), scratch.whole_mut())
                .await?;
            pool.put(scratch);
            sorted.set_len(len);
            let path = output.join(part_name(p as usize));
            let permit = writing
                .acquire_owned()
                .await
                .map_err(|e| Error::Cluster(format!("reduce {p}: {e}")))?;
            let write = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                crate::write_part(&path, &sorted).map_err(|cause| Error::Io { path, cause })?;
                pool.put(sorted);
                progress(Phase::Reduce, len as u64);
                Ok::<_, Error>(())
            });
            if let Ok(mut writes) = writes.lock() {
                writes.push((p, write));
            }
            Ok(())
        }
    })
    .await?;
    let writes = writes
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    for (p, write) in writes {
        write
            .await
            .map_err(|e| Error::Cluster(format!("reduce {p} failed: {e}")))??;
    }
    let reduce_secs = start.elapsed().as_secs_f64();
    engines[0].unregister_shuffle(options.shuffle).await?;
    Ok(SortReport {
        bytes,
        records: bytes / RECORD as u64,
        maps,
        partitions,
        nodes,
        prepare_secs,
        sample_secs,
        map_secs,
        reduce_secs,
    })
}

/// Big buffers the tasks of a phase pass on to each other: memory a task touched before is
/// cheaper to fill than fresh pages, which the kernel must clear first (on this machine that
/// clearing was a third of a sort's CPU).
#[derive(Default)]
struct Pool(Mutex<Vec<Buffer>>);

impl Pool {
    /// A buffer of at least `len` bytes: one a task gave back, else a new one.
    fn take(&self, len: usize) -> Buffer {
        let mut free = match self.0.lock() {
            Ok(free) => free,
            Err(_) => return Buffer::new(len),
        };
        match free.iter().position(|b| b.capacity() >= len) {
            Some(i) => free.swap_remove(i),
            None => Buffer::new(len),
        }
    }

    fn put(&self, buf: Buffer) {
        if let Ok(mut v) = self.0.lock() {
            v.push(buf);
        }
    }
}

/// Runs `task(shuffle, i)` for every `i < count`, `i` on node `i % nodes`, `tasks` at a time
/// per node; the first error stops the rest.
async fn on_every_node<F, Fut>(
    shuffles: &[crail_sdk::Shuffle],
    tasks: usize,
    count: u32,
    task: F,
) -> Result<()>
where
    F: Fn(crail_sdk::Shuffle, u32) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let nodes = shuffles.len() as u32;
    let mut set = tokio::task::JoinSet::new();
    let mut queued: Vec<Vec<Fut>> = (0..nodes).map(|_| Vec::new()).collect();
    for i in (0..count).rev() {
        let n = (i % nodes) as usize;
        queued[n].push(task(shuffles[n].clone(), i));
    }
    for work in queued {
        let work = Arc::new(Mutex::new(work));
        for _ in 0..tasks.max(1) {
            let work = work.clone();
            set.spawn(async move {
                loop {
                    let next = work.lock().ok().and_then(|mut w| w.pop());
                    let Some(fut) = next else {
                        return Ok(());
                    };
                    fut.await?;
                }
            });
        }
    }
    while let Some(done) = set.join_next().await {
        let result = done.unwrap_or_else(|e| Err(Error::Cluster(format!("a task failed: {e}"))));
        if let Err(e) = result {
            set.abort_all();
            return Err(e);
        }
    }
    Ok(())
}
