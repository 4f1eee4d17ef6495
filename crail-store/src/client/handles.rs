//! Typed handles for namespace nodes, and the write lease.
//!
//! A handle is a snapshot (path and stat at the time of the call) plus the store to act
//! through; it does not pin the node. `refresh` re-reads the stat.

use crate::client::stream::{FileReader, FileWriter, MultiReader};
use crate::client::{Store, stat_of};
use crate::error::{Error, Result};
use crate::path;
use crate::proto as pb;
use crate::types::{BlockLocation, CreateOptions, DirEntry, NodeType, Stat};

/// A node of any type.
#[derive(Debug, Clone)]
pub enum Node {
    /// A file.
    File(File),
    /// A directory.
    Directory(Directory),
    /// A multifile.
    MultiFile(MultiFile),
    /// A table.
    Table(Table),
    /// A keyvalue.
    KeyValue(KeyValue),
}

impl Node {
    pub(crate) fn new(store: Store, path: String, stat: Stat, hold: u64) -> Self {
        match stat.node_type {
            NodeType::File => Self::File(File { store, path, stat }),
            NodeType::Directory => Self::Directory(Directory::new(store, path, stat)),
            NodeType::MultiFile => Self::MultiFile(MultiFile::new(store, path, stat)),
            NodeType::Table => Self::Table(Table::new(store, path, stat)),
            NodeType::KeyValue => Self::KeyValue(KeyValue::new(store, path, stat, hold)),
        }
    }

    /// The node's stat when the handle was made.
    pub fn stat(&self) -> &Stat {
        match self {
            Self::File(n) => &n.stat,
            Self::Directory(n) => &n.stat,
            Self::MultiFile(n) => &n.stat,
            Self::Table(n) => &n.stat,
            Self::KeyValue(n) => &n.stat,
        }
    }

    /// The path it was opened by.
    pub fn path(&self) -> &str {
        match self {
            Self::File(n) => &n.path,
            Self::Directory(n) => &n.path,
            Self::MultiFile(n) => &n.path,
            Self::Table(n) => &n.path,
            Self::KeyValue(n) => &n.path,
        }
    }

    /// The node's type.
    pub fn node_type(&self) -> NodeType {
        self.stat().node_type
    }

    /// The file, or a [`Error::WrongType`].
    pub fn into_file(self) -> Result<File> {
        match self {
            Self::File(f) => Ok(f),
            other => Err(other.wrong_type(NodeType::File)),
        }
    }

    /// The directory, or a [`Error::WrongType`].
    pub fn into_directory(self) -> Result<Directory> {
        match self {
            Self::Directory(d) => Ok(d),
            other => Err(other.wrong_type(NodeType::Directory)),
        }
    }

    /// The multifile, or a [`Error::WrongType`].
    pub fn into_multifile(self) -> Result<MultiFile> {
        match self {
            Self::MultiFile(m) => Ok(m),
            other => Err(other.wrong_type(NodeType::MultiFile)),
        }
    }

    /// The table, or a [`Error::WrongType`].
    pub fn into_table(self) -> Result<Table> {
        match self {
            Self::Table(t) => Ok(t),
            other => Err(other.wrong_type(NodeType::Table)),
        }
    }

    fn wrong_type(&self, expected: NodeType) -> Error {
        Error::WrongType {
            path: self.path().to_owned(),
            expected,
            actual: self.node_type(),
        }
    }
}

/// A file: bytes in blocks, written by one lease holder at a time.
#[derive(Debug, Clone)]
pub struct File {
    store: Store,
    path: String,
    stat: Stat,
}

impl File {
    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its stat when the handle was made.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// Committed size in bytes.
    pub fn size(&self) -> u64 {
        self.stat.size
    }

    /// Re-reads the stat.
    pub async fn refresh(&mut self) -> Result<()> {
        self.stat = self.store.stat(&self.path).await?;
        Ok(())
    }

    /// Locations of blocks `[first, first + count)`.
    pub async fn block_locations(&self, first: u64, count: u64) -> Result<Vec<BlockLocation>> {
        self.store
            .block_locations(self.stat.file_id, first, count)
            .await
    }

    /// Locations of every block holding committed bytes.
    pub async fn all_block_locations(&self) -> Result<Vec<BlockLocation>> {
        let blocks = self.stat.size.div_ceil(self.store.block_size());
        self.block_locations(0, blocks).await
    }

    /// Takes the write lease (append or overwrite).
    pub async fn open_write(&self) -> Result<WriteLease> {
        self.store.open_write(&self.path).await
    }

    /// A reader of the file as it was when this handle was made (see [`File::refresh`]).
    pub fn reader(&self) -> FileReader {
        FileReader::new(self.store.clone(), self.path.clone(), &self.stat)
    }

    /// A reader that knows the locations of the file's first `blocks.len()` blocks already
    /// (from [`File::all_block_locations`], say): reads there cost no namenode round trip.
    pub fn reader_with(&self, blocks: Vec<BlockLocation>) -> FileReader {
        self.reader().with_blocks(blocks)
    }

