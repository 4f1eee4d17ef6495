//! Typed configuration with defaults in code. One TOML file holds every section:
//!
//! ```toml
//! [namenode]
//! listen = "127.0.0.1:9060"
//! block_size = "1MiB"
//!
//! [datanode]
//! tier = "dram"
//! capacity = "1GiB"
//!
//! [client]
//! namenode = "127.0.0.1:9060"
//!
//! [security]
//! secret = "change me"   # optional; both sides must agree
//! ```
//!
//! Libraries take the typed structs (built in code or loaded here); only binaries read files.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::path::PathLimits;
use crate::types::Tiering;
use crate::units::{ByteSize, duration_text};
use crate::wire::handshake::Secret;
use crate::wire::tls::Tls;

mod keys;
mod security;

use keys::env_key;
pub use keys::{KeyInfo, KeyKind, keys, reference_markdown};
pub use security::{SecurityConfig, check_secrets};

/// Default namenode port (Crail's).
pub const DEFAULT_NAMENODE_PORT: u16 = 9060;

/// Everything one TOML file can hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The metadata server.
    pub namenode: NamenodeConfig,
    /// A storage server.
    pub datanode: DatanodeConfig,
    /// Clients (and datanodes, which are namenode clients).
    pub client: ClientConfig,
    /// Shared secret for every connection.
    pub security: SecurityConfig,
}

/// `[namenode]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NamenodeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Size of every block (a multiple of 4 KiB).
    pub block_size: ByteSize,
    /// How long a write lease or keyvalue read hold lives without renewal.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub lease_timeout: Duration,
    /// How often datanodes heartbeat.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which a datanode is dead: no new blocks, its blocks are lost.
    pub heartbeat_misses: u32,
    /// Client connections served at once; more are refused with "server busy".
    pub max_connections: usize,
    /// Connections still in their handshake at once: the namenode accepts no more until one
    /// finishes or times out, so peers that connect and say nothing hold a few slots for a
    /// few seconds, not the whole connection limit.
    pub max_handshakes: usize,
    /// Live datanode tiers the registry accepts.
    pub max_datanodes: usize,
    /// Values of one keyvalue being written at once (concurrent re-puts).
    pub max_writers_per_key: usize,
    /// Largest frame body accepted or sent.
    pub max_frame: ByteSize,
    /// Entries per listing page.
    pub list_page: u32,
    /// Blocks a single file may have.
    pub max_blocks_per_file: u64,
    /// Blocks one allocate or locate request may cover.
    pub max_blocks_per_request: u64,
    /// Bytes in a path.
    pub max_path_len: usize,
    /// Bytes in a path component.
    pub max_name_len: usize,
    /// Components in a path.
    pub max_depth: usize,
    /// Time a new connection has to complete the handshake.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub handshake_timeout: Duration,
    /// Time the rest of a request may take once its first bytes came; a client that stalls
    /// inside a request is disconnected (between requests it may be idle).
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub frame_timeout: Duration,
    /// Time a client connection may stay idle between requests before the namenode closes it
    /// (clients reconnect on their next call, and a request that crossed the close is sent
    /// again); `0s`: never. Dead peers are found sooner by TCP keepalive.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// Where blocks go when the writer's host has no room in DRAM, for files whose placement
    /// names no class or host: "class-first" (remote DRAM before local flash, Crail's
    /// horizontal tiering) or "host-first" (local flash before remote DRAM).
    pub tiering: Tiering,
    /// Namespace nodes (files, directories, ...) the namenode holds at most, all applications
    /// together (each takes a few hundred bytes of its memory).
    pub max_nodes: u64,
    /// Top-level directories whose children are applications (the shuffle and broadcast
    /// services keep one per application there); each application's directory has the quota
    /// below.
    pub app_roots: Vec<String>,
    /// Namespace nodes (files, directories, ...) one application's directory may hold; 0: no
    /// limit.
    pub app_max_nodes: u64,
    /// Bytes of blocks one application's directory may hold (whole blocks count); 0: no limit.
    pub app_max_bytes: ByteSize,
    /// Directory of the namespace's journal: every lasting change is logged there (and synced
    /// before it is acknowledged), so a restarted namenode comes back with every file,
    /// shuffle and broadcast; unset: the namespace lives in memory only.
    pub journal: Option<std::path::PathBuf>,
    /// Bytes of journal after which a snapshot is written in the background and the log
    /// before it deleted.
    pub journal_snapshot_every: ByteSize,
    /// Filled from `[security] secret` when loaded from a file.
    #[serde(skip)]
    pub secret: Option<Secret>,
    /// Filled from `[security] datanode_secret` when loaded from a file.
    #[serde(skip)]
    pub datanode_secret: Option<Secret>,
    /// Filled from `[security] tls_*` when loaded from a file.
    #[serde(skip)]
    pub tls: Option<Arc<Tls>>,
}

