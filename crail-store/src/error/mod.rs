//! The crate's one error type. Errors the namenode raises travel to the client as an
//! `ErrorReply` and come back as the same variant, so callers match on them wherever they ran.

use std::io;
use std::net::IpAddr;

mod wire;

use crate::path::PathProblem;
use crate::types::NodeType;

/// Result of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to or inside the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No node at the path (or a component on the way is missing).
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path looked up.
        path: String,
    },
    /// Create or rename onto a path that exists.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The existing path.
        path: String,
    },
    /// A path component that should be a container is not.
    #[error("{path}: is a {actual}, not a container")]
    NotAContainer {
        /// The component's path.
        path: String,
        /// Its type.
        actual: NodeType,
    },
    /// The node has another type than the operation needs.
    #[error("{path}: is a {actual}, expected a {expected}")]
    WrongType {
        /// The node's path.
        path: String,
        /// The type the operation needs.
        expected: NodeType,
        /// The node's type.
        actual: NodeType,
    },
    /// The container may not hold a node of this type (a table holds only keyvalues, a
    /// multifile only files, keyvalues live only in tables).
    #[error("{path}: a {parent} cannot hold a {child}")]
    InvalidChild {
        /// The child's path.
        path: String,
        /// The container's type.
        parent: NodeType,
        /// The child's type.
        child: NodeType,
    },
    /// Non-recursive delete of a container with children.
    #[error("{path}: not empty (delete it recursively)")]
    NotEmpty {
        /// The container's path.
        path: String,
    },
    /// Malformed path.
    #[error("invalid path {path:?}: {problem}")]
    InvalidPath {
        /// The path as given (lossy if it was not UTF-8).
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// Rename of a container into its own subtree.
    #[error("cannot move {from} into itself ({to})")]
    MoveIntoItself {
        /// Source path.
        from: String,
        /// Destination path.
        to: String,
    },
    /// Create, delete or rename of the root.
    #[error("the root directory cannot be {operation}")]
    RootNotAllowed {
        /// "created", "deleted" or "renamed".
        operation: String,
    },
    /// Another writer holds the file's write lease.
    #[error("{path}: another writer holds the lease for {remaining_ms} more ms")]
    LeaseHeld {
        /// The file's path.
        path: String,
        /// Time until the lease expires unless renewed.
        remaining_ms: u64,
    },
    /// The caller's lease (or read hold) is gone: expired and taken by another writer, closed,
    /// or never valid.
    #[error("{path}: write lease or read hold lost (expired, taken over or closed)")]
    LeaseLost {
        /// The file's path.
        path: String,
    },
    /// A block index past the end of the file (or leaving a hole when allocating).
    #[error("{path}: block {index} out of range (the file has {blocks} blocks)")]
    BlockOutOfRange {
        /// The file's path.
        path: String,
        /// The index asked for.
        index: u64,
        /// Blocks the file has.
        blocks: u64,
    },
    /// A file would get more blocks than the namenode allows per file.
    #[error("{path}: {blocks} blocks exceed the limit of {max} blocks per file")]
    TooManyBlocks {
        /// The file's path.
        path: String,
        /// Blocks asked for.
        blocks: u64,
        /// The limit.
        max: u64,
    },
    /// Too many values of one keyvalue are being written at once.
    #[error("{path}: {max} values are already being written (namenode.max_writers_per_key)")]
    TooManyWriters {
        /// The keyvalue's path.
        path: String,
        /// The limit.
        max: u64,
    },
    /// An application's directory holds as many namespace nodes or bytes as its quota allows
    /// (`namenode.app_max_nodes`, `app_max_bytes`).
    #[error(
        "{app}: its quota of {limit} {what} is used up ({used} in use); delete what it no longer needs"
    )]
    QuotaExceeded {
        /// The application's directory.
        app: String,
        /// "namespace nodes" or "bytes".
        what: String,
        /// The quota.
        limit: u64,
        /// In use before this request.
        used: u64,
    },
    /// One request covers more blocks than the namenode answers at once.
    #[error("{count} blocks in one request exceed the limit of {max}")]
    BatchTooLarge {
        /// Blocks asked for.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// Close with a size beyond the file's allocated blocks.
    #[error("{path}: size {size} exceeds the {capacity} bytes of its allocated blocks")]
    SizeBeyondBlocks {
        /// The file's path.
        path: String,
        /// The size given.
        size: u64,
        /// Bytes of allocated blocks.
        capacity: u64,
    },
    /// No datanode allowed by the placement has a free block; nothing was allocated.
    #[error("store full: no room for {blocks} block(s){}{}", class_suffix(*storage_class), location_suffix(location))]
    StoreFull {
        /// Blocks asked for.
        blocks: u64,
        /// The storage class asked for, if any.
        storage_class: Option<u32>,
        /// The host asked for, if any.
        location: Option<IpAddr>,
    },
    /// Blocks of the file live on datanodes that are gone.
    #[error("{path}: blocks {blocks:?} lost with dead datanode(s) {datanodes:?}")]
    LostBlocks {
        /// The file's path.
        path: String,
        /// Indexes of the lost blocks.
        blocks: Vec<u64>,
        /// Ids of the dead datanodes that held them.
        datanodes: Vec<u64>,
    },
    /// The namenode restarted moments ago and the datanodes that hold these blocks have not
    /// registered again yet: a short wait, not a loss (clients try again by themselves).
    #[error(
        "datanode(s) {datanodes:?} have not registered with the restarted namenode yet: try again in {retry_ms} ms"
    )]
    Recovering {
        /// Ids of the datanodes awaited.
        datanodes: Vec<u64>,
        /// How long to wait before trying again.
        retry_ms: u64,
    },
    /// Stored or transferred bytes do not match their checksum. Nothing is returned for them.
    #[error(
        "checksum mismatch in {location} at offset {offset}: expected {expected:#010x}, got {actual:#010x}"
    )]
    ChecksumMismatch {
        /// Where ("write to 127.0.0.2:4000", "stored chunk of 127.0.0.2:4000", a path).
        location: String,
        /// Byte offset (in the datanode's storage, or in the file).
        offset: u64,
        /// The checksum the bytes should have.
        expected: u32,
        /// The checksum they have.
        actual: u32,
    },
    /// A read that starts past the end of a file.
    #[error("{path}: offset {offset} is past the end of the file ({size} bytes)")]
    PastEndOfFile {
        /// The file's path.
        path: String,
        /// The offset asked for.
        offset: u64,
        /// The file's size.
        size: u64,
    },
    /// A data-plane request for bytes a datanode does not have (past its capacity, across a
    /// block boundary, longer than a block).
    #[error("bad data range [{offset}, +{length}): {reason}")]
    BadRange {
        /// Byte offset in the datanode's storage.
        offset: u64,
        /// Bytes asked for.
        length: u64,
        /// Why it is refused.
        reason: String,
    },
    /// A block location from before the datanode registered again: the blocks it named are
    /// lost, and the storage may belong to other files now.
    #[error(
        "stale block location: it names datanode {expected}, which is now datanode {current} (registered again; its old blocks are lost)"
    )]
    StaleLocation {
        /// The datanode id the location carries.
        expected: u64,
        /// The datanode's id now.
        current: u64,
    },
    /// A read of bytes never written since their block was allocated: they belong to nobody
    /// (another file's old bytes, or nothing), so they are refused rather than returned.
    #[error("{location}: bytes at {offset} were never written")]
    Unwritten {
        /// Where (the tier).
        location: String,
        /// Storage offset of the chunk.
        offset: u64,
    },
    /// A block request whose grant is older than the block's current generation: the block
    /// was freed (the writer's lease ended, or its file was deleted) and given to another file
    /// since. Nothing of the request was stored or read.
    #[error(
        "fenced: the block at storage offset {offset} was reallocated (this grant's generation {generation}, the block's {current}); the lease ended or the file was deleted, nothing was stored"
    )]
    Fenced {
        /// Storage offset of the block on its datanode.
        offset: u64,
        /// The generation the request's grant carries.
        generation: u64,
        /// The newest generation the datanode has seen for the block.
        current: u64,
    },
    /// A block request without a valid grant (missing, forged, for another block or datanode,
    /// or read-only for a write).
    #[error("no valid grant for the block at storage offset {offset}: {reason}")]
    GrantRefused {
        /// Storage offset of the request.
        offset: u64,
        /// What is wrong with the grant.
        reason: String,
    },
    /// An operation this connection's credentials do not allow (a client registering a
    /// datanode, a datanode announcing another host).
    #[error("not permitted: {operation}: {reason}")]
    NotPermitted {
        /// What was refused.
        operation: String,
        /// Why.
        reason: String,
    },
    /// A feature this build or this machine cannot provide (RDMA without a device...).
    #[error("{feature} unavailable: {reason}")]
    Unsupported {
        /// The feature.
        feature: String,
        /// Why.
        reason: String,
    },
    /// A file id that does not exist (deleted, or replaced keyvalue value already freed).
    #[error("file {file_id} does not exist (deleted or replaced)")]
    UnknownFile {
        /// The file id.
        file_id: u64,
    },
    /// A datanode id the namenode does not know (never registered, declared dead, or the
    /// namenode restarted): the datanode must register again.
    #[error("unknown datanode {id}: register again")]
    UnknownDatanode {
        /// The id.
        id: u64,
    },
    /// A registration the namenode refuses.
    #[error("invalid datanode registration: {reason}")]
    InvalidDatanode {
        /// Why.
        reason: String,
    },
    /// Client and server speak different protocol versions.
    #[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// The peer's version.
        theirs: u32,
    },
    /// The shared-secret challenge failed.
    #[error("authentication failed: {reason}")]
    AuthFailed {
        /// Why (never the secret).
        reason: String,
    },
    /// A frame longer than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced body length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A frame with a message kind the receiver does not know.
    #[error("unknown message kind {kind}")]
    UnknownMessage {
        /// The kind number.
        kind: u32,
    },
    /// A frame or message body that does not decode.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A well-formed message that makes no sense at this point of the conversation.
    #[error("unexpected message: expected {expected}, got kind {kind}")]
    UnexpectedMessage {
        /// What was expected.
        expected: String,
        /// The kind received.
        kind: u32,
    },
    /// The server refused the connection because it is at its connection limit.
    #[error("server busy: connection limit of {limit} reached")]
    ServerBusy {
        /// The limit.
        limit: u64,
    },
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// An error code this client does not know (a newer server).
    #[error("server error {code}: {message}")]
    Remote {
        /// The raw code.
        code: i32,
        /// The server's rendering.
        message: String,
    },
    /// Connecting failed.
    #[error("cannot connect to {addr}: {cause}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause (in the message, not chained, so one line says it all).
        cause: io::Error,
    },
    /// The connection closed or broke while requests were outstanding.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// The peer's address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// Something got no answer in time.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout {
        /// What timed out ("request to 127.0.0.1:9060", "handshake").
        what: String,
        /// The timeout.
        after_ms: u64,
    },
    /// Bad configuration.
    #[error("configuration: {key}: {reason}")]
    Config {
        /// The key (or file) at fault.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Local or socket I/O.
    #[error("i/o: {cause}")]
    Io {
        /// The cause.
        cause: io::Error,
    },
}

