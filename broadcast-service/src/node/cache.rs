//! A node's copy of the variables its readers ask for: each fetched from the store once, all
//! stripes in flight at once, and handed to every local reader as it arrives.
//!
//! A get looks the variable up in the store (one namenode round trip, which also takes a hold
//! on the value): the same data object as the copy means the copy is current; a new object
//! (destroyed and put again) means a new fetch; no value means [`Error::UnknownVariable`], and
//! the copy, if any, is dropped. Readers of a copy still being fetched wait for each chunk as
//! it lands, so they start before the whole value has arrived.
//!
//! A copy lives in a memory file ([`Memory`]): readers in the node's service get slices of it
//! without a copy, and readers in other processes of the host map it themselves
//! ([`CachedReader::memory_fd`], [`CachedReader::arrived`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::os::fd::OwnedFd;

use bytes::Bytes;
use tokio::sync::watch;

use crate::memory::{CHUNK, Memory};
use crate::{Broadcasts, CacheStats, Error, Result, VarId, VarReader};

/// One node's copies of broadcast variables. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeCache {
    broadcasts: Broadcasts,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    copies: HashMap<VarId, Arc<Copy>>,
    /// Fetches per variable since the cache started.
    fetches: HashMap<VarId, u64>,
    stats: CacheStats,
}

/// A copy: the value's data object, its bytes, and how many have arrived.
#[derive(Debug)]
struct Copy {
    object: u64,
    memory: Arc<Memory>,
    progress: watch::Sender<Progress>,
}

impl Copy {
    fn failed(&self) -> bool {
        matches!(self.progress.borrow().end, End::Failed(_))
    }
}

/// The bytes in place so far (the value's first `arrived`), then how the fetch ended.
#[derive(Debug, Clone, Default)]
struct Progress {
    arrived: u64,
    end: End,
}

#[derive(Debug, Clone, Default)]
enum End {
    #[default]
    Arriving,
    Whole,
    Failed(String),
}

impl NodeCache {
    /// A cache over `broadcasts` (whose store client should be on this node).
    pub fn new(broadcasts: Broadcasts) -> Self {
        Self {
            broadcasts,
            inner: Arc::default(),
        }
    }

