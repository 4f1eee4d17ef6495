//! The namenode's state: the node tree, the data objects behind files and keyvalues, and the
//! datanode registry that owns their blocks. Everything here is synchronous and runs under the
//! namenode's one lock; operations are short (microseconds), so one lock serves two cores well
//! and makes every operation, rename included, atomic.
//!
//! Paths name *nodes*; data lives in *files* (data objects) that nodes point to. A file node
//! has one; a keyvalue node has its current value and any values being written (a re-put
//! commits when its writer closes; the old value is freed once no reader holds it). Block
//! operations address files by id, so renames never disturb a writer.

mod data;
mod durable;
mod quota;
mod tree;

pub(crate) use tree::{CreateFlags, PathRef};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::config::NamenodeConfig;
use crate::grant::GrantKey;
use crate::namenode::registry::{BlockAddr, Registry};
use crate::path::PathLimits;
use crate::proto as pb;
use crate::types::{NodeType, Placement};

pub(crate) type NodeId = u64;
pub(crate) type FileId = u64;

const ROOT: NodeId = 0;

/// Who is asking, and when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) now: Instant,
    pub(crate) wall: SystemTime,
    /// The client's host, for placement affinity.
    pub(crate) peer: IpAddr,
    /// Whether the client proved it may act as a datanode.
    pub(crate) datanode: bool,
}

impl Ctx {
    pub(crate) fn new(peer: IpAddr, datanode: bool) -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
            peer,
            datanode,
        }
    }
}

#[derive(Debug)]
struct Node {
    parent: NodeId,
    name: Box<str>,
    kind: NodeKind,
    enumerable: bool,
    placement: Placement,
    created: SystemTime,
    modified: SystemTime,
}

#[derive(Debug)]
enum NodeKind {
    Container {
        ty: NodeType,
        children: BTreeMap<Box<str>, NodeId>,
    },
    File(FileId),
    KeyValue {
        current: Option<FileId>,
        pending: Vec<FileId>,
    },
}

impl NodeKind {
    /// What a new node of type `ty` holds (a file: the data object `file`).
    fn empty(ty: NodeType, file: FileId) -> Self {
        match ty {
            NodeType::File => Self::File(file),
            NodeType::KeyValue => Self::KeyValue {
                current: None,
                pending: Vec::new(),
            },
            container => Self::Container {
                ty: container,
                children: BTreeMap::new(),
            },
        }
    }
}

impl Node {
    fn node_type(&self) -> NodeType {
        match &self.kind {
            NodeKind::Container { ty, .. } => *ty,
            NodeKind::File(_) => NodeType::File,
            NodeKind::KeyValue { .. } => NodeType::KeyValue,
        }
    }
}

/// A token (write lease or read hold) and when it expires.
#[derive(Debug, Clone, Copy)]
struct Token {
    id: u64,
    expires: Instant,
}

impl Token {
    fn valid(&self, id: u64, now: Instant) -> bool {
        self.id == id && self.expires > now
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// A file's data, or a keyvalue's current value.
    Live,
    /// A keyvalue value still being written; it becomes current when its writer closes.
    Pending,
    /// A replaced keyvalue value, kept until its readers release it.
    Retired,
}

#[derive(Debug)]
struct FileData {
    node: NodeId,
    blocks: Vec<BlockAddr>,
    size: u64,
    placement: Placement,
    lease: Option<Token>,
    /// Read holds: token -> expiry.
    holds: HashMap<u64, Instant>,
    state: FileState,
    /// An entry for this file is in the deadline heap.
    scheduled: bool,
    /// The application's directory its blocks are charged to.
    app: Option<NodeId>,
    /// Its first blocks the journal holds (those of its last committed size).
    journaled: u64,
}

impl FileData {
    /// An empty data object of `node`, charged to `app`.
    fn new(node: NodeId, placement: Placement, state: FileState, app: Option<NodeId>) -> Self {
        Self {
            node,
            blocks: Vec::new(),
            size: 0,
            placement,
            lease: None,
            holds: HashMap::new(),
            state,
            scheduled: false,
            app,
            journaled: 0,
        }
    }
}

/// Unguessable tokens (leases, holds): HMAC-SHA256 of a counter under a random key, cut to
/// 64 bits. Seeing any number of them tells nothing of the key or of the others (a keyed
/// bijection such as splitmix64 can be inverted from one token). Two tokens collide with
/// odds of about n² / 2⁶⁵ for n live ones, and a token is only ever compared with its own
/// file's lease and holds.
struct Tokens {
    key: hmac::Hmac<sha2::Sha256>,
    counter: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("counter", &self.counter)
            .finish()
    }
}

