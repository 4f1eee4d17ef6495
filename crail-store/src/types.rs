//! Plain data types of the public API: node types, placement, stat records, block locations and
//! datanode descriptions.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

/// The kind of a namespace node, with Crail's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// Bytes written by one writer at a time (an expiring lease); append and overwrite.
    File,
    /// A container of any node type but keyvalues.
    Directory,
    /// A container of files written concurrently, one child per writer, read back as one stream
    /// (children in name order).
    MultiFile,
    /// A container of keyvalues only; tables do not nest.
    Table,
    /// A value in a table: a re-put replaces it (the last writer to close wins); the old value's
    /// blocks are freed once no reader holds them.
    KeyValue,
}

impl NodeType {
    /// Whether a container of this type may hold a child of type `child`.
    pub fn may_hold(self, child: NodeType) -> bool {
        match self {
            Self::Directory => child != Self::KeyValue,
            Self::MultiFile => child == Self::File,
            Self::Table => child == Self::KeyValue,
            Self::File | Self::KeyValue => false,
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::MultiFile => "multifile",
            Self::Table => "table",
            Self::KeyValue => "keyvalue",
        })
    }
}

/// Where a node's blocks may go.
///
/// The default is what most callers want: the namenode's tiering (by default horizontal: storage
/// class 0 across the whole cluster before class 1) and, inside a class, the requesting
/// client's host first, then the other hosts in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Only this storage class (0 is the fastest tier); `None` tries classes fastest first.
    pub storage_class: Option<u32>,
    /// Only datanodes on this host; `None` prefers the requesting client's host, then spreads.
    pub location: Option<IpAddr>,
    /// Without a `location`: the datanodes of a class in turn from the first block on, the
    /// requesting client's host not preferred, so a file's blocks stripe across the cluster
    /// (a value every host reads, such as a broadcast variable).
    pub spread: bool,
    /// Which comes first when the writer's host has no room in the fastest class: another
    /// host's fast class or this host's slower one; `None`: the namenode's `tiering`.
    pub tiering: Option<Tiering>,
}

/// The order in which placement tries storage classes and hosts (without an explicit class
/// or host).
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
#[serde(rename_all = "kebab-case")]
pub enum Tiering {
    /// Crail's horizontal tiering: a class fills across the whole cluster before the next
    /// class gets a block (remote DRAM before local flash). The writer's host first inside a
    /// class.
    #[default]
    ClassFirst,
    /// Every class of the writer's host, fastest first, before any other host (local flash
    /// before remote DRAM): no block crosses the network while the host has room.
    HostFirst,
}

impl std::str::FromStr for Tiering {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "class-first" => Ok(Self::ClassFirst),
            "host-first" => Ok(Self::HostFirst),
            other => Err(format!(
                "unknown tiering {other:?} (class-first or host-first)"
            )),
        }
    }
}

impl fmt::Display for Tiering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClassFirst => "class-first",
            Self::HostFirst => "host-first",
        })
    }
}

impl Placement {
    /// Restrict blocks to one storage class.
    pub fn storage_class(mut self, class: u32) -> Self {
        self.storage_class = Some(class);
        self
    }

    /// Restrict blocks to datanodes on one host.
    pub fn location(mut self, host: IpAddr) -> Self {
        self.location = Some(host);
        self
    }

    /// Stripe blocks across every datanode of a class, in turn (see [`Placement::spread`]).
    pub fn spread(mut self) -> Self {
        self.spread = true;
        self
    }

    /// Try classes and hosts in this order (see [`Tiering`]).
    pub fn tiering(mut self, tiering: Tiering) -> Self {
        self.tiering = Some(tiering);
        self
    }
}

/// Options of a create call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// Where the node's blocks go (for containers: nothing; children carry their own).
    pub placement: Placement,
    /// Non-enumerable nodes can be looked up by path but do not appear in listings (cheaper for
    /// large numbers of internal files).
    pub enumerable: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            placement: Placement::default(),
            enumerable: true,
        }
    }
}

impl CreateOptions {
    /// Set the placement.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Set whether the node appears in listings.
    pub fn enumerable(mut self, enumerable: bool) -> Self {
        self.enumerable = enumerable;
        self
    }
}