impl Default for NamenodeConfig {
    fn default() -> Self {
        let limits = PathLimits::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_NAMENODE_PORT)),
            block_size: ByteSize(1 << 20),
            lease_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_misses: 8,
            max_connections: 4096,
            max_handshakes: 128,
            max_datanodes: 4096,
            max_writers_per_key: 1024,
            max_frame: ByteSize(4 << 20),
            list_page: 1000,
            max_blocks_per_file: 1 << 22,
            max_blocks_per_request: 16384,
            max_path_len: limits.max_path_len,
            max_name_len: limits.max_name_len,
            max_depth: limits.max_depth,
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            tiering: Tiering::ClassFirst,
            max_nodes: 1 << 24,
            app_roots: vec!["/crail-shuffle".into(), "/crail-broadcast".into()],
            app_max_nodes: 1 << 22,
            app_max_bytes: ByteSize(0),
            journal: None,
            journal_snapshot_every: ByteSize(64 << 20),
            secret: None,
            datanode_secret: None,
            tls: None,
        }
    }
}

impl NamenodeConfig {
    /// Path limits as one value.
    pub fn path_limits(&self) -> PathLimits {
        PathLimits {
            max_path_len: self.max_path_len,
            max_name_len: self.max_name_len,
            max_depth: self.max_depth,
        }
    }

    /// Time without heartbeat after which a datanode is dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat_interval * self.heartbeat_misses.max(1)
    }

    /// [`Self::validate`], and what serving needs besides: a certificate when TLS is on.
    pub fn validate_server(&self) -> Result<()> {
        self.validate()?;
        match &self.tls {
            Some(tls) => tls.check_serves(),
            None => Ok(()),
        }
    }

    /// Checks values that would make the namenode misbehave.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: format!("namenode.{key}"),
                reason,
            })
        };
        if let Some(root) = self.app_roots.iter().find(|r| {
            let name = r.strip_prefix('/').unwrap_or("");
            name.is_empty() || name.contains('/')
        }) {
            return bad(
                "app_roots",
                format!("{root:?} is not a top-level directory such as \"/crail-shuffle\""),
            );
        }
        let bs = self.block_size.bytes();
        if bs < 4096 || !bs.is_multiple_of(4096) {
            return bad(
                "block_size",
                format!("{} is not a positive multiple of 4KiB", self.block_size),
            );
        }
        if self.lease_timeout.is_zero() {
            return bad("lease_timeout", "must be positive".into());
        }
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat_interval", "must be positive".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1".into());
        }
        check_secrets(self.secret.as_ref(), self.datanode_secret.as_ref())?;
        if self.max_datanodes == 0 || self.max_writers_per_key == 0 {
            return bad(
                "max_datanodes",
                "max_datanodes and max_writers_per_key must be at least 1".into(),
            );
        }
        if self.max_frame.bytes() < 4096 || self.max_frame.bytes() > u64::from(u32::MAX) {
            return bad("max_frame", "must be between 4KiB and 4GiB".into());
        }
        if self.list_page == 0 {
            return bad("list_page", "must be at least 1".into());
        }
        if self.max_blocks_per_request == 0 || self.max_blocks_per_request > 1 << 20 {
            return bad(
                "max_blocks_per_request",
                "must be between 1 and 1048576".into(),
            );
        }
        if self.max_depth == 0 || self.max_name_len == 0 || self.max_path_len < 2 {
            return bad("max_depth", "path limits must allow at least /x".into());
        }
        Ok(())
    }
}