impl From<io::Error> for Error {
    fn from(cause: io::Error) -> Self {
        Self::Io { cause }
    }
}

fn class_suffix(class: Option<u32>) -> String {
    class.map_or_else(String::new, |c| format!(" in storage class {c}"))
}

fn location_suffix(location: &Option<IpAddr>) -> String {
    location
        .as_ref()
        .map_or_else(String::new, |l| format!(" on host {l}"))
}

/// Longest text from a peer an error repeats; longer text is cut (a hostile 4 MiB path must
/// not come back as a 4 MiB error, or several times that once escaped).
pub(crate) const ECHO_MAX: usize = 512;

/// `text` cut to at most `max` bytes at a character boundary, marked with "..." if cut.
pub(crate) fn clipped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// What a server's notice names when it closes a connection idle for too long.
pub(crate) const IDLE_CONNECTION: &str = "an idle connection";

impl Error {
    /// A server closed the connection as idle (it read no request after the notice, so none
    /// on it was done).
    pub fn is_idle_close(&self) -> bool {
        matches!(self, Self::Timeout { what, .. } if what == IDLE_CONNECTION)
    }

    /// The server could not be reached or the connection to it broke (it restarted, it is
    /// stopping, the network failed): worth trying again on a new connection.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::ConnectionLost { .. } | Self::ShuttingDown
        ) || matches!(self, Self::Timeout { what, .. }
            if what.starts_with("connecting") || what == "handshake")
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl ToString) -> Self {
        Self::Malformed {
            what: what.into(),
            detail: clipped(&detail.to_string(), ECHO_MAX),
        }
    }

    pub(crate) fn invalid_path(path: &[u8], problem: PathProblem) -> Self {
        Self::InvalidPath {
            path: clipped(&String::from_utf8_lossy(path), ECHO_MAX),
            problem,
        }
    }
}