    /// The whole file, in memory.
    pub async fn read_to_end(&self) -> Result<Vec<u8>> {
        self.reader().read_to_end().await
    }
}

/// A directory.
#[derive(Debug, Clone)]
pub struct Directory {
    store: Store,
    path: String,
    stat: Stat,
}

impl Directory {
    pub(crate) fn new(store: Store, path: String, stat: Stat) -> Self {
        Self { store, path, stat }
    }

    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its stat when the handle was made.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// Its enumerable children, in name order.
    pub async fn list(&self) -> Result<Vec<DirEntry>> {
        self.store.list(&self.path).await
    }
}

/// A multifile: files written concurrently (one child per writer), read back as one stream of
/// the children in name order.
#[derive(Debug, Clone)]
pub struct MultiFile {
    store: Store,
    path: String,
    stat: Stat,
}

impl MultiFile {
    pub(crate) fn new(store: Store, path: String, stat: Stat) -> Self {
        Self { store, path, stat }
    }

    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its stat when the handle was made (size: the sum of its children's).
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// Creates child `name` and returns the lease to write it.
    pub async fn create_child(&self, name: &str, options: &CreateOptions) -> Result<WriteLease> {
        self.store
            .create_file(&path::join(&self.path, name), options)
            .await
    }

    /// The children, in name order, read as one stream.
    pub async fn reader(&self) -> Result<MultiReader> {
        Ok(MultiReader::new(self.children().await?))
    }

    /// The children in stream order (by name), with their stats.
    pub async fn children(&self) -> Result<Vec<File>> {
        let entries = self.store.list(&self.path).await?;
        Ok(entries
            .into_iter()
            .filter(|e| e.stat.node_type == NodeType::File)
            .map(|e| File {
                store: self.store.clone(),
                path: path::join(&self.path, &e.name),
                stat: e.stat,
            })
            .collect())
    }
}

/// A table: a container of keyvalues.
#[derive(Debug, Clone)]
pub struct Table {
    store: Store,
    path: String,
    stat: Stat,
}

impl Table {
    pub(crate) fn new(store: Store, path: String, stat: Stat) -> Self {
        Self { store, path, stat }
    }

    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its stat when the handle was made.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// Starts writing the value of `key` (see [`Store::put`]).
    pub async fn put(&self, key: &str, options: &CreateOptions) -> Result<WriteLease> {
        self.store.put(&path::join(&self.path, key), options).await
    }

    /// The current value of `key`, held while the handle lives (see [`Store::get`]).
    pub async fn get(&self, key: &str) -> Result<KeyValue> {
        self.store.get(&path::join(&self.path, key)).await
    }

    /// Its keys, in order.
    pub async fn keys(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list(&self.path)
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }
}

/// A keyvalue's value. From [`Store::get`] or [`Table::get`] it holds the value: its blocks
/// stay valid while the handle lives even if the key is re-put or deleted. Dropping the handle
/// releases the hold in the background; [`KeyValue::release`] does it now.
#[derive(Debug)]
pub struct KeyValue {
    store: Store,
    path: String,
    stat: Stat,
    hold: u64,
}

impl Clone for KeyValue {
    /// A clone is a snapshot without a hold of its own.
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            path: self.path.clone(),
            stat: self.stat.clone(),
            hold: 0,
        }
    }
}

impl KeyValue {
    pub(crate) fn new(store: Store, path: String, stat: Stat, hold: u64) -> Self {
        Self {
            store,
            path,
            stat,
            hold,
        }
    }

    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The value's stat.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// The value's size in bytes.
    pub fn size(&self) -> u64 {
        self.stat.size
    }

    /// Whether this handle holds the value.
    pub fn is_held(&self) -> bool {
        self.hold != 0
    }

    /// Locations of the value's blocks `[first, first + count)`.
    pub async fn block_locations(&self, first: u64, count: u64) -> Result<Vec<BlockLocation>> {
        self.store
            .block_locations(self.stat.file_id, first, count)
            .await
    }

    /// A reader of the value. Its blocks stay valid while this handle holds the value.
    pub fn reader(&self) -> FileReader {
        FileReader::new(self.store.clone(), self.path.clone(), &self.stat)
    }

    /// The whole value, in memory.
    pub async fn read_to_end(&self) -> Result<Vec<u8>> {
        self.reader().read_to_end().await
    }

    /// Extends the hold (holds expire after the namenode's lease timeout).
    pub async fn renew(&self) -> Result<()> {
        if self.hold == 0 {
            return Ok(());
        }
        self.store.renew_token(self.stat.file_id, self.hold).await
    }

    /// Releases the hold now.
    pub async fn release(mut self) -> Result<()> {
        match std::mem::take(&mut self.hold) {
            0 => Ok(()),
            hold => self.store.release_token(self.stat.file_id, hold).await,
        }
    }
}

impl Drop for KeyValue {
    fn drop(&mut self) {
        if self.hold != 0 {
            self.store
                .release_in_background(self.stat.file_id, self.hold);
        }
    }
}