/// Which storage a datanode serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierKind {
    /// A pre-allocated memory region.
    #[default]
    Dram,
    /// A file or block device with `O_DIRECT`.
    Flash,
}

impl TierKind {
    /// "dram" or "flash".
    pub fn name(self) -> &'static str {
        match self {
            Self::Dram => "dram",
            Self::Flash => "flash",
        }
    }

    /// The storage class a tier gets unless told otherwise (DRAM fastest).
    pub fn default_class(self) -> u32 {
        match self {
            Self::Dram => 0,
            Self::Flash => 1,
        }
    }
}

impl std::str::FromStr for TierKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "dram" => Ok(Self::Dram),
            "flash" => Ok(Self::Flash),
            other => Err(format!("unknown tier {other:?} (dram or flash)")),
        }
    }
}

/// Which I/O engine a flash tier uses.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IoEngine {
    /// io_uring if the kernel allows it, else `pread`/`pwrite`.
    #[default]
    Auto,
    /// io_uring only (fails to start without it).
    Uring,
    /// `pread`/`pwrite` on a blocking thread pool.
    Pread,
}

impl std::str::FromStr for IoEngine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" => Ok(Self::Uring),
            "pread" => Ok(Self::Pread),
            other => Err(format!("unknown I/O engine {other:?} (auto, uring, pread)")),
        }
    }
}

/// How a datanode's data plane is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Framed protocol over TCP.
    #[default]
    Tcp,
    /// RDMA (the `rdma` cargo feature; refused where no device exists).
    Rdma,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "rdma" => Ok(Self::Rdma),
            other => Err(format!("unknown transport {other:?} (tcp or rdma)")),
        }
    }
}

/// `[datanode]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatanodeConfig {
    /// Data-plane address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The tier served.
    pub tier: TierKind,
    /// Bytes of storage offered (rounded down to whole blocks).
    pub capacity: ByteSize,
    /// File or block device of a flash tier (a file is created and sized if needed).
    pub path: Option<std::path::PathBuf>,
    /// Storage class; unset: 0 for dram, 1 for flash.
    pub storage_class: Option<u32>,
    /// I/O engine of a flash tier.
    pub io_engine: IoEngine,
    /// Data-plane transport.
    pub transport: Transport,
    /// Also serve clients on this host through shared memory (a Unix socket in the abstract
    /// namespace, named after the data-plane address).
    pub fast_path: bool,
    /// Client connections served at once, by TCP and by the same-host socket each (remote
    /// peers that fill the TCP port cannot lock the host's own clients out).
    pub max_connections: usize,
    /// TCP connections still in their handshake at once: more are refused as busy, so peers
    /// that connect and say nothing hold a few slots for a few seconds, not all of them.
    pub max_handshakes: usize,
    /// Time a client has to complete the handshake.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub handshake_timeout: Duration,
    /// Time a write's payload may take to arrive (its block is locked meanwhile).
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub payload_timeout: Duration,
    /// Time a connection may stay idle between requests (none of its replies pending) before
    /// the datanode closes it; clients replace a connection idle for half as long before they
    /// use it again. `0s`: never.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// Filled from `[security] secret` when loaded from a file.
    #[serde(skip)]
    pub secret: Option<Secret>,
    /// Filled from `[security] datanode_secret` when loaded from a file: what this datanode
    /// proves to the namenode.
    #[serde(skip)]
    pub datanode_secret: Option<Secret>,
    /// Filled from `[security] local_group` when loaded from a file.
    #[serde(skip)]
    pub local_group: Option<u32>,
    /// Filled from `[security] tls_*` when loaded from a file.
    #[serde(skip)]
    pub tls: Option<Arc<Tls>>,
}

