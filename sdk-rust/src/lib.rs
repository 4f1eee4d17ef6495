//! The crate engines written in Rust use to talk to crail-rs: shuffles, broadcast variables and
//! the store, through the node they run on.
//!
//! [`Crail::connect`] makes a store client from the node's address and finds the node's
//! shuffle and broadcast services (their Unix sockets, advertised in the store). Everything else
//! hangs off the handle:
//!
//! - **Shuffles** ([`Crail::register_shuffle`], [`Shuffle`]): a map task takes a
//!   [`MapOutput`], writes records (or bytes already serialized) per partition through the
//!   shuffle's named serializer, and commits to a [`MapStatus`]. A reduce task opens a
//!   [`Records`] stream of its partitions, optionally sorted by a named sorter and combined by
//!   its own function.
//! - **Broadcast variables** ([`Crail::put_broadcast`], [`Crail::read_broadcast`],
//!   [`Crail::destroy_broadcast`]): written once, read on any node (fetched to a node once,
//!   however many of its engines read it).
//! - **The store** itself ([`Crail::store`]): files, directories, key-value tables.
//!
//! [`Crail::end_application`] removes every shuffle and broadcast variable of the application.
//!
//! ```no_run
//! use crail_sdk::{Config, Crail};
//!
//! # async fn job() -> crail_sdk::Result<()> {
//! // The node's client configuration (what `crail cluster --config-out FILE` writes).
//! let config = Config::from_file("/tmp/crail-client.toml")?;
//! let crail = Crail::connect(&config.client, "wordcount-1").await?;
//!
//! // Map task 0 of shuffle 7: 1 map, 4 partitions of length-prefixed records.
//! let shuffle = crail.register_shuffle(7, 1, 4, "kv").await?;
//! let mut out = shuffle.map_writer(0, 0).await?;
//! for word in ["b", "a", "b"] {
//!     let partition = u32::from(word.as_bytes()[0]) % 4;
//!     out.write(partition, word.as_bytes(), &1u64.to_be_bytes()).await?;
//! }
//! let status = out.commit().await?;
//! assert_eq!(status.bytes.len(), 4);
//!
//! // Reduce task of partitions 0..4: sorted by key, counts summed per word.
//! let mut records = shuffle
//!     .reader(0..4)
//!     .sorted("radix")
//!     .combine(|_key, sum, value| {
//!         let total = u64::from_be_bytes(sum[..8].try_into().unwrap())
//!             + u64::from_be_bytes(value[..8].try_into().unwrap());
//!         sum.clear();
//!         sum.extend_from_slice(&total.to_be_bytes());
//!     })
//!     .open()
//!     .await?;
//! while let Some(record) = records.next_record().await? {
//!     println!("{}: {:?}", String::from_utf8_lossy(record.key), record.value);
//! }
//! crail.end_application().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Runnable programs: `sdk-rust/examples/` (`cargo run -p crail-sdk --example wordcount --
//! CONFIG`, against a cluster started with `crail cluster --config-out CONFIG`).

mod error;
mod records;
mod shuffle;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crail_broadcast::{BroadcastClient, VarId};
use crail_shuffle::ShuffleClient;

pub use crail_broadcast::RemoteReader as BroadcastReader;
pub use crail_serializers::{Encoder, Record, Serializer};
pub use crail_shuffle::{Meta, ShuffleId};
pub use crail_store::{ClientConfig, Config, Store};
pub use error::{Error, ErrorKind, Result};
pub use records::{Combiner, ReadOptions, Records};
pub use shuffle::{MapOutput, MapStatus, Shuffle};
/// The layers underneath, for their error variants and what the SDK does not wrap.
pub use {crail_broadcast, crail_serializers, crail_shuffle, crail_sorters, crail_store};

/// One multi-threaded Tokio runtime (two workers) for the process, for bindings that block a
/// foreign thread on crail calls (the Python module, the Spark plugin's JNI bridge). Made at
/// first use; the error says why it could not start.
pub fn shared_runtime() -> std::result::Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("crail-io")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the I/O runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// How long a broadcast read waits for a put still in progress, by default.
pub const BROADCAST_WAIT: Duration = Duration::from_secs(60);

/// An engine's handle on crail-rs, on behalf of one application. Cheap to clone; clones share
/// the connections.
#[derive(Debug, Clone)]
pub struct Crail {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    app: String,
    store: Store,
    shuffles: ShuffleClient,
    broadcasts: BroadcastClient,
}