/// The right to write one file (or one keyvalue value): allocate its blocks, then close with
/// its size. The lease expires unless used (allocate renews it) or renewed. Dropping it
/// without closing aborts the write: blocks past the last committed size are freed, a
/// keyvalue value being written is discarded.
#[derive(Debug)]
pub struct WriteLease {
    store: Store,
    path: String,
    stat: Stat,
    token: u64,
    /// Made from a [`LeaseTicket`]: the lease belongs to someone else, so dropping or
    /// aborting this one gives nothing up.
    borrowed: bool,
}

/// A write lease as another process can use it: the file, its data object, the lease token
/// and the committed size to append from. A token is a capability: whoever holds it can write
/// the file's blocks, so tickets only travel to trusted peers (a node's shuffle service hands
/// its writer groups to the engines on that node this way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTicket {
    /// The file's path.
    pub path: String,
    /// Its data object.
    pub file_id: u64,
    /// The lease token.
    pub token: u64,
    /// Where appending starts (the committed size).
    pub size: u64,
}

impl WriteLease {
    pub(crate) fn new(store: Store, path: String, stat: Stat, token: u64) -> Self {
        Self {
            store,
            path,
            stat,
            token,
            borrowed: false,
        }
    }

    /// A lease written through `store` on the strength of someone else's `ticket`: writing,
    /// [`WriteLease::commit`] and renewing work as on the owner's; dropping it or
    /// [`WriteLease::abort`] leaves the owner's lease alone.
    pub(crate) fn borrow(store: Store, ticket: LeaseTicket) -> Self {
        let now = std::time::SystemTime::now();
        let stat = Stat {
            id: 0,
            node_type: crate::NodeType::File,
            size: ticket.size,
            block_count: ticket.size.div_ceil(store.block_size().max(1)),
            file_id: ticket.file_id,
            placement: crate::Placement::default(),
            enumerable: true,
            created: now,
            modified: now,
            children: 0,
        };
        Self {
            store,
            path: ticket.path,
            stat,
            token: ticket.token,
            borrowed: true,
        }
    }

    /// This lease as a ticket, appending from `size` (at most what is committed).
    pub fn ticket(&self, size: u64) -> LeaseTicket {
        LeaseTicket {
            path: self.path.clone(),
            file_id: self.stat.file_id,
            token: self.token,
            size,
        }
    }

    /// The path being written.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The data object being written.
    pub fn file_id(&self) -> u64 {
        self.stat.file_id
    }

    /// The node's stat when the lease was taken (size: last committed size).
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// The store's block size.
    pub fn block_size(&self) -> u64 {
        self.store.block_size()
    }

    /// Blocks `[first, first + count)`: existing ones are returned, missing ones allocated
    /// (all or none; [`Error::StoreFull`] leaves nothing behind). `first` may be at most the
    /// current block count.
    pub async fn allocate(&self, first: u64, count: u64) -> Result<Vec<BlockLocation>> {
        let (file_id, lease) = (self.stat.file_id, self.token);
        self.store
            .block_range(first, count, |first, count| pb::AllocateRequest {
                file_id,
                lease,
                first,
                count,
            })
            .await
    }

    /// Extends the lease.
    pub async fn renew(&self) -> Result<()> {
        self.store.renew_token(self.stat.file_id, self.token).await
    }

    /// A stream writing through this lease, from the committed size (append).
    pub fn writer(self) -> FileWriter {
        FileWriter::new(self.store.clone(), self)
    }

    /// Commits `size` bytes and keeps the lease: readers that look the file up from now on
    /// see that size, and writing goes on (blocks past it stay allocated). Files only.
    pub async fn commit(&mut self, size: u64) -> Result<Stat> {
        self.stat = self.send_close(size, true).await?;
        Ok(self.stat.clone())
    }

    /// Commits `size` bytes as [`WriteLease::commit`] does, through a shared handle (whose
    /// [`WriteLease::stat`] keeps the size it had): for an owner that lets others write into
    /// the space it commits.
    pub async fn commit_shared(&self, size: u64) -> Result<Stat> {
        self.send_close(size, true).await
    }

    /// Commits `size` bytes (blocks past it are freed) and gives up the lease. Returns the
    /// node's new stat.
    pub async fn close(mut self, size: u64) -> Result<Stat> {
        let stat = self.send_close(size, false).await?;
        // Committed: nothing left to abort. (On error the drop below aborts the write.)
        self.token = 0;
        Ok(stat)
    }

    async fn send_close(&self, size: u64, keep: bool) -> Result<Stat> {
        let reply = self
            .store
            .call(&pb::CloseRequest {
                file_id: self.stat.file_id,
                lease: self.token,
                size,
                keep,
            })
            .await?;
        stat_of(reply.node)
    }

    /// Gives up the lease without committing anything new (a borrowed lease: only this
    /// handle).
    pub async fn abort(mut self) -> Result<()> {
        let token = std::mem::take(&mut self.token);
        if self.borrowed {
            return Ok(());
        }
        self.store.release_token(self.stat.file_id, token).await
    }
}

impl Drop for WriteLease {
    fn drop(&mut self) {
        if self.token != 0 && !self.borrowed {
            self.store
                .release_in_background(self.stat.file_id, self.token);
        }
    }
}
