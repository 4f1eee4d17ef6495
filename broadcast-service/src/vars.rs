//! Variables in the store: [`VarId`], [`Broadcasts`] (put, get, destroy, an application's
//! end) and [`VarReader`], what both halves read and write through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crail_store::{
    CreateOptions, Error as StoreError, FileReader, KeyValue, NodeType, Placement, Store,
};

use crate::{Error, Result};

/// Where variables live in the store.
pub const ROOT: &str = "/crail-broadcast";

/// How often a reader extends its hold on the value (holds last the namenode's lease
/// timeout, 10 s by default).
const RENEW_EVERY: Duration = Duration::from_secs(3);

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

/// A variable: its application and its name in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId {
    /// The application (a Spark application id, a Ray job).
    pub app: String,
    /// The variable's name (a Spark broadcast id, an object id).
    pub id: String,
}

impl VarId {
    /// Variable `id` of `app`.
    pub fn new(app: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            id: id.into(),
        }
    }

    /// Both names must be path components: 1 to 200 letters, digits, `.`, `_` or `-`, not
    /// starting with `.`.
    pub(crate) fn check(&self) -> Result<()> {
        for (what, name) in [("app", &self.app), ("variable", &self.id)] {
            if !is_name(name) {
                return Err(Error::Invalid {
                    var: self.clone(),
                    problem: format!(
                        "a{} {what} name is 1 to 200 letters, digits, '.', '_' or '-', not starting with '.'",
                        if what == "app" { "n" } else { "" }
                    ),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn app_table(app: &str) -> String {
        format!("{ROOT}/{app}")
    }

    pub(crate) fn path(&self) -> String {
        format!("{ROOT}/{}/{}", self.app, self.id)
    }
}

impl std::fmt::Display for VarId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.app, self.id)
    }
}

pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The broadcast variables of a store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broadcasts {
    store: Store,
}

impl Broadcasts {
    /// The variables of `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store they live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes variable `var` from `data`; see [`Broadcasts::put_stream`].
    pub async fn put(&self, var: &VarId, data: &[u8]) -> Result<u64> {
        let mut data = data;
        self.put_stream(var, &mut data).await
    }

    /// Writes variable `var` from `source` and returns its size. Readers see it only once
    /// the whole value is written. A variable that exists is refused
    /// ([`Error::AlreadyExists`]: values are immutable; destroy it first). When the store
    /// fills up the put fails with [`Error::StoreFull`] and leaves nothing behind.
    pub async fn put_stream<R>(&self, var: &VarId, source: &mut R) -> Result<u64>
    where
        R: tokio::io::AsyncRead + Unpin + ?Sized,
    {
        use tokio::io::AsyncReadExt;
        var.check()?;
        self.app_table(&var.app).await?;
        let path = var.path();
        match self.store.lookup(&path).await {
            Ok(_) => return Err(Error::AlreadyExists { var: var.clone() }),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let spread = CreateOptions::default().placement(Placement::default().spread());
        let lease = self.store.put(&path, &spread).await?;
        let mut writer = lease.writer();
        let mut buf = vec![0u8; self.store.buffers().buffer_size()];
        let written = async {
            let mut total = 0u64;
            loop {
                let n = source.read(&mut buf).await.map_err(|e| Error::Source {
                    var: var.clone(),
                    cause: e.to_string(),
                })?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n]).await?;
                total += n as u64;
            }
            Ok::<_, Error>(total)
        }
        .await;
        let result = match written {
            Ok(total) => writer.close().await.map(|_| total).map_err(Error::from),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        };
        match result {
            Ok(total) => Ok(total),
            Err(e) => {
                // A key whose first value failed has no value: leave no name behind either.
                if matches!(
                    self.store.get(&path).await,
                    Err(StoreError::NotFound { .. })
                ) {
                    let _ = self.store.delete(&path, false).await;
                }
                Err(match e {
                    Error::Store(StoreError::StoreFull { .. }) => Error::StoreFull {
                        var: var.clone(),
                        cause: e.to_string(),
                    },
                    e => e,
                })
            }
        }
    }

    /// Opens variable `var` for reading. A variable whose put has not finished is waited for
    /// up to `wait` (then [`Error::BeingWritten`]); one that does not exist (never put, or
    /// destroyed) is [`Error::UnknownVariable`]. The value stays readable while the reader
    /// lives, even if it is destroyed meanwhile.
    pub async fn get(&self, var: &VarId, wait: Duration) -> Result<VarReader> {
        var.check()?;
        let path = var.path();
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.store.get(&path).await {
                Ok(value) => return Ok(VarReader::new(var.clone(), value)),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // No current value: a first put in progress still shows its key.
            if !self.being_written(var).await? {
                return Err(Error::UnknownVariable { var: var.clone() });
            }
            if Instant::now() >= deadline {
                return Err(Error::BeingWritten {
                    var: var.clone(),
                    waited: wait,
                });
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Reads variable `var` whole into memory (see [`Broadcasts::get`]).
    pub async fn read_all(&self, var: &VarId, wait: Duration) -> Result<Vec<u8>> {
        let mut reader = self.get(var, wait).await?;
        let mut out = Vec::with_capacity(usize::try_from(reader.size()).unwrap_or(0));
        while let Some(chunk) = reader.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Destroys variable `var`: new gets do not find it; its blocks are freed once the
    /// readers that hold it finish.
    pub async fn destroy(&self, var: &VarId) -> Result<()> {
        var.check()?;
        match self.store.delete(&var.path(), false).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(Error::UnknownVariable { var: var.clone() }),
            Err(e) => Err(e.into()),
        }
    }

    /// Destroys every variable of `app` (nothing to do if it has none).
    pub async fn remove_app(&self, app: &str) -> Result<()> {
        VarId::new(app, "x").check()?;
        match self.store.delete(&VarId::app_table(app), true).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `var`'s key exists without a value (its first put is writing).
    async fn being_written(&self, var: &VarId) -> Result<bool> {
        match self.store.list(&VarId::app_table(&var.app)).await {
            Ok(entries) => Ok(entries.iter().any(|e| e.name == var.id)),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The application's table (and the root), created when missing.
    async fn app_table(&self, app: &str) -> Result<()> {
        let options = CreateOptions::default();
        match self.store.create_dir(ROOT, &options).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let table = VarId::app_table(app);
        match self.store.create_table(&table, &options).await {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists { .. }) => {
                let stat = self.store.stat(&table).await?;
                if stat.node_type == NodeType::Table {
                    Ok(())
                } else {
                    Err(StoreError::WrongType {
                        path: table,
                        expected: NodeType::Table,
                        actual: stat.node_type,
                    }
                    .into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A variable being read: its value's chunks in order, several blocks fetched at once from
/// the datanodes they are striped over. Holds the value while it lives (renewing the hold in
/// the background, so a reader that pauses keeps it).
#[derive(Debug)]
pub struct VarReader {
    var: VarId,
    value: Arc<KeyValue>,
    reader: FileReader,
    renewer: tokio::task::JoinHandle<()>,
}

impl VarReader {
    pub(crate) fn new(var: VarId, value: KeyValue) -> Self {
        let reader = value.reader();
        let value = Arc::new(value);
        let held = Arc::clone(&value);
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(e) = held.renew().await {
                    tracing::warn!("cannot renew the hold on {}: {e}", held.path());
                    return;
                }
            }
        });
        Self {
            var,
            value,
            reader,
            renewer,
        }
    }

    /// The variable.
    pub fn var(&self) -> &VarId {
        &self.var
    }

    /// The value's size in bytes.
    pub fn size(&self) -> u64 {
        self.value.size()
    }

    /// The value's data object in the store: a variable destroyed and put again has a new
    /// one, so a copy made from another object is stale.
    pub fn object(&self) -> u64 {
        self.value.stat().file_id
    }

    /// The next chunk of the value (at most a block), or `None` at its end. A block that
    /// cannot be read (its datanode died) is [`Error::Unreadable`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        self.reader
            .next_buffer()
            .await
            .map(|buf| buf.map(|b| b.freeze()))
            .map_err(|e| Error::Unreadable {
                var: self.var.clone(),
                cause: e.to_string(),
            })
    }
}

impl Drop for VarReader {
    fn drop(&mut self) {
        // The hold goes when the last handle on the value does (its drop releases it).
        self.renewer.abort();
    }
}