impl Crail {
    /// Connects application `app` (letters, digits, `.`, `_`, `-`) to the node `config`
    /// connects from (its `local_host`, else 127.0.0.1): a store client, and the node's
    /// shuffle and broadcast services, which keep the application alive while it is connected.
    pub async fn connect(config: &ClientConfig, app: &str) -> Result<Self> {
        let store = Store::connect(config).await?;
        let shuffles = ShuffleClient::connect_local(store.clone(), app).await?;
        let broadcasts = BroadcastClient::connect_local(&store, app).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                app: app.to_owned(),
                store,
                shuffles,
                broadcasts,
            }),
        })
    }

    /// As [`Crail::connect`], as an engine on node `host` (its address; on an embedded
    /// `crail cluster`, 127.0.0.2 and up).
    pub async fn connect_on(config: &ClientConfig, host: IpAddr, app: &str) -> Result<Self> {
        Self::connect(&config.clone().with_local_host(host), app).await
    }

    /// Connects as the `crail` commands do: the client configuration from `CRAIL_CONF` (a
    /// TOML file) if set, then the `CRAIL_CLIENT_*` variables, over the defaults.
    pub async fn connect_from_env(app: &str) -> Result<Self> {
        let file = std::env::var_os("CRAIL_CONF").map(std::path::PathBuf::from);
        let config = Config::load(file.as_deref(), std::env::vars())?;
        Self::connect(&config.client, app).await
    }

    /// The application.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// The node the services run on (its address).
    pub fn host(&self) -> &str {
        self.inner.shuffles.host()
    }

    /// The store client, for files, directories and key-value tables of your own.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The shuffle service client underneath, for what [`Shuffle`] does not cover.
    pub fn shuffle_client(&self) -> &ShuffleClient {
        &self.inner.shuffles
    }

    /// The broadcast service client underneath.
    pub fn broadcast_client(&self) -> &BroadcastClient {
        &self.inner.broadcasts
    }

    /// Registers shuffle number `shuffle` of the application: `maps` map tasks writing
    /// `partitions` partitions of records in the format `serializer` names (`kv`,
    /// `fixed:10:90`, either with `+crc` or `+lz4`; see [`Serializer::by_name`]).
    pub async fn register_shuffle(
        &self,
        shuffle: u32,
        maps: u32,
        partitions: u32,
        serializer: &str,
    ) -> Result<Shuffle> {
        self.register_shuffle_with(shuffle, Meta::new(maps, partitions, serializer))
            .await
    }

    /// As [`Crail::register_shuffle`], with every setting of `meta` (replication, ...).
    pub async fn register_shuffle_with(&self, shuffle: u32, meta: Meta) -> Result<Shuffle> {
        let serializer = Serializer::by_name(&meta.serializer)?;
        let id = ShuffleId::new(self.app(), shuffle);
        self.inner.shuffles.register(&id, &meta).await?;
        Ok(Shuffle::new(self.clone(), id, meta, serializer))
    }

    /// A shuffle of the application registered elsewhere (by the driver, another task).
    pub async fn shuffle(&self, shuffle: u32) -> Result<Shuffle> {
        let id = ShuffleId::new(self.app(), shuffle);
        let meta = self.inner.shuffles.shuffles().meta(&id).await?;
        let serializer = Serializer::by_name(&meta.serializer)?;
        Ok(Shuffle::new(self.clone(), id, meta, serializer))
    }

    /// Removes shuffle `shuffle` and all of its map output.
    pub async fn unregister_shuffle(&self, shuffle: u32) -> Result<()> {
        let id = ShuffleId::new(self.app(), shuffle);
        Ok(self.inner.shuffles.unregister(&id).await?)
    }

    /// Writes broadcast variable `id` of the application: striped over every datanode, read
    /// whole or not at all. Returns its size.
    pub async fn put_broadcast(&self, id: &str, value: &[u8]) -> Result<u64> {
        Ok(self.inner.broadcasts.put(&self.var(id), value).await?)
    }

    /// Writes broadcast variable `id` from `source` (any size the store has room for).
    pub async fn put_broadcast_stream<R>(&self, id: &str, source: &mut R) -> Result<u64>
    where
        R: tokio::io::AsyncRead + Unpin + ?Sized,
    {
        Ok(self
            .inner
            .broadcasts
            .put_stream(&self.var(id), source)
            .await?)
    }

    /// Reads broadcast variable `id` chunk by chunk from the node's copy (mapped, not copied,
    /// on the node's Unix socket), waiting up to `wait` for a put in progress.
    pub async fn get_broadcast(&self, id: &str, wait: Duration) -> Result<BroadcastReader> {
        Ok(self.inner.broadcasts.get(&self.var(id), wait).await?)
    }

    /// Reads broadcast variable `id` whole, waiting up to [`BROADCAST_WAIT`] for a put in
    /// progress.
    pub async fn read_broadcast(&self, id: &str) -> Result<Vec<u8>> {
        Ok(self
            .inner
            .broadcasts
            .read_all(&self.var(id), BROADCAST_WAIT)
            .await?)
    }

    /// Destroys broadcast variable `id`: its blocks are freed and every node drops its copy.
    pub async fn destroy_broadcast(&self, id: &str) -> Result<()> {
        Ok(self.inner.broadcasts.destroy(&self.var(id)).await?)
    }

    /// The application is over: removes all of its shuffles and broadcast variables.
    pub async fn end_application(&self) -> Result<()> {
        self.inner.shuffles.remove_app(self.app()).await?;
        self.inner.broadcasts.remove_app(self.app()).await?;
        Ok(())
    }

    fn var(&self, id: &str) -> VarId {
        VarId::new(self.app(), id)
    }
}
