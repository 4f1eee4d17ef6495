//! [`Shuffles`]: the shuffles in a store, as any process sees them: register (built under a
//! hidden name, renamed into place), the committed maps and their map status, reads,
//! unregister; the commit records and metas a process has read, kept.
//!
//! A process reads each map's record once: the listing of `maps/` names the committed maps
//! and the marker each was committed under; a marker not seen before costs one listing (where
//! its record lies) and one read of the record from its group file.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crail_store::{CreateOptions, Error as StoreError, Placement, Store};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::engine::reader::{self, GroupFiles, PartitionReader, lengths};
use crate::error::{Error, Result};
use crate::layout::{self, Commit, Meta, RecordRef, ShuffleId};

/// Commit records read at once.
const METADATA_READS: usize = 32;

/// Copies of a shuffle's metadata, each on another node where the store has that many.
const META_COPIES: u32 = 3;

/// Group files fetched at once by a read.
pub const DEFAULT_PREFETCH: usize = 4;

/// Shuffles whose commit records a [`Shuffles`] keeps parsed.
const CACHED_SHUFFLES: usize = 64;

/// Shuffles in a store. Cheap to clone; clones share the commit records they have read.
#[derive(Debug, Clone)]
pub struct Shuffles {
    store: Store,
    commits: Arc<Mutex<CommitCache>>,
    files: Arc<GroupFiles>,
}

/// Commit records already read, per shuffle and map, with the marker each was found under:
/// a record replaced by a recommit has a new marker, so the listing every read starts with
/// says which records are still current, and only new ones are read. Every reduce task of an
/// engine process reads each map's record once, not once per task. Beside them each
/// shuffle's meta, which never changes while it is registered: known from registering, from
/// a lease's reply or from one read, it costs no namenode round trip per task.
#[derive(Debug, Default)]
struct CommitCache {
    shuffles: HashMap<ShuffleId, HashMap<u32, (u64, Arc<Commit>)>>,
    metas: HashMap<ShuffleId, Meta>,
    /// Per shuffle, the last listing of `maps/` (map, marker) and the directory's version
    /// when it was listed: while the version holds, a read needs no new listing.
    listings: HashMap<ShuffleId, (Version, Listing)>,
    /// Per shuffle, its segments by partition over the commits of the last reads, so a
    /// read of a few partitions does not scan every map's commit.
    indexes: HashMap<ShuffleId, Index>,
}

/// Segments by partition: for partition p, (commit, segment) positions in `commits`.
#[derive(Debug)]
struct Index {
    commits: Vec<Arc<Commit>>,
    by_partition: Vec<Vec<(u32, u32)>>,
}

impl Index {
    fn build(commits: &[Arc<Commit>], partitions: u32) -> Self {
        let mut by_partition = vec![Vec::new(); partitions as usize];
        for (c, commit) in commits.iter().enumerate() {
            for (s, seg) in commit.segments().iter().enumerate() {
                if let Some(list) = by_partition.get_mut(seg.partition as usize) {
                    list.push((c as u32, s as u32));
                }
            }
        }
        Self {
            commits: commits.to_vec(),
            by_partition,
        }
    }

