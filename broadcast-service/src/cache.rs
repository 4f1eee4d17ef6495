//! A node's copy of the variables its readers ask for: each fetched from the store once, all
//! stripes in flight at once, and handed to every local reader as it arrives.
//!
//! A get looks the variable up in the store (one namenode round trip, which also takes a hold
//! on the value): the same data object as the copy means the copy is current; a new object
//! (destroyed and put again) means a new fetch; no value means [`Error::UnknownVariable`], and
//! the copy, if any, is dropped. Readers of a copy still being fetched wait for each chunk as
//! it lands, so they start before the whole value has arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::{Broadcasts, Error, Result, VarId, VarReader};

/// What a node's cache has done: for tests, status and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Fetches from the store (a variable counts once per fetch).
    pub fetches: u64,
    /// Bytes fetched from the store.
    pub fetched_bytes: u64,
    /// Gets served from a copy the node had (whole or still arriving).
    pub hits: u64,
    /// Copies held now.
    pub cached: u64,
}

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

/// A copy: the value's data object, its size, and its chunks so far.
#[derive(Debug)]
struct Copy {
    object: u64,
    size: u64,
    progress: watch::Sender<Progress>,
}

impl Copy {
    fn failed(&self) -> bool {
        matches!(self.progress.borrow().end, End::Failed(_))
    }
}

/// The chunks arrived so far, then how the fetch ended.
#[derive(Debug, Clone, Default)]
struct Progress {
    chunks: Vec<Bytes>,
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
        let copy = Arc::new(Copy {
            object: value.object(),
            size: value.size(),
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
        let end = loop {
            match value.next_chunk().await {
                Ok(Some(chunk)) => {
                    self.inner().stats.fetched_bytes += chunk.len() as u64;
                    copy.progress.send_modify(|p| p.chunks.push(chunk));
                }
                Ok(None) => break End::Whole,
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
    size: u64,
    progress: watch::Receiver<Progress>,
    next: usize,
}

impl CachedReader {
    fn new(var: VarId, copy: Arc<Copy>) -> Self {
        Self {
            var,
            size: copy.size,
            progress: copy.progress.subscribe(),
            next: 0,
        }
    }

    /// The variable.
    pub fn var(&self) -> &VarId {
        &self.var
    }

    /// The value's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk, waiting for it to arrive, or `None` at the value's end. A fetch that
    /// failed is [`Error::Unreadable`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            {
                let progress = self.progress.borrow_and_update();
                if let Some(chunk) = progress.chunks.get(self.next) {
                    self.next += 1;
                    return Ok(Some(chunk.clone()));
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
