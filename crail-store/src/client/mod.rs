//! The async client: [`Store`] and the typed node handles it returns.

mod data;
mod handles;
mod rpc;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use handles::{Directory, File, KeyValue, LeaseTicket, MultiFile, Node, Table, WriteLease};
pub use stream::{AsyncBufferReader, AsyncFileWriter, FileReader, FileWriter, MultiReader};

use crate::buffer::BufferPool;
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::path;
use crate::proto as pb;
use crate::types::{
    BlockLocation, ClusterInfo, CreateOptions, DatanodeId, DatanodeSpec, DirEntry, NodeType,
    Registration, Stat,
};
use rpc::{Connection, Endpoint};

/// A connection to a crail store. Cheap to clone; clones share one pipelined connection, so
/// many tasks can issue requests at once. The connection closes when the last clone drops.
///
/// ```no_run
/// # async fn demo() -> crail_store::Result<()> {
/// use crail_store::{ClientConfig, CreateOptions, Store};
///
/// let store = Store::connect(&ClientConfig::for_namenode("127.0.0.1:9060")).await?;
/// store.create_dir("/data", &CreateOptions::default()).await?;
/// let lease = store.create_file("/data/part-0", &CreateOptions::default()).await?;
/// let blocks = lease.allocate(0, 2).await?; // where to write the first two blocks
/// lease.close(2 * store.block_size()).await?;
/// assert_eq!(store.stat("/data/part-0").await?.size, 2 * store.block_size());
/// # let _ = blocks;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The namenode connection; replaced by a new one when found closed.
    conn: parking_lot::Mutex<Arc<Connection>>,
    /// Held while a closed namenode connection is replaced (one new connection, not one per
    /// caller).
    reopening: tokio::sync::Mutex<()>,
    config: ClientConfig,
    endpoint: Endpoint,
    block_size: u64,
    max_blocks_per_request: u64,
    /// Data-plane connections, one per datanode address.
    datanodes:
        parking_lot::Mutex<std::collections::HashMap<std::net::SocketAddr, Arc<data::DataConn>>>,
    /// This client's host, for the same-host fast path (`None`: fast path off).
    host: Option<std::net::IpAddr>,
    /// Datanodes on this host whose fast path failed once: TCP from then on.
    no_fast_path: parking_lot::Mutex<std::collections::HashSet<std::net::SocketAddr>>,
    buffers: BufferPool,
}