    fn over(&self, commits: &[Arc<Commit>]) -> bool {
        self.commits.len() == commits.len()
            && self
                .commits
                .iter()
                .zip(commits)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// The committed maps of a shuffle with the marker each was committed under.
type Listing = Arc<Vec<(u32, u64)>>;

/// A directory's version: its last change (to the millisecond) and its children. Only
/// commits change `maps/` (pending markers wait elsewhere), each by one more child; the one
/// change that keeps the count, a lost record replaced, follows a fetch failure, which drops
/// the listing ([`Shuffles::read`]).
type Version = (std::time::SystemTime, u64);

impl CommitCache {
    fn get(&self, id: &ShuffleId, map: u32, object: u64) -> Option<Arc<Commit>> {
        match self.shuffles.get(id)?.get(&map) {
            Some((seen, commit)) if *seen == object => Some(commit.clone()),
            _ => None,
        }
    }

    fn put(&mut self, id: &ShuffleId, map: u32, object: u64, commit: Arc<Commit>) {
        if !self.shuffles.contains_key(id) && self.shuffles.len() >= CACHED_SHUFFLES {
            let evicted = self.shuffles.keys().next().cloned();
            if let Some(evicted) = evicted {
                self.shuffles.remove(&evicted);
            }
        }
        self.shuffles
            .entry(id.clone())
            .or_default()
            .insert(map, (object, commit));
    }

    fn forget(&mut self, gone: impl Fn(&ShuffleId) -> bool) {
        self.shuffles.retain(|id, _| !gone(id));
        self.metas.retain(|id, _| !gone(id));
        self.listings.retain(|id, _| !gone(id));
        self.indexes.retain(|id, _| !gone(id));
    }

    /// The (commit, segment) positions in `commits` of the segments of `partitions`.
    fn picks(
        &mut self,
        id: &ShuffleId,
        commits: &[Arc<Commit>],
        partitions: &Range<u32>,
        all: u32,
    ) -> Vec<(u32, u32)> {
        let fresh = self
            .indexes
            .get(id)
            .is_some_and(|index| index.over(commits));
        if !fresh {
            if !self.indexes.contains_key(id) && self.indexes.len() >= CACHED_SHUFFLES {
                let evicted = self.indexes.keys().next().cloned();
                if let Some(evicted) = evicted {
                    self.indexes.remove(&evicted);
                }
            }
            self.indexes.insert(id.clone(), Index::build(commits, all));
        }
        let Some(index) = self.indexes.get(id) else {
            return Vec::new();
        };
        partitions
            .clone()
            .filter_map(|p| index.by_partition.get(p as usize))
            .flatten()
            .copied()
            .collect()
    }

    fn listing(&self, id: &ShuffleId, version: &Version) -> Option<Listing> {
        match self.listings.get(id) {
            Some((seen, entries)) if seen == version => Some(Arc::clone(entries)),
            _ => None,
        }
    }

    fn listed(&mut self, id: &ShuffleId, version: Version, entries: Listing) {
        if !self.listings.contains_key(id) && self.listings.len() >= CACHED_SHUFFLES {
            let evicted = self.listings.keys().next().cloned();
            if let Some(evicted) = evicted {
                self.listings.remove(&evicted);
            }
        }
        self.listings.insert(id.clone(), (version, entries));
    }

    fn remember(&mut self, id: &ShuffleId, meta: &Meta) {
        if !self.metas.contains_key(id) && self.metas.len() >= CACHED_SHUFFLES * 4 {
            let evicted = self.metas.keys().next().cloned();
            if let Some(evicted) = evicted {
                self.metas.remove(&evicted);
            }
        }
        let meta = Meta {
            replication: meta.replication.max(1),
            ..meta.clone()
        };
        self.metas.insert(id.clone(), meta);
    }
}

impl Shuffles {
    /// The shuffles of `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            commits: Arc::default(),
            files: Arc::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CommitCache> {
        // The cache holds no invariant a panic could break half-way.
        self.commits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store they live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Registers a shuffle of `meta.maps` maps into `meta.partitions` partitions of records
    /// in format `meta.serializer`: its directories appear at once, whole, or not at all.
    pub async fn register(&self, id: &ShuffleId, meta: &Meta) -> Result<()> {
        id.check()?;
        let invalid = |problem: String| Error::Invalid {
            id: id.clone(),
            problem,
        };
        if meta.maps == 0 || meta.partitions == 0 {
            return Err(invalid(
                "a shuffle needs at least one map and one partition".into(),
            ));
        }
        crail_serializers::Serializer::by_name(&meta.serializer)
            .map_err(|e| invalid(e.to_string()))?;
        let dirs = &CreateOptions::default();
        for dir in [layout::ROOT.to_owned(), ShuffleId::app_dir(&id.app)] {
            match self.store.create_dir(&dir, dirs).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.store.stat(&id.dir()).await.is_ok() {
            return Err(Error::AlreadyRegistered { id: id.clone() });
        }
        // Built under a hidden name, then renamed into place.
        let building = format!(
            "{}/.{}.{:x}",
            ShuffleId::app_dir(&id.app),
            id.shuffle,
            crail_node_service::nonce()
        );
        let built = async {
            self.store.create_dir(&building, dirs).await?;
            for dir in ["g", "maps", "pending"] {
                self.store
                    .create_dir(&format!("{building}/{dir}"), dirs)
                    .await?;
            }
            // The metadata on up to three nodes: every read of the shuffle needs it, so losing
            // one node must not lose the shuffle.
            let json = layout::to_json(meta);
            for (copy, home) in (0..).zip(self.meta_homes().await?) {
                let path = id.meta_copy(copy);
                let name = path.rsplit('/').next().unwrap_or("meta");
                let options = match home {
                    Some(host) => {
                        CreateOptions::default().placement(Placement::default().location(host))
                    }
                    None => CreateOptions::default(),
                };
                let written = self
                    .store
                    .write_file(&format!("{building}/{name}"), &json, &options)
                    .await;
                match written {
                    Ok(_) => {}
                    Err(e) if copy == 0 => return Err(e),
                    // A missing copy only weakens the shuffle.
                    Err(e) => tracing::warn!("{path}: a copy of the metadata was not written: {e}"),
                }
            }
            self.store.rename(&building, &id.dir()).await
        }
        .await;
        match built {
            Ok(()) => {
                self.remember(id, meta);
                Ok(())
            }
            Err(e) => {
                let _ = self.store.delete(&building, true).await;
                match e {
                    StoreError::AlreadyExists { .. } => {
                        Err(Error::AlreadyRegistered { id: id.clone() })
                    }
                    e => Err(e.into()),
                }
            }
        }
    }

    /// Where the metadata's copies go: the writer's node first (no placement), then up to
    /// [`META_COPIES`] - 1 other hosts with live datanodes.
    async fn meta_homes(&self) -> std::result::Result<Vec<Option<std::net::IpAddr>>, StoreError> {
        let info = self.store.cluster_info().await?;
        let me = self.store.config().local_host;
        let mut hosts: Vec<std::net::IpAddr> = info
            .datanodes
            .iter()
            .filter(|d| d.alive && Some(d.host) != me)
            .map(|d| d.host)
            .collect();
        hosts.sort();
        hosts.dedup();
        let mut homes = vec![None];
        homes.extend(hosts.into_iter().take(META_COPIES as usize - 1).map(Some));
        Ok(homes)
    }

    /// What the shuffle was registered with (read once per process, then remembered).
    pub async fn meta(&self, id: &ShuffleId) -> Result<Meta> {
        if let Some(meta) = self.cache().metas.get(id) {
            return Ok(meta.clone());
        }
        let meta = read_meta(&self.store, id).await?;
        self.cache().remember(id, &meta);
        Ok(meta)
    }

    /// Forgets what this process knows of the shuffles `gone` names (unregistered elsewhere).
    pub(crate) fn forget(&self, gone: impl Fn(&ShuffleId) -> bool) {
        self.cache().forget(gone);
        // Group files are kept by path: let go of all (the next read looks its files up).
        self.files.forget("/");
    }

    /// Remembers a shuffle's meta learnt elsewhere (a lease's reply carries it).
    pub(crate) fn remember(&self, id: &ShuffleId, meta: &Meta) {
        self.cache().remember(id, meta);
    }

    /// The committed attempts of maps `maps` (all of them when `None`), by map; any map of
    /// the range not committed is [`Error::NotCommitted`].
    pub async fn commits(
        &self,
        id: &ShuffleId,
        maps: Option<Range<u32>>,
    ) -> Result<Vec<Arc<Commit>>> {
        let meta = self.meta(id).await?;
        self.commits_of(id, &meta, maps, 0..meta.partitions).await
    }

    /// The commits of `maps` (all when `None`) for a read of `partitions` (which lost maps a
    /// failure names).
    async fn commits_of(
        &self,
        id: &ShuffleId,
        meta: &Meta,
        maps: Option<Range<u32>>,
        partitions: Range<u32>,
    ) -> Result<Vec<Arc<Commit>>> {
        let maps = maps.unwrap_or(0..meta.maps);
        check_range(id, &maps, meta.maps, |map| Error::MapOutOfRange {
            id: id.clone(),
            map,
            maps: meta.maps,
        })?;
        self.commits_among(id, meta, Which::Range(maps), partitions)
            .await
    }

    /// The commits of the maps `which` names for a read of `partitions`.
    async fn commits_among(
        &self,
        id: &ShuffleId,
        meta: &Meta,
        which: Which<'_>,
        partitions: Range<u32>,
    ) -> Result<Vec<Arc<Commit>>> {
        let entries = match self.listing(id).await {
            Ok(entries) => entries,
            Err(e) => {
                if matches!(e, StoreError::NotFound { .. }) {
                    self.forget(|gone| gone == id);
                }
                return Err(unknown_if_missing(id, e));
            }
        };
        let mut found = HashMap::new();
        let mut unread = Vec::new();
        {
            let cache = self.cache();
            for &(map, marker) in entries.iter().filter(|(map, _)| which.contains(*map)) {
                match cache.get(id, map, marker) {
                    Some(commit) => {
                        found.insert(map, commit);
                    }
                    None => unread.push((map, marker)),
                }
            }
        }
        let records: Vec<(u32, u64, Record)> = stream::iter(unread)
            .map(|(map, object)| async move {
                read_marker(&self.store, id, &id.commit(map), meta.partitions)
                    .await
                    .map(|r| (map, object, r))
            })
            .buffer_unordered(METADATA_READS)
            .try_collect()
            .await?;
        let mut lost = Vec::new();
        let mut cause = String::new();
        for (map, object, record) in records {
            match record {
                Record::Found(commit) => {
                    let commit = Arc::new(commit);
                    self.cache().put(id, map, object, Arc::clone(&commit));
                    found.insert(map, commit);
                }
                Record::Lost(why) => {
                    lost.push(map);
                    cause = why;
                }
            }
        }
        if !lost.is_empty() {
            // A map whose record is gone is lost like one whose data is; name every lost map
            // of the read at once. Its replacement will need a new listing.
            self.cache().listings.remove(id);
            let commits: Vec<Arc<Commit>> = found.into_values().collect();
            return Err(reader::Failure::new(partitions.start, lost, cause)
                .into_error(&self.store, id, &commits, &partitions)
                .await);
        }
        match which {
            Which::Range(maps) => reader::complete(id, found, maps),
            Which::Listed(maps) => reader::complete(id, found, maps.iter().copied()),
        }
    }

    /// The committed maps and their markers: the cached listing while `maps/` is unchanged,
    /// else a new one.
    async fn listing(&self, id: &ShuffleId) -> std::result::Result<Listing, StoreError> {
        let dir = self.store.stat(&id.maps_dir()).await?;
        let version = (dir.modified, dir.children);
        if let Some(entries) = self.cache().listing(id, &version) {
            return Ok(entries);
        }
        let entries: Vec<(u32, u64)> = self
            .store
            .list(&id.maps_dir())
            .await?
            .into_iter()
            .filter_map(|e| Some((e.name.parse::<u32>().ok()?, e.stat.id)))
            .collect();
        let entries = Arc::new(entries);
        self.cache().listed(id, version, Arc::clone(&entries));
        Ok(entries)
    }

    /// Map status: for every committed map of `maps`, its bytes per partition.
    pub async fn map_statuses(
        &self,
        id: &ShuffleId,
        maps: Option<Range<u32>>,
    ) -> Result<Vec<(u32, Vec<u64>)>> {
        let meta = self.meta(id).await?;
        Ok(self
            .commits_of(id, &meta, maps, 0..meta.partitions)
            .await?
            .iter()
            .map(|c| (c.map, lengths(c, meta.partitions)))
            .collect())
    }

    /// Reads partitions `partitions` as written by maps `maps` (all maps when `None`), every
    /// map of the range committed; group files are fetched `prefetch` at a time.
    pub async fn read(
        &self,
        id: &ShuffleId,
        partitions: Range<u32>,
        maps: Option<Range<u32>>,
        prefetch: usize,
    ) -> Result<PartitionReader> {
        let meta = self.meta(id).await?;
        check_partitions(id, &partitions, &meta)?;
        let commits = self.commits_of(id, &meta, maps, partitions.clone()).await?;
        self.read_commits(id, &meta, commits, partitions, prefetch)
    }

    /// Reads partitions `partitions` as written by exactly the (map, attempt) pairs of
    /// `attempts`: the map statuses an engine's scheduler holds, which may leave out maps with
    /// nothing for these partitions. A map committed by another attempt than the one named (it
    /// ran again: a rerun of its stage, or a late task of an earlier run) is a
    /// [`Error::FetchFailed`] naming it, never a mix of runs.
    pub async fn read_attempts(
        &self,
        id: &ShuffleId,
        partitions: Range<u32>,
        attempts: &[(u32, u64)],
        prefetch: usize,
    ) -> Result<PartitionReader> {
        let meta = self.meta(id).await?;
        check_partitions(id, &partitions, &meta)?;
        let mut wanted: Vec<(u32, u64)> = attempts.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if let Some(twice) = wanted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::Invalid {
                id: id.clone(),
                problem: format!(
                    "map {} is named with two attempts ({} and {})",
                    twice[0].0, twice[0].1, twice[1].1
                ),
            });
        }
        if let Some(&(map, _)) = wanted.iter().find(|(map, _)| *map >= meta.maps) {
            return Err(Error::MapOutOfRange {
                id: id.clone(),
                map,
                maps: meta.maps,
            });
        }
        let maps: Vec<u32> = wanted.iter().map(|(map, _)| *map).collect();
        let stale = |commits: &[Arc<Commit>]| -> Vec<(u32, u64, u64)> {
            commits
                .iter()
                .zip(&wanted)
                .filter(|(c, (_, attempt))| c.attempt != *attempt)
                .map(|(c, (map, attempt))| (*map, *attempt, c.attempt))
                .collect()
        };
        let mut commits = self
            .commits_among(id, &meta, Which::Listed(&maps), partitions.clone())
            .await?;
        if !stale(&commits).is_empty() {
            // The listing kept may predate a recommit made in the same millisecond: list again
            // once before calling the output stale.
            self.cache().listings.remove(id);
            commits = self
                .commits_among(id, &meta, Which::Listed(&maps), partitions.clone())
                .await?;
        }
        let stale = stale(&commits);
        if let Some(&(map, wanted, found)) = stale.first() {
            return Err(Error::FetchFailed {
                id: id.clone(),
                partition: partitions.start,
                maps: stale.iter().map(|s| s.0).collect(),
                cause: format!(
                    "map {map} holds the output of attempt {found}, not of attempt {wanted} (the map ran again)"
                ),
            });
        }
        self.read_commits(id, &meta, commits, partitions, prefetch)
    }

    /// A read of `partitions` over `commits`.
    fn read_commits(
        &self,
        id: &ShuffleId,
        meta: &Meta,
        commits: Vec<Arc<Commit>>,
        partitions: Range<u32>,
        prefetch: usize,
    ) -> Result<PartitionReader> {
        // A read of a few partitions (a reduce task's) finds its segments in the index.
        let picks = (u64::from(partitions.end - partitions.start) * 8
            <= u64::from(meta.partitions))
        .then(|| {
            self.cache()
                .picks(id, &commits, &partitions, meta.partitions)
        });
        let mut reader = PartitionReader::start(
            self.store.clone(),
            Arc::clone(&self.files),
            id.clone(),
            commits,
            picks,
            partitions,
            prefetch,
        )?;
        // A fetch failure is followed by recommits this process must see, and may have
        // moved blocks.
        let (cache, files, failed) = (
            Arc::clone(&self.commits),
            Arc::clone(&self.files),
            id.clone(),
        );
        reader.on_failure(Box::new(move || {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.listings.remove(&failed);
            files.forget(&format!("{}/", failed.dir()));
        }));
        Ok(reader)
    }

    /// Deletes a shuffle and all of its files.
    pub async fn unregister(&self, id: &ShuffleId) -> Result<()> {
        id.check()?;
        self.forget(|gone| gone == id);
        self.store
            .delete(&id.dir(), true)
            .await
            .map_err(|e| unknown_if_missing(id, e))
    }

    /// Deletes every shuffle of an application (nothing to do if it has none).
    pub async fn remove_app(&self, app: &str) -> Result<()> {
        ShuffleId::new(app, 0).check()?;
        self.forget(|gone| gone.app == app);
        match self.store.delete(&ShuffleId::app_dir(app), true).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The maps a read takes.
#[derive(Debug, Clone)]
enum Which<'a> {
    /// Every map of a range.
    Range(Range<u32>),
    /// These maps, ascending.
    Listed(&'a [u32]),
}

impl Which<'_> {
    fn contains(&self, map: u32) -> bool {
        match self {
            Which::Range(maps) => maps.contains(&map),
            Which::Listed(maps) => maps.binary_search(&map).is_ok(),
        }
    }
}

fn check_partitions(id: &ShuffleId, partitions: &Range<u32>, meta: &Meta) -> Result<()> {
    check_range(id, partitions, meta.partitions, |partition| {
        Error::PartitionOutOfRange {
            id: id.clone(),
            partition,
            partitions: meta.partitions,
        }
    })
}

fn check_range(
    id: &ShuffleId,
    range: &Range<u32>,
    limit: u32,
    past: impl Fn(u32) -> Error,
) -> Result<()> {
    if range.start > range.end {
        return Err(Error::Invalid {
            id: id.clone(),
            problem: format!("range {}..{} is backwards", range.start, range.end),
        });
    }
    if range.end > limit {
        return Err(past(range.end - 1));
    }
    Ok(())
}

fn unknown_if_missing(id: &ShuffleId, e: StoreError) -> Error {
    match e {
        StoreError::NotFound { .. } => Error::UnknownShuffle { id: id.clone() },
        e => e.into(),
    }
}

pub(crate) async fn read_meta(store: &Store, id: &ShuffleId) -> Result<Meta> {
    id.check()?;
    let mut failed = None;
    for copy in 0..META_COPIES {
        let path = id.meta_copy(copy);
        match read_small(store, &path).await {
            Ok(raw) => return layout::parse(id, &path, &raw),
            // No metadata: no such shuffle; no further copy: the others were all there were.
            Err(e @ StoreError::NotFound { .. }) if copy == 0 => {
                return Err(unknown_if_missing(id, e));
            }
            Err(StoreError::NotFound { .. }) => break,
            // Unreadable (its node died): the next copy.
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    Err(failed.map_or_else(
        || Error::UnknownShuffle { id: id.clone() },
        |e| unknown_if_missing(id, e),
    ))
}

/// A map's commit record as read: found (in some copy of its group file), or lost with every
/// copy.
#[derive(Debug)]
pub(crate) enum Record {
    Found(Commit),
    Lost(String),
}

/// Reads the record the commit marker at `marker` points at, from the next copy of its group
/// file if one cannot be read. A marker that does not exist is the store's `NotFound`; one
/// that names no record, a [`Error::BadRecord`].
pub(crate) async fn read_marker(
    store: &Store,
    id: &ShuffleId,
    marker: &str,
    partitions: u32,
) -> Result<Record> {
    let entries = store.list(marker).await?;
    let bad = |cause: String| Error::BadRecord {
        id: id.clone(),
        path: marker.to_owned(),
        cause,
    };
    let at = match entries.as_slice() {
        [entry] => RecordRef::parse(&entry.name)
            .ok_or_else(|| bad(format!("`{}` names no record", entry.name)))?,
        other => return Err(bad(format!("{} entries, not one", other.len()))),
    };
    if at.len > 1 << 30 {
        return Err(bad(format!("a record of {} bytes", at.len)));
    }
    let group = &at.group;
    let mut cause = String::new();
    for copy in 0..group.copies {
        let path = id.group_file(&group.host, group.slot, copy);
        let raw = async {
            let mut reader = store.lookup(&path).await?.into_file()?.reader();
            let raw = reader.read_at(at.offset, at.len as usize).await?;
            if raw.len() as u64 != at.len {
                return Err(crail_store::Error::PastEndOfFile {
                    path: path.clone(),
                    offset: at.offset + raw.len() as u64,
                    size: at.offset + raw.len() as u64,
                });
            }
            Ok(raw)
        }
        .await;
        let parsed = raw.map_err(|e| format!("{path}: {e}")).and_then(|raw| {
            Commit::decode(&raw, group.clone(), partitions)
                .map_err(|e| format!("{path}: the record at {}: {e}", at.offset))
        });
        match parsed {
            Ok(commit) => return Ok(Record::Found(commit)),
            Err(why) => {
                if cause.is_empty() {
                    cause = why;
                }
            }
        }
    }
    Ok(Record::Lost(cause))
}

pub(crate) async fn read_small(store: &Store, path: &str) -> crail_store::Result<Vec<u8>> {
    store.lookup(path).await?.into_file()?.read_to_end().await
}