impl Tokens {
    fn new() -> crate::error::Result<Self> {
        use hmac::KeyInit;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            key: <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
            counter: 0,
        })
    }

    fn next(&mut self) -> u64 {
        use hmac::Mac;
        loop {
            self.counter += 1;
            let mut mac = self.key.clone();
            mac.update(&self.counter.to_le_bytes());
            let tag = mac.finalize().into_bytes();
            let mut first = [0u8; 8];
            first.copy_from_slice(&tag[..8]);
            let token = u64::from_le_bytes(first);
            if token != 0 {
                return token;
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Namespace {
    nodes: HashMap<NodeId, Node>,
    files: HashMap<FileId, FileData>,
    registry: Registry,
    next_node: NodeId,
    next_file: FileId,
    tokens: Tokens,
    /// When leases and holds may expire, earliest first (entries are re-checked when popped).
    deadlines: BinaryHeap<Reverse<(Instant, FileId)>>,
    limits: PathLimits,
    lease_timeout: Duration,
    list_page: u32,
    max_blocks_per_file: u64,
    max_blocks_per_request: u64,
    max_writers_per_key: usize,
    quotas: quota::Quotas,
    /// Where lasting changes are recorded, if anywhere.
    journal: Option<std::sync::Arc<crate::namenode::journal::Journal>>,
}

impl Namespace {
    /// An empty namespace whose block grants are signed with `grants`.
    pub(crate) fn new(config: &NamenodeConfig, grants: GrantKey) -> crate::error::Result<Self> {
        let now = SystemTime::now();
        let root = Node {
            parent: ROOT,
            name: "".into(),
            kind: NodeKind::Container {
                ty: NodeType::Directory,
                children: BTreeMap::new(),
            },
            enumerable: true,
            placement: Placement::default(),
            created: now,
            modified: now,
        };
        Ok(Self {
            nodes: HashMap::from([(ROOT, root)]),
            files: HashMap::new(),
            registry: Registry::new(config.block_size.bytes(), config.max_datanodes, grants)
                .tiering(config.tiering),
            next_node: ROOT + 1,
            next_file: 1,
            tokens: Tokens::new()?,
            deadlines: BinaryHeap::new(),
            limits: config.path_limits(),
            lease_timeout: config.lease_timeout,
            list_page: config.list_page,
            max_blocks_per_file: config.max_blocks_per_file,
            max_blocks_per_request: config.max_blocks_per_request,
            max_writers_per_key: config.max_writers_per_key,
            quotas: quota::Quotas::new(config),
            journal: None,
        })
    }

    pub(crate) fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.nodes.len() as u64, self.files.len() as u64)
    }

    /// The path of a node, rebuilt from its ancestors.
    fn path_of(&self, mut id: NodeId) -> String {
        let mut names = Vec::new();
        while id != ROOT {
            let Some(node) = self.nodes.get(&id) else {
                break;
            };
            names.push(&*node.name);
            id = node.parent;
        }
        if names.is_empty() {
            return "/".into();
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }

    /// The path of the node a file belongs to (or a placeholder if the node is gone).
    fn file_path(&self, file: FileId) -> String {
        match self.files.get(&file) {
            Some(f) if self.nodes.contains_key(&f.node) => self.path_of(f.node),
            _ => format!("<file {file}>"),
        }
    }

    /// The wire description of a node.
    fn info(&self, id: NodeId) -> pb::NodeInfo {
        let Some(node) = self.nodes.get(&id) else {
            return pb::NodeInfo::default();
        };
        let millis = crate::proto::millis_since_epoch;
        let mut info = pb::NodeInfo {
            id,
            r#type: pb::NodeType::from(node.node_type()) as i32,
            placement: Some(pb::Placement::from(&node.placement)),
            enumerable: node.enumerable,
            created_ms: millis(node.created),
            modified_ms: millis(node.modified),
            ..Default::default()
        };
        match &node.kind {
            NodeKind::Container { ty, children } => {
                info.children = children.len() as u64;
                if *ty == NodeType::MultiFile {
                    info.size = children
                        .values()
                        .filter_map(|c| match self.nodes.get(c).map(|n| &n.kind) {
                            Some(NodeKind::File(f)) => self.files.get(f).map(|f| f.size),
                            _ => None,
                        })
                        .sum();
                }
            }
            NodeKind::File(f) => self.fill_file(&mut info, *f),
            NodeKind::KeyValue { current, .. } => {
                if let Some(f) = current {
                    self.fill_file(&mut info, *f);
                }
            }
        }
        info
    }

    fn fill_file(&self, info: &mut pb::NodeInfo, file: FileId) {
        if let Some(f) = self.files.get(&file) {
            info.file_id = file;
            info.size = f.size;
            info.block_count = f.blocks.len() as u64;
        }
    }

    fn new_file(&mut self, node: NodeId, placement: Placement, state: FileState) -> FileId {
        let id = self.next_file;
        self.next_file += 1;
        let app = self.app_of(node);
        self.files
            .insert(id, FileData::new(node, placement, state, app));
        id
    }

    /// Grants a new write lease on `file` and returns its token.
    fn grant_lease(&mut self, file: FileId, now: Instant) -> u64 {
        let token = Token {
            id: self.tokens.next(),
            expires: now + self.lease_timeout,
        };
        if let Some(f) = self.files.get_mut(&file) {
            f.lease = Some(token);
        }
        self.schedule(file, token.expires);
        token.id
    }

    /// Grants a read hold on `file` and returns its token.
    fn grant_hold(&mut self, file: FileId, now: Instant) -> u64 {
        let (id, expires) = (self.tokens.next(), now + self.lease_timeout);
        if let Some(f) = self.files.get_mut(&file) {
            f.holds.insert(id, expires);
        }
        self.schedule(file, expires);
        id
    }

    fn schedule(&mut self, file: FileId, at: Instant) {
        if let Some(f) = self.files.get_mut(&file)
            && !f.scheduled
        {
            f.scheduled = true;
            self.deadlines.push(Reverse((at, file)));
        }
    }

    /// Frees a data object and its blocks.
    fn free_file(&mut self, file: FileId) {
        if let Some(f) = self.files.remove(&file) {
            self.free_blocks(f.app, &f.blocks);
        }
    }

    /// Frees blocks and gives their bytes back to the application they were charged to.
    fn free_blocks(&mut self, app: Option<NodeId>, blocks: &[BlockAddr]) {
        self.registry.free(blocks);
        let bytes = blocks.len() as u64 * self.registry.block_size();
        self.uncharge_bytes(app, bytes);
    }

    /// Retires a keyvalue's replaced value: freed now if no reader holds it, else later.
    fn retire(&mut self, file: FileId, now: Instant) {
        let Some(f) = self.files.get_mut(&file) else {
            return;
        };
        f.holds.retain(|_, expires| *expires > now);
        if f.holds.is_empty() {
            self.free_file(file);
        } else {
            f.state = FileState::Retired;
        }
    }
}