impl Default for DatanodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tier: TierKind::Dram,
            capacity: ByteSize(1 << 30),
            path: None,
            storage_class: None,
            io_engine: IoEngine::Auto,
            transport: Transport::Tcp,
            fast_path: true,
            max_connections: 1024,
            max_handshakes: 128,
            handshake_timeout: Duration::from_secs(5),
            payload_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            secret: None,
            datanode_secret: None,
            local_group: None,
            tls: None,
        }
    }
}

impl DatanodeConfig {
    /// Checks values that have no sensible meaning.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: &str| Error::Config {
            key: format!("datanode.{key}"),
            reason: reason.into(),
        };
        if self.capacity.bytes() == 0 {
            return Err(bad("capacity", "must be more than 0"));
        }
        if self.tier == TierKind::Flash && self.path.is_none() {
            return Err(bad("path", "a flash tier needs a file or device (--path)"));
        }
        if self.tier == TierKind::Dram && self.path.is_some() {
            return Err(bad("path", "only a flash tier has a path"));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections", "must be more than 0"));
        }
        check_secrets(self.secret.as_ref(), self.datanode_secret.as_ref())
    }
}

/// `[client]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Namenode address, `host:port`.
    pub namenode: String,
    /// Local address to connect from. On a single machine each simulated node uses its own
    /// 127.0.0.x, and the namenode places blocks near the address it sees.
    pub local_host: Option<IpAddr>,
    /// Time to establish a connection, handshake included.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// Time a metadata request may take.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub rpc_timeout: Duration,
    /// How long a client that was connected keeps trying to reach the namenode again when it
    /// cannot (a restart, a network blip), backing off from 50 ms to 1 s, before a call fails;
    /// requests in flight when the connection broke are sent again only if doing them twice
    /// is harmless (lookups, listings, locations, renewals); the others fail at once with
    /// "connection lost". `0s`: no retries.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub reconnect_timeout: Duration,
    /// Largest frame body accepted.
    pub max_frame: ByteSize,
    /// Name sent at the handshake (shows in server logs).
    pub name: String,
    /// Time a data-plane request (one block read or write) may take.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub data_timeout: Duration,
    /// Size of stream buffers (one block is a good choice).
    pub buffer_size: ByteSize,
    /// Block operations a stream keeps in flight.
    pub outstanding: usize,
    /// Talk to datanodes on this client's host through shared memory instead of TCP. The
    /// host is `local_host`, or else the address this client reaches the namenode from.
    pub fast_path: bool,
    /// After a small reply (a metadata call, a read or write of at most 64 KiB), how long the
    /// connection keeps polling for the next reply instead of letting the CPU sleep. Trades a
    /// little CPU for latency: on a VM without guest halt-polling, waking an idle CPU costs
    /// tens of microseconds per round trip. `0s` turns it off.
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub busy_poll: Duration,
    /// Stream buffers kept for reuse when no stream holds them (at least `4 × outstanding`
    /// buffers). A buffer freed and allocated again is fresh memory the kernel clears first;
    /// a busy client (a reducer's pieces, a writer's buffer per partition) reuses tens.
    pub idle_buffers: ByteSize,
    /// Filled from `[security] secret` when loaded from a file.
    #[serde(skip)]
    pub secret: Option<Secret>,
    /// Filled from `[security] tls_*` when loaded from a file.
    #[serde(skip)]
    pub tls: Option<Arc<Tls>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            namenode: format!("127.0.0.1:{DEFAULT_NAMENODE_PORT}"),
            local_host: None,
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(30),
            max_frame: ByteSize(16 << 20),
            name: "crail-client".into(),
            data_timeout: Duration::from_secs(30),
            buffer_size: ByteSize(1 << 20),
            outstanding: 4,
            fast_path: true,
            busy_poll: Duration::from_micros(50),
            idle_buffers: ByteSize(64 << 20),
            secret: None,
            tls: None,
        }
    }
}