    /// The variables it copies.
    pub fn broadcasts(&self) -> &Broadcasts {
        &self.broadcasts
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent; a panic cannot break them half-way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader of variable `var` from this node's copy, fetching it first if the node has
    /// none (or an old one). Waits for a put in progress up to `wait` (see
    /// [`Broadcasts::get`]).
    pub async fn get(&self, var: &VarId, wait: Duration) -> Result<CachedReader> {
        let value = match self.broadcasts.get(var, wait).await {
            Ok(value) => value,
            Err(e @ Error::UnknownVariable { .. }) => {
                self.drop_var(var);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut inner = self.inner();
        if let Some(copy) = inner.copies.get(var)
            && copy.object == value.object()
            && !copy.failed()
        {
            let copy = copy.clone();
            inner.stats.hits += 1;
            // The copy is current; the hold on the store's value is not needed.
            return Ok(CachedReader::new(var.clone(), copy));
        }
        let memory = Memory::create(value.size()).map_err(|e| Error::Unreadable {
            var: var.clone(),
            cause: format!("no memory for the node's copy: {e}"),
        })?;
        let copy = Arc::new(Copy {
            object: value.object(),
            memory,
            progress: watch::channel(Progress::default()).0,
        });
        inner.copies.insert(var.clone(), copy.clone());
        *inner.fetches.entry(var.clone()).or_default() += 1;
        inner.stats.fetches += 1;
        inner.stats.cached = inner.copies.len() as u64;
        drop(inner);
        let cache = self.clone();
        let fetching = copy.clone();
        tokio::spawn(async move { cache.fetch(value, fetching).await });
        Ok(CachedReader::new(var.clone(), copy))
    }

    /// Reads the store's value into `copy`, chunk by chunk, waking its readers at each.
    async fn fetch(&self, mut value: VarReader, copy: Arc<Copy>) {
        let size = copy.memory.len() as u64;
        let mut arrived = 0u64;
        let end = loop {
            match value.next_chunk().await {
                Ok(Some(chunk)) => {
                    let len = chunk.len() as u64;
                    if arrived + len > size {
                        break End::Failed(format!("the store sent more than its {size} bytes"));
                    }
                    if let Err(e) = copy.memory.write_at(arrived, &chunk) {
                        break End::Failed(format!("cannot write the node's copy: {e}"));
                    }
                    arrived += len;
                    self.inner().stats.fetched_bytes += len;
                    copy.progress.send_modify(|p| p.arrived = arrived);
                }
                Ok(None) if arrived == size => break End::Whole,
                Ok(None) => {
                    break End::Failed(format!("the store sent {arrived} of {size} bytes"));
                }
                // The cause alone: readers of the copy name the variable themselves.
                Err(Error::Unreadable { cause, .. }) => break End::Failed(cause),
                Err(e) => break End::Failed(e.to_string()),
            }
        };
        if let End::Failed(cause) = &end {
            tracing::warn!("broadcast variable {}: fetch failed: {cause}", value.var());
            // The next get fetches again.
            let mut inner = self.inner();
            if inner
                .copies
                .get(value.var())
                .is_some_and(|c| Arc::ptr_eq(c, &copy))
            {
                inner.copies.remove(value.var());
                inner.stats.cached = inner.copies.len() as u64;
            }
        }
        copy.progress.send_modify(|p| p.end = end);
    }

    /// Drops the node's copy of `var` (its readers finish with the chunks they hold).
    pub fn drop_var(&self, var: &VarId) {
        let mut inner = self.inner();
        inner.copies.remove(var);
        inner.stats.cached = inner.copies.len() as u64;
    }

    /// Drops the node's copies of every variable of `app`.
    pub fn drop_app(&self, app: &str) {
        let mut inner = self.inner();
        inner.copies.retain(|var, _| var.app != app);
        inner.stats.cached = inner.copies.len() as u64;
    }

    /// Drops the copies of variables that are gone from the store (destroyed, or destroyed and
    /// put again), in case a destroy's word did not reach this node.
    pub async fn sweep(&self) {
        let held: Vec<(VarId, Arc<Copy>)> = self
            .inner()
            .copies
            .iter()
            .map(|(var, copy)| (var.clone(), copy.clone()))
            .collect();
        for (var, copy) in held {
            let current = match self.broadcasts.store().stat(&var.path()).await {
                Ok(stat) => stat.file_id == copy.object,
                Err(crail_store::Error::NotFound { .. }) => false,
                Err(_) => continue,
            };
            if !current {
                let mut inner = self.inner();
                if inner
                    .copies
                    .get(&var)
                    .is_some_and(|c| Arc::ptr_eq(c, &copy))
                {
                    inner.copies.remove(&var);
                    inner.stats.cached = inner.copies.len() as u64;
                }
            }
        }
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        self.inner().stats.clone()
    }

    /// How many times this node fetched `var` from the store.
    pub fn fetches_of(&self, var: &VarId) -> u64 {
        self.inner().fetches.get(var).copied().unwrap_or(0)
    }
}

/// A reader of a node's copy of a variable: its chunks in order, each as soon as it has
/// arrived.
#[derive(Debug)]
pub struct CachedReader {
    var: VarId,
    memory: Arc<Memory>,
    progress: watch::Receiver<Progress>,
    /// Bytes handed out (or reported arrived) so far.
    pos: u64,
}

impl CachedReader {
    fn new(var: VarId, copy: Arc<Copy>) -> Self {
        Self {
            var,
            memory: Arc::clone(&copy.memory),
            progress: copy.progress.subscribe(),
            pos: 0,
        }
    }

    /// The variable.
    pub fn var(&self) -> &VarId {
        &self.var
    }

    /// The value's size in bytes.
    pub fn size(&self) -> u64 {
        self.memory.len() as u64
    }

    /// The next chunk (a slice of the node's copy, not a copy), waiting for it to arrive, or
    /// `None` at the value's end. A fetch that failed is [`Error::Unreadable`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(self
            .advance(CHUNK as u64)
            .await?
            .map(|(start, end)| self.memory.slice(start as usize, end as usize)))
    }

    /// A read-only descriptor of the memory file holding the node's copy, for a reader in
    /// another process of the host; [`CachedReader::arrived`] tells it how much is in place.
    pub fn memory_fd(&self) -> std::io::Result<OwnedFd> {
        self.memory.reader_fd()
    }

    /// How many of the value's first bytes are in place, once more than last time, or `None`
    /// once the whole value was reported. A fetch that failed is [`Error::Unreadable`].
    pub async fn arrived(&mut self) -> Result<Option<u64>> {
        Ok(self.advance(u64::MAX).await?.map(|(_, end)| end))
    }

    /// Moves past up to `most` bytes once some have arrived: the range moved over.
    async fn advance(&mut self, most: u64) -> Result<Option<(u64, u64)>> {
        loop {
            {
                let progress = self.progress.borrow_and_update();
                if progress.arrived > self.pos {
                    let start = self.pos;
                    self.pos = progress.arrived.min(start.saturating_add(most));
                    return Ok(Some((start, self.pos)));
                }
                match &progress.end {
                    End::Whole => return Ok(None),
                    End::Failed(cause) => {
                        return Err(Error::Unreadable {
                            var: self.var.clone(),
                            cause: cause.clone(),
                        });
                    }
                    End::Arriving => {}
                }
            }
            if self.progress.changed().await.is_err() {
                // The fetch is gone without saying how it ended (its task was dropped).
                return Err(Error::Unreadable {
                    var: self.var.clone(),
                    cause: "the node's fetch stopped".into(),
                });
            }
        }
    }
}