impl Store {
    /// Connects to the namenode in `config` (handshake included) and learns the block size.
    pub async fn connect(config: &ClientConfig) -> Result<Self> {
        let endpoint = Endpoint {
            addr: config.namenode.clone(),
            local_host: config.local_host,
            secret: config.secret.clone(),
            name: config.name.clone(),
            connect_timeout: config.connect_timeout,
            rpc_timeout: config.rpc_timeout,
            max_frame: usize::try_from(config.max_frame.bytes()).unwrap_or(usize::MAX),
            busy_poll: config.busy_poll,
            tls: config.tls.clone(),
        };
        let conn = Connection::open(&endpoint).await?;
        let info = conn.call(&pb::ClusterInfoRequest {}).await?;
        if info.block_size == 0 {
            return Err(Error::malformed("cluster info", "block size 0"));
        }
        // Buffers of whole blocks (or of the configured size if smaller) so one buffer is one
        // data-plane request.
        let buffer = config.buffer_size.bytes().clamp(4096, info.block_size);
        let buffer = usize::try_from(buffer).unwrap_or(1 << 20);
        // Idle buffers kept for reuse: a buffer freed and allocated again is fresh memory, which
        // the kernel clears first (on this machine that showed as 2 to 3% of a TeraSort's CPU
        // when only 16 were kept). Readers hold a segment's buffers and writers a buffer per
        // partition, so a busy client's working set is tens of them.
        let idle = usize::try_from(config.idle_buffers.bytes()).unwrap_or(usize::MAX);
        let keep = (config.outstanding.max(1) * 4).max(idle / buffer);
        let host = if config.fast_path {
            config.local_host.or(conn.local_ip())
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                conn: parking_lot::Mutex::new(Arc::new(conn)),
                reopening: tokio::sync::Mutex::new(()),
                config: config.clone(),
                endpoint,
                block_size: info.block_size,
                max_blocks_per_request: info.max_blocks_per_request.max(1),
                datanodes: parking_lot::Mutex::default(),
                host,
                no_fast_path: parking_lot::Mutex::default(),
                buffers: BufferPool::new(buffer, keep),
            }),
        })
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Size of every block, in bytes.
    pub fn block_size(&self) -> u64 {
        self.inner.block_size
    }

    /// The namenode's address.
    pub fn namenode(&self) -> &str {
        &self.inner.endpoint.addr
    }

    /// The pool of stream buffers (each [`ClientConfig::buffer_size`] bytes, at most a block).
    pub fn buffers(&self) -> &BufferPool {
        &self.inner.buffers
    }

    /// The data-plane connection to the datanode at `addr` (opened on first use, reopened if
    /// it broke).
    pub(crate) async fn datanode(&self, addr: std::net::SocketAddr) -> Result<Arc<data::DataConn>> {
        if let Some(conn) = self.inner.datanodes.lock().get(&addr)
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let conn = match self.open_datanode(addr).await {
            Ok(conn) => Arc::new(conn),
            Err(e) => {
                // Only idle long, and no new one now: the old one may still do.
                let old = self.inner.datanodes.lock().get(&addr).cloned();
                return match old {
                    Some(old) if !old.is_broken() => Ok(old),
                    _ => Err(e),
                };
            }
        };
        let mut map = self.inner.datanodes.lock();
        match map.get(&addr) {
            // Another task connected meanwhile: use one connection.
            Some(existing) if !existing.is_closed() => Ok(existing.clone()),
            _ => {
                map.insert(addr, conn.clone());
                Ok(conn)
            }
        }
    }

    /// Opens a data-plane connection: through shared memory to a datanode on this host (if
    /// that works), TCP otherwise.
    async fn open_datanode(&self, addr: std::net::SocketAddr) -> Result<data::DataConn> {
        let (endpoint, timeout) = (&self.inner.endpoint, self.inner.config.data_timeout);
        if self.inner.host == Some(addr.ip()) && !self.inner.no_fast_path.lock().contains(&addr) {
            match data::DataConn::open_local(addr, endpoint, timeout, self.inner.block_size).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "no same-host fast path; using TCP");
                    self.inner.no_fast_path.lock().insert(addr);
                }
            }
        }
        data::DataConn::open(addr, endpoint, timeout).await
    }

    /// Whether data to and from the datanode at `addr` goes through shared memory (it is on
    /// this client's host and serves the fast path) rather than TCP. Connects if needed.
    pub async fn uses_fast_path(&self, addr: std::net::SocketAddr) -> Result<bool> {
        Ok(self.datanode(addr).await?.is_local())
    }

    /// Sends a namenode request. While the namenode cannot be reached, tries again for up to
    /// `reconnect_timeout` with backoff; a request in flight when its connection broke goes
    /// again only if it is idempotent.
    pub(crate) async fn call<R: crate::wire::kind::Rpc>(&self, request: &R) -> Result<R::Reply> {
        let give_up = tokio::time::Instant::now() + self.inner.config.reconnect_timeout;
        let mut backoff = std::time::Duration::from_millis(50);
        let mut idle_retried = false;
        loop {
            // Whether the request went out, and the error it met.
            let (error, sent) = match self.namenode_conn().await {
                Ok(conn) => match conn.call(request).await {
                    Ok(reply) => return Ok(reply),
                    Err(e) => (e, true),
                },
                Err(e) => (e, false),
            };
            // The namenode closed the connection as idle without reading this request: it was
            // not done, so it goes once more, at once, on a new connection.
            if error.is_idle_close() && !idle_retried {
                idle_retried = true;
                continue;
            }
            // Unreachable with nothing sent: any request may wait for the namenode; a request
            // in flight, or answered that the namenode waits for its datanodes (Recovering),
            // only if sending it twice is harmless.
            let again = match &error {
                Error::Recovering { .. } => request.idempotent(),
                e => e.is_unreachable() && (!sent || request.idempotent()),
            };
            if !again || tokio::time::Instant::now() + backoff > give_up {
                return Err(error);
            }
            tracing::debug!(error = %error, "namenode unreachable; trying again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
        }
    }

    /// The namenode connection: a new one if the last was closed (dropped as idle, the
    /// namenode restarted, the network broke). Calls in flight on a connection that breaks
    /// fail; the next ones reconnect.
    async fn namenode_conn(&self) -> Result<Arc<Connection>> {
        let current = self.inner.conn.lock().clone();
        if !current.is_closed() {
            return Ok(current);
        }
        let _one = self.inner.reopening.lock().await;
        let current = self.inner.conn.lock().clone();
        if !current.is_closed() {
            return Ok(current);
        }
        let fresh = match Connection::open(&self.inner.endpoint).await {
            Ok(fresh) => Arc::new(fresh),
            // Only idle long, and no new one now (busy, a blip): the old one may still do.
            Err(_) if !current.is_broken() => return Ok(current),
            Err(e) => return Err(e),
        };
        tracing::debug!(namenode = %self.inner.endpoint.addr, "namenode connection reopened");
        *self.inner.conn.lock() = fresh.clone();
        Ok(fresh)
    }

    /// Checks path syntax before sending, so obviously bad paths fail without a round trip.
    /// Length and depth limits are the namenode's to enforce (its configuration decides).
    fn path_bytes(path: &str) -> Result<Bytes> {
        let syntax_only = path::PathLimits {
            max_path_len: usize::MAX,
            max_name_len: usize::MAX,
            max_depth: usize::MAX,
        };
        path::check(path, &syntax_only)
            .map_err(|problem| Error::invalid_path(path.as_bytes(), problem))?;
        Ok(Bytes::copy_from_slice(path.as_bytes()))
    }

    /// Creates a node; `replace` lets a keyvalue that exists get a new value (a re-put).
    async fn create_raw(
        &self,
        path: &str,
        node_type: NodeType,
        options: &CreateOptions,
        replace: bool,
    ) -> Result<(Stat, u64)> {
        let reply = self
            .call(&pb::CreateRequest {
                path: Self::path_bytes(path)?,
                r#type: pb::NodeType::from(node_type) as i32,
                placement: Some(pb::Placement::from(&options.placement)),
                enumerable: options.enumerable,
                replace,
            })
            .await?;
        Ok((stat_of(reply.node)?, reply.lease))
    }

    /// Creates a node of any type and returns its handle; [`Error::AlreadyExists`] if the path
    /// exists. A file or keyvalue made this way is committed empty at once; use
    /// [`Store::create_file`] or [`Store::put`] to write one.
    pub async fn create(
        &self,
        path: &str,
        node_type: NodeType,
        options: &CreateOptions,
    ) -> Result<Node> {
        let (mut stat, lease) = self.create_raw(path, node_type, options, false).await?;
        if lease != 0 {
            let reply = self
                .call(&pb::CloseRequest {
                    file_id: stat.file_id,
                    lease,
                    size: 0,
                    keep: false,
                })
                .await?;
            stat = stat_of(reply.node)?;
        }
        Ok(Node::new(self.clone(), path.to_owned(), stat, 0))
    }

    /// Creates a directory.
    pub async fn create_dir(&self, path: &str, options: &CreateOptions) -> Result<Directory> {
        let (stat, _) = self
            .create_raw(path, NodeType::Directory, options, false)
            .await?;
        Ok(Directory::new(self.clone(), path.to_owned(), stat))
    }

    /// Creates a multifile: a container whose children are written concurrently and read back
    /// as one stream.
    pub async fn create_multifile(&self, path: &str, options: &CreateOptions) -> Result<MultiFile> {
        let (stat, _) = self
            .create_raw(path, NodeType::MultiFile, options, false)
            .await?;
        Ok(MultiFile::new(self.clone(), path.to_owned(), stat))
    }

    /// Creates a table: a container of keyvalues.
    pub async fn create_table(&self, path: &str, options: &CreateOptions) -> Result<Table> {
        let (stat, _) = self
            .create_raw(path, NodeType::Table, options, false)
            .await?;
        Ok(Table::new(self.clone(), path.to_owned(), stat))
    }

    /// Creates an empty file and returns the lease to write it.
    pub async fn create_file(&self, path: &str, options: &CreateOptions) -> Result<WriteLease> {
        let (stat, lease) = self
            .create_raw(path, NodeType::File, options, false)
            .await?;
        Ok(WriteLease::new(self.clone(), path.to_owned(), stat, lease))
    }

    /// Writes `data` as a new file at `path` and commits it. Returns its stat.
    pub async fn write_file(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<Stat> {
        let mut writer = self.create_file(path, options).await?.writer();
        writer.write(data).await?;
        writer.close().await
    }

    /// Puts `data` as the value of the keyvalue at `path` (created or replaced; readers of
    /// the old value keep it until they let go). Returns the value's stat.
    pub async fn put_value(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<Stat> {
        let mut writer = self.put(path, options).await?.writer();
        writer.write(data).await?;
        writer.close().await
    }

    /// Starts writing a keyvalue's value (creating the keyvalue if needed). The value replaces
    /// the current one when the lease closes; the last writer to close wins.
    pub async fn put(&self, path: &str, options: &CreateOptions) -> Result<WriteLease> {
        let (stat, lease) = self
            .create_raw(path, NodeType::KeyValue, options, true)
            .await?;
        Ok(WriteLease::new(self.clone(), path.to_owned(), stat, lease))
    }

    /// Takes the write lease of an existing file, to append or overwrite.
    pub async fn open_write(&self, path: &str) -> Result<WriteLease> {
        let reply = self
            .call(&pb::OpenWriteRequest {
                path: Self::path_bytes(path)?,
            })
            .await?;
        Ok(WriteLease::new(
            self.clone(),
            path.to_owned(),
            stat_of(reply.node)?,
            reply.lease,
        ))
    }

    async fn lookup_raw(&self, path: &str, hold: bool) -> Result<(Stat, u64)> {
        let reply = self
            .call(&pb::LookupRequest {
                path: Self::path_bytes(path)?,
                hold,
            })
            .await?;
        Ok((stat_of(reply.node)?, reply.hold))
    }

    /// The node at `path`, as a typed handle. A keyvalue handle from here holds nothing: use
    /// [`Store::get`] to read a value safely while it may be replaced.
    pub async fn lookup(&self, path: &str) -> Result<Node> {
        let (stat, _) = self.lookup_raw(path, false).await?;
        Ok(Node::new(self.clone(), path.to_owned(), stat, 0))
    }

    /// The current value of a keyvalue, held (its blocks stay valid even if it is replaced)
    /// until the handle is released or dropped.
    pub async fn get(&self, path: &str) -> Result<KeyValue> {
        let (stat, hold) = self.lookup_raw(path, true).await?;
        if stat.node_type != NodeType::KeyValue {
            return Err(Error::WrongType {
                path: path.to_owned(),
                expected: NodeType::KeyValue,
                actual: stat.node_type,
            });
        }
        Ok(KeyValue::new(self.clone(), path.to_owned(), stat, hold))
    }

    /// Type, size, times and block count of the node at `path`.
    pub async fn stat(&self, path: &str) -> Result<Stat> {
        Ok(self.lookup_raw(path, false).await?.0)
    }

    /// Deletes the node at `path`; a container with children only when `recursive`.
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        self.call(&pb::DeleteRequest {
            path: Self::path_bytes(path)?,
            recursive,
        })
        .await?;
        Ok(())
    }

    /// Moves `from` to `to` atomically; `to` must not exist.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.call(&pb::RenameRequest {
            from: Self::path_bytes(from)?,
            to: Self::path_bytes(to)?,
        })
        .await?;
        Ok(())
    }

    /// Every enumerable child of a container, in name order (fetched page by page).
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = self.list_page(path, &after, 0).await?;
            let Some(last) = page.last() else {
                // An empty page ends the listing whatever `more` says.
                return Ok(all);
            };
            after = last.name.clone();
            all.extend(page);
            if !more {
                return Ok(all);
            }
        }
    }

    /// One page of a listing: up to `limit` entries (0: the server's page size) after the
    /// name `start_after` (empty: from the start), and whether more follow.
    pub async fn list_page(
        &self,
        path: &str,
        start_after: &str,
        limit: u32,
    ) -> Result<(Vec<DirEntry>, bool)> {
        let reply = self
            .call(&pb::ListRequest {
                path: Self::path_bytes(path)?,
                start_after: start_after.to_owned(),
                limit,
            })
            .await?;
        let entries = reply
            .entries
            .into_iter()
            .map(|e| {
                Ok(DirEntry {
                    stat: stat_of(e.node)?,
                    name: e.name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, reply.more))
    }

    /// Locations of blocks `[first, first + count)` of a data object (file id from a stat).
    /// Blocks on dead datanodes fail the call with [`Error::LostBlocks`].
    pub async fn block_locations(
        &self,
        file_id: u64,
        first: u64,
        count: u64,
    ) -> Result<Vec<BlockLocation>> {
        self.block_range(first, count, |first, count| pb::LocateRequest {
            file_id,
            first,
            count,
        })
        .await
    }

    /// Runs a block request over `[first, first + count)` in pieces the namenode accepts.
    pub(crate) async fn block_range<R>(
        &self,
        first: u64,
        count: u64,
        request: impl Fn(u64, u64) -> R,
    ) -> Result<Vec<BlockLocation>>
    where
        R: crate::wire::kind::Rpc<Reply = pb::BlocksReply>,
    {
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 16));
        let end = first.saturating_add(count);
        let mut at = first;
        while at < end {
            let n = (end - at).min(self.inner.max_blocks_per_request);
            for b in self.call(&request(at, n)).await?.blocks {
                out.push(BlockLocation::try_from(b)?);
            }
            at += n;
        }
        Ok(out)
    }

    /// Extends a write lease or read hold.
    pub(crate) async fn renew_token(&self, file_id: u64, token: u64) -> Result<()> {
        self.call(&pb::RenewRequest { file_id, token }).await?;
        Ok(())
    }

    /// Drops a read hold, or aborts a write.
    pub(crate) async fn release_token(&self, file_id: u64, token: u64) -> Result<()> {
        self.call(&pb::ReleaseRequest { file_id, token }).await?;
        Ok(())
    }

    /// [`Store::release_token`] from a destructor: in the background if a runtime is around,
    /// otherwise the token simply expires.
    pub(crate) fn release_in_background(&self, file_id: u64, token: u64) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.clone();
            runtime.spawn(async move {
                let _ = store.release_token(file_id, token).await;
            });
        }
    }

    /// Writes a file on the strength of another holder's lease (see [`LeaseTicket`]),
    /// appending from the ticket's size. Dropping the writer leaves the owner's lease alone.
    pub fn borrow_lease(&self, ticket: LeaseTicket) -> FileWriter {
        WriteLease::borrow(self.clone(), ticket).writer()
    }

    /// Datanodes, block size and namespace counts as the namenode sees them.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        let reply = self.call(&pb::ClusterInfoRequest {}).await?;
        let block_size = reply.block_size;
        Ok(ClusterInfo {
            block_size,
            datanodes: reply
                .datanodes
                .into_iter()
                .map(|d| d.into_status(block_size))
                .collect::<Result<_>>()?,
            nodes: reply.nodes,
            files: reply.files,
            lease_timeout: Duration::from_millis(reply.lease_timeout_ms),
            heartbeat_interval: Duration::from_millis(reply.heartbeat_interval_ms),
        })
    }

    /// Registers a datanode tier (datanode side; the connection must have proved the
    /// datanodes' secret, and connect from the announced host). Returns its id and the token
    /// its heartbeats carry.
    pub async fn register_datanode(&self, spec: &DatanodeSpec) -> Result<Registration> {
        self.register_datanode_as(spec, &[], &[]).await
    }

    /// Registers a datanode tier under its own identity `uuid`, reporting the blocks it holds
    /// data of (block number, generation): a tier that registered before under `uuid` (before
    /// a pause, or with a namenode that restarted since) gets its old id back and those of its
    /// blocks that files still hold re-adopted.
    pub async fn register_datanode_as(
        &self,
        spec: &DatanodeSpec,
        uuid: &[u8],
        blocks: &[(u64, u64)],
    ) -> Result<Registration> {
        let mut report = Vec::with_capacity(blocks.len() * 16);
        for (block, generation) in blocks {
            report.extend_from_slice(&block.to_le_bytes());
            report.extend_from_slice(&generation.to_le_bytes());
        }
        let reply = self
            .call(&pb::RegisterDatanodeRequest {
                host: spec.host.to_string(),
                address: spec.address.to_string(),
                tier: spec.tier.clone(),
                storage_class: spec.storage_class,
                capacity_bytes: spec.capacity,
                uuid: Bytes::copy_from_slice(uuid),
                blocks: report.into(),
            })
            .await?;
        Ok(Registration {
            id: DatanodeId(reply.id),
            incarnation: reply.incarnation,
            grant_salt: reply.grant_salt,
            adopted_blocks: reply.adopted_blocks,
            lost_blocks: reply.lost_blocks,
        })
    }

    /// Tells the namenode a datanode is alive. [`Error::UnknownDatanode`] means it was declared
    /// dead (or the namenode restarted) and must register again.
    pub async fn heartbeat(&self, registration: &Registration) -> Result<()> {
        self.call(&pb::HeartbeatRequest {
            id: registration.id.0,
            incarnation: registration.incarnation,
        })
        .await?;
        Ok(())
    }

    /// Takes a datanode out of service (its blocks are lost).
    pub async fn deregister_datanode(&self, registration: &Registration) -> Result<()> {
        self.call(&pb::DeregisterDatanodeRequest {
            id: registration.id.0,
            incarnation: registration.incarnation,
        })
        .await?;
        Ok(())
    }
}

pub(crate) fn stat_of(node: Option<pb::NodeInfo>) -> Result<Stat> {
    Stat::try_from(node.ok_or_else(|| Error::malformed("reply", "missing node"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_fail_before_any_round_trip() {
        for bad in ["", "x", "/a//b", "/a/../b", "/a/"] {
            assert!(
                matches!(Store::path_bytes(bad), Err(Error::InvalidPath { .. })),
                "{bad:?}"
            );
        }
        assert!(Store::path_bytes("/a/b").is_ok());
    }
}