impl ClientConfig {
    /// A default config for the namenode at `addr`.
    pub fn for_namenode(addr: impl ToString) -> Self {
        Self {
            namenode: addr.to_string(),
            ..Self::default()
        }
    }

    /// Sets the shared secret.
    pub fn with_secret(mut self, secret: Option<Secret>) -> Self {
        self.secret = secret;
        self
    }

    /// Sets the local address to connect from.
    pub fn with_local_host(mut self, host: IpAddr) -> Self {
        self.local_host = Some(host);
        self
    }
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_table(parse_table(text)?, |section, key| {
            format!("{section}.{key}")
        })
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(Some(path.as_ref()), std::iter::empty())
    }

    /// The layers under a command line, each over the one before: the defaults in code, the
    /// TOML file if one is named, then the `CRAIL_<SECTION>_<KEY>` variables among `env`
    /// (`CRAIL_CLIENT_NAMENODE` sets `[client] namenode`). A variable naming a section but no
    /// key of it is an error (a typo would otherwise go unnoticed); other `CRAIL_*` variables
    /// (`CRAIL_CONF`) are not keys and are left alone.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table = match file {
            None => toml::Table::new(),
            Some(path) => {
                let in_file = |reason: String| Error::Config {
                    key: path.display().to_string(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| in_file(e.to_string()))?;
                parse_table(&text).map_err(|e| match e {
                    Error::Config { key, reason } if key == "config" => in_file(reason),
                    other => other,
                })?
            }
        };
        let keys = keys();
        let mut from_env = Vec::new();
        for (name, value) in env {
            let Some((section, key)) = env_key(&name) else {
                continue;
            };
            let Some(info) = keys.iter().find(|k| k.section == section && k.key == key) else {
                return Err(Error::Config {
                    key: name,
                    reason: "not a configuration key (docs/config.md lists them)".into(),
                });
            };
            let value = info.kind.parse(&value).map_err(|reason| Error::Config {
                key: name.clone(),
                reason,
            })?;
            if let toml::Value::Table(t) = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                t.insert(key.clone(), value);
            }
            from_env.push((section, key, name));
        }
        Self::from_table(table, |section, key| {
            match from_env.iter().find(|(s, k, _)| s == section && k == key) {
                Some((_, _, name)) => name.clone(),
                None => match file {
                    Some(path) => format!("{section}.{key} in {}", path.display()),
                    None => format!("{section}.{key}"),
                },
            }
        })
    }

    /// Builds the config from merged layers. A value that does not fit its key is reported
    /// under `origin(section, key)`: the file's key or the variable that set it.
    fn from_table(table: toml::Table, origin: impl Fn(&str, &str) -> String) -> Result<Self> {
        let decode = |t: toml::Table| t.try_into::<Config>().map_err(|e| e.message().to_owned());
        let mut config = match decode(table.clone()) {
            Ok(config) => config,
            Err(reason) => {
                // Find the culprit: the first key that fails on its own.
                let culprit = table.iter().find_map(|(section, v)| {
                    v.as_table()?.iter().find_map(|(key, value)| {
                        let mut one = toml::Table::new();
                        let mut inner = toml::Table::new();
                        inner.insert(key.clone(), value.clone());
                        one.insert(section.clone(), toml::Value::Table(inner));
                        decode(one)
                            .err()
                            .map(|reason| (origin(section, key), reason))
                    })
                });
                let (key, reason) = culprit.unwrap_or(("config".into(), reason));
                return Err(Error::Config { key, reason });
            }
        };
        config.apply_security()?;
        config.namenode.validate()?;
        Ok(config)
    }

    /// Renders the config as TOML (for `--config-out` files and docs).
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn parse_table(text: &str) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| Error::Config {
        key: "config".into(),
        reason: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests;