/// What the namenode knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Node id, stable for the node's life (renames keep it).
    pub id: u64,
    /// The node's type.
    pub node_type: NodeType,
    /// Bytes of data: the committed size of a file or keyvalue, the sum of the children of a
    /// multifile, 0 for directories and tables.
    pub size: u64,
    /// Blocks of a file or keyvalue value.
    pub block_count: u64,
    /// The data object behind a file or keyvalue value (0 for containers).
    pub file_id: u64,
    /// Placement given at create.
    pub placement: Placement,
    /// Whether the node appears in its parent's listing.
    pub enumerable: bool,
    /// Creation time.
    pub created: SystemTime,
    /// Last change of data (close) or of the children of a container.
    pub modified: SystemTime,
    /// Entries of a container, enumerable or not.
    pub children: u64,
}

/// One entry of a container listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The child's name (last path component).
    pub name: String,
    /// The child's stat.
    pub stat: Stat,
}

/// Identifier the namenode gives a datanode (one per registered tier) at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatanodeId(pub u64);

impl fmt::Display for DatanodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "datanode {}", self.0)
    }
}

/// Where block `index` of a file lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLocation {
    /// Block index inside the file.
    pub index: u64,
    /// The datanode holding it.
    pub datanode: DatanodeId,
    /// The datanode's data plane address.
    pub address: SocketAddr,
    /// The datanode's host (for same-host fast paths).
    pub host: IpAddr,
    /// Byte offset of the block inside the datanode's storage.
    pub offset: u64,
    /// Storage class of the datanode.
    pub storage_class: u32,
    /// The namenode's permission to touch the block, which its datanode checks.
    pub grant: Grant,
}

/// Bytes of a grant's MAC.
pub(crate) const MAC_LEN: usize = 16;

/// The namenode's signed permission to touch one block, carried by its location and checked
/// by its datanode on every request: a client cannot touch blocks it was not given, and a
/// writer whose lease ended cannot touch the block's next owner's bytes (the block's next
/// allocation has a newer generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The block's generation: new each time the namenode allocates the block.
    pub generation: u64,
    /// Whether it allows writes (locations given to the holder of a write lease).
    pub write: bool,
    pub(crate) mac: [u8; MAC_LEN],
}

/// A datanode's registration with the namenode: its id, and the random token its heartbeats
/// and deregistration carry (ids are sequential; the token is not guessable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The id the namenode gave.
    pub id: DatanodeId,
    pub(crate) incarnation: u64,
    /// The namenode's grant salt (see `crate::grant`).
    pub(crate) grant_salt: bytes::Bytes,
    /// Registering again under its identity: its blocks that files hold and it reported
    /// (re-adopted), and those it did not (lost).
    pub adopted_blocks: u64,
    /// See `adopted_blocks`.
    pub lost_blocks: u64,
}

/// What a datanode tells the namenode when it registers one of its tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatanodeSpec {
    /// The host clients on the same machine connect from (placement affinity).
    pub host: IpAddr,
    /// Data plane address.
    pub address: SocketAddr,
    /// Tier name ("dram", "flash", ...), informational.
    pub tier: String,
    /// Storage class: 0 is the fastest.
    pub storage_class: u32,
    /// Bytes the tier offers; the namenode uses whole blocks of it.
    pub capacity: u64,
}

/// A datanode as the namenode sees it (`crail status`, `crail fs -df`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatanodeStatus {
    /// Registration id.
    pub id: DatanodeId,
    /// Host (location).
    pub host: IpAddr,
    /// Data plane address.
    pub address: SocketAddr,
    /// Tier name.
    pub tier: String,
    /// Storage class.
    pub storage_class: u32,
    /// Capacity in bytes (whole blocks).
    pub capacity: u64,
    /// Bytes in allocated blocks.
    pub used: u64,
    /// False once it missed its heartbeats or left: no new blocks, its blocks are lost.
    pub alive: bool,
    /// Time since its last heartbeat.
    pub last_heartbeat: Duration,
}

/// The cluster as the namenode sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Block size of every file, in bytes.
    pub block_size: u64,
    /// Registered datanodes, live and dead.
    pub datanodes: Vec<DatanodeStatus>,
    /// Namespace nodes (including the root).
    pub nodes: u64,
    /// Data objects (files and keyvalue values, including old values still held by readers).
    pub files: u64,
    /// How long a write lease or read hold lives without renewal.
    pub lease_timeout: Duration,
    /// How often datanodes are expected to heartbeat.
    pub heartbeat_interval: Duration,
}
