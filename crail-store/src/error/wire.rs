//! Errors on the wire: every error a server raises travels as an `ErrorReply` and comes back as
//! the same variant with the same message.

use crate::error::Error;
use crate::path::PathProblem;
use crate::proto as pb;
use crate::types::NodeType;

impl Error {
    /// The error encoded as the store's `ErrorReply` message, for a peer that carries store
    /// errors in its own messages (the node services' failures); [`Error::from_wire`] decodes
    /// it back into the same variant.
    pub fn to_wire(&self) -> bytes::Bytes {
        use prost::Message;
        bytes::Bytes::from(self.to_reply().encode_to_vec())
    }

    /// The error [`Error::to_wire`] encoded; bytes that do not decode are a `Malformed` error.
    pub fn from_wire(bytes: &[u8]) -> Self {
        use prost::Message;
        match pb::ErrorReply::decode(bytes) {
            Ok(reply) => Self::from_reply(reply),
            Err(e) => Self::malformed("error reply", e),
        }
    }

    /// The wire form of an error the server raised.
    pub(crate) fn to_reply(&self) -> pb::ErrorReply {
        use pb::ErrorCode as C;
        let mut r = pb::ErrorReply {
            message: self.to_string(),
            ..Default::default()
        };
        let code = match self {
            Self::NotFound { path } => {
                r.path = path.clone();
                C::NotFound
            }
            Self::AlreadyExists { path } => {
                r.path = path.clone();
                C::AlreadyExists
            }
            Self::NotAContainer { path, actual } => {
                r.path = path.clone();
                r.actual_type = pb::NodeType::from(*actual) as i32;
                C::NotAContainer
            }
            Self::WrongType {
                path,
                expected,
                actual,
            } => {
                r.path = path.clone();
                r.expected_type = pb::NodeType::from(*expected) as i32;
                r.actual_type = pb::NodeType::from(*actual) as i32;
                C::WrongType
            }
            Self::InvalidChild {
                path,
                parent,
                child,
            } => {
                r.path = path.clone();
                r.expected_type = pb::NodeType::from(*parent) as i32;
                r.actual_type = pb::NodeType::from(*child) as i32;
                C::InvalidChild
            }
            Self::NotEmpty { path } => {
                r.path = path.clone();
                C::NotEmpty
            }
            Self::InvalidPath { path, problem } => {
                r.path = path.clone();
                encode_problem(problem, &mut r);
                C::InvalidPath
            }
            Self::MoveIntoItself { from, to } => {
                r.path = from.clone();
                r.other_path = to.clone();
                C::MoveIntoItself
            }
            Self::RootNotAllowed { operation } => {
                r.detail = operation.clone();
                C::RootNotAllowed
            }
            Self::LeaseHeld { path, remaining_ms } => {
                r.path = path.clone();
                r.limit = *remaining_ms;
                C::LeaseHeld
            }
            Self::LeaseLost { path } => {
                r.path = path.clone();
                C::LeaseLost
            }
            Self::BlockOutOfRange {
                path,
                index,
                blocks,
            } => {
                r.path = path.clone();
                r.index = *index;
                r.count = *blocks;
                C::BlockOutOfRange
            }
            Self::TooManyBlocks { path, blocks, max } => {
                r.path = path.clone();
                r.count = *blocks;
                r.limit = *max;
                C::TooManyBlocks
            }
            Self::TooManyWriters { path, max } => {
                r.path = path.clone();
                r.limit = *max;
                C::TooManyWriters
            }
            Self::BatchTooLarge { count, max } => {
                r.count = *count;
                r.limit = *max;
                C::BatchTooLarge
            }
            Self::SizeBeyondBlocks {
                path,
                size,
                capacity,
            } => {
                r.path = path.clone();
                r.count = *size;
                r.limit = *capacity;
                C::SizeBeyondBlocks
            }
            Self::StoreFull {
                blocks,
                storage_class,
                location,
            } => {
                r.count = *blocks;
                r.storage_class = *storage_class;
                r.location = location.map(|l| l.to_string());
                C::StoreFull
            }
            Self::LostBlocks {
                path,
                blocks,
                datanodes,
            } => {
                r.path = path.clone();
                r.blocks = blocks.clone();
                r.datanodes = datanodes.clone();
                C::LostBlocks
            }
            Self::Recovering {
                datanodes,
                retry_ms,
            } => {
                r.datanodes = datanodes.clone();
                r.limit = *retry_ms;
                C::Recovering
            }
            Self::ChecksumMismatch {
                location,
                offset,
                expected,
                actual,
            } => {
                r.path = location.clone();
                r.index = *offset;
                r.count = u64::from(*expected);
                r.limit = u64::from(*actual);
                C::ChecksumMismatch
            }
            Self::PastEndOfFile { path, offset, size } => {
                r.path = path.clone();
                r.index = *offset;
                r.limit = *size;
                C::PastEndOfFile
            }
            Self::BadRange {
                offset,
                length,
                reason,
            } => {
                r.index = *offset;
                r.count = *length;
                r.detail = reason.clone();
                C::BadRange
            }
            Self::StaleLocation { expected, current } => {
                r.index = *expected;
                r.count = *current;
                C::StaleLocation
            }
            Self::Unwritten { location, offset } => {
                r.other_path = location.clone();
                r.index = *offset;
                C::Unwritten
            }
            Self::Fenced {
                offset,
                generation,
                current,
            } => {
                r.index = *offset;
                r.count = *generation;
                r.limit = *current;
                C::Fenced
            }
            Self::GrantRefused { offset, reason } => {
                r.index = *offset;
                r.detail = reason.clone();
                C::GrantRefused
            }
            Self::QuotaExceeded {
                app,
                what,
                limit,
                used,
            } => {
                r.path = app.clone();
                r.detail = what.clone();
                r.limit = *limit;
                r.count = *used;
                C::QuotaExceeded
            }
            Self::NotPermitted { operation, reason } => {
                r.other_path = operation.clone();
                r.detail = reason.clone();
                C::NotPermitted
            }
            Self::Unsupported { feature, reason } => {
                r.other_path = feature.clone();
                r.detail = reason.clone();
                C::Unsupported
            }
            Self::UnknownFile { file_id } => {
                r.index = *file_id;
                C::UnknownFile
            }
            Self::UnknownDatanode { id } => {
                r.index = *id;
                C::UnknownDatanode
            }
            Self::InvalidDatanode { reason } => {
                r.detail = reason.clone();
                C::InvalidDatanode
            }
            Self::VersionMismatch { ours, theirs } => {
                // Seen from the receiver, the sender's "ours" is "theirs".
                r.index = u64::from(*ours);
                r.count = u64::from(*theirs);
                C::VersionMismatch
            }
            Self::AuthFailed { reason } => {
                r.detail = reason.clone();
                C::AuthFailed
            }
            Self::FrameTooLarge { len, max } => {
                r.count = *len;
                r.limit = *max;
                C::FrameTooLarge
            }
            Self::UnknownMessage { kind } => {
                r.kind = *kind;
                C::UnknownMessage
            }
            Self::Malformed { what, detail } => {
                r.other_path = what.clone();
                r.detail = detail.clone();
                C::Malformed
            }
            Self::UnexpectedMessage { expected, kind } => {
                r.detail = expected.clone();
                r.kind = *kind;
                C::UnexpectedMessage
            }
            Self::ServerBusy { limit } => {
                r.limit = *limit;
                C::ServerBusy
            }
            Self::ShuttingDown => C::ShuttingDown,
            Self::Timeout { what, after_ms } => {
                r.detail = what.clone();
                r.limit = *after_ms;
                C::Timeout
            }
            // Errors that only arise on one side of a connection never travel; if one does,
            // the peer sees its message.
            Self::Remote { .. }
            | Self::Connect { .. }
            | Self::ConnectionLost { .. }
            | Self::Config { .. }
            | Self::Io { .. } => C::Unspecified,
        };
        r.code = code as i32;
        r
    }

    /// The typed error behind a reply the peer sent.
    pub(crate) fn from_reply(r: pb::ErrorReply) -> Self {
        use pb::ErrorCode as C;
        let node_type = |t: i32| NodeType::try_from(t).ok();
        let Ok(code) = C::try_from(r.code) else {
            return Self::Remote {
                code: r.code,
                message: r.message,
            };
        };
        let remote = |r: pb::ErrorReply| Self::Remote {
            code: r.code,
            message: r.message,
        };
        match code {
            C::NotFound => Self::NotFound { path: r.path },
            C::AlreadyExists => Self::AlreadyExists { path: r.path },
            C::NotAContainer => match node_type(r.actual_type) {
                Some(actual) => Self::NotAContainer {
                    path: r.path,
                    actual,
                },
                None => remote(r),
            },
            C::WrongType => match (node_type(r.expected_type), node_type(r.actual_type)) {
                (Some(expected), Some(actual)) => Self::WrongType {
                    path: r.path,
                    expected,
                    actual,
                },
                _ => remote(r),
            },
            C::InvalidChild => match (node_type(r.expected_type), node_type(r.actual_type)) {
                (Some(parent), Some(child)) => Self::InvalidChild {
                    path: r.path,
                    parent,
                    child,
                },
                _ => remote(r),
            },
            C::NotEmpty => Self::NotEmpty { path: r.path },
            C::InvalidPath => match decode_problem(&r) {
                Some(problem) => Self::InvalidPath {
                    path: r.path,
                    problem,
                },
                None => remote(r),
            },
            C::MoveIntoItself => Self::MoveIntoItself {
                from: r.path,
                to: r.other_path,
            },
            C::RootNotAllowed => Self::RootNotAllowed {
                operation: r.detail,
            },
            C::LeaseHeld => Self::LeaseHeld {
                path: r.path,
                remaining_ms: r.limit,
            },
            C::LeaseLost => Self::LeaseLost { path: r.path },
            C::BlockOutOfRange => Self::BlockOutOfRange {
                path: r.path,
                index: r.index,
                blocks: r.count,
            },
            C::TooManyBlocks => Self::TooManyBlocks {
                path: r.path,
                blocks: r.count,
                max: r.limit,
            },
            C::TooManyWriters => Self::TooManyWriters {
                path: r.path,
                max: r.limit,
            },
            C::BatchTooLarge => Self::BatchTooLarge {
                count: r.count,
                max: r.limit,
            },
            C::SizeBeyondBlocks => Self::SizeBeyondBlocks {
                path: r.path,
                size: r.count,
                capacity: r.limit,
            },
            C::StoreFull => Self::StoreFull {
                blocks: r.count,
                storage_class: r.storage_class,
                location: r.location.as_deref().and_then(|l| l.parse().ok()),
            },
            C::LostBlocks => Self::LostBlocks {
                path: r.path,
                blocks: r.blocks,
                datanodes: r.datanodes,
            },
            C::Recovering => Self::Recovering {
                datanodes: r.datanodes,
                retry_ms: r.limit,
            },
            C::ChecksumMismatch => Self::ChecksumMismatch {
                location: r.path,
                offset: r.index,
                expected: u32::try_from(r.count).unwrap_or(u32::MAX),
                actual: u32::try_from(r.limit).unwrap_or(u32::MAX),
            },
            C::PastEndOfFile => Self::PastEndOfFile {
                path: r.path,
                offset: r.index,
                size: r.limit,
            },
            C::BadRange => Self::BadRange {
                offset: r.index,
                length: r.count,
                reason: r.detail,
            },
            C::StaleLocation => Self::StaleLocation {
                expected: r.index,
                current: r.count,
            },
            C::Unwritten => Self::Unwritten {
                location: r.other_path,
                offset: r.index,
            },
            C::Fenced => Self::Fenced {
                offset: r.index,
                generation: r.count,
                current: r.limit,
            },
            C::GrantRefused => Self::GrantRefused {
                offset: r.index,
                reason: r.detail,
            },
            C::QuotaExceeded => Self::QuotaExceeded {
                app: r.path,
                what: r.detail,
                limit: r.limit,
                used: r.count,
            },
            C::NotPermitted => Self::NotPermitted {
                operation: r.other_path,
                reason: r.detail,
            },
            C::Unsupported => Self::Unsupported {
                feature: r.other_path,
                reason: r.detail,
            },
            C::UnknownFile => Self::UnknownFile { file_id: r.index },
            C::UnknownDatanode => Self::UnknownDatanode { id: r.index },
            C::InvalidDatanode => Self::InvalidDatanode { reason: r.detail },
            C::VersionMismatch => Self::VersionMismatch {
                ours: u32::try_from(r.count).unwrap_or(u32::MAX),
                theirs: u32::try_from(r.index).unwrap_or(u32::MAX),
            },
            C::AuthFailed => Self::AuthFailed { reason: r.detail },
            C::FrameTooLarge => Self::FrameTooLarge {
                len: r.count,
                max: r.limit,
            },
            C::UnknownMessage => Self::UnknownMessage { kind: r.kind },
            C::Malformed => Self::Malformed {
                what: r.other_path,
                detail: r.detail,
            },
            C::UnexpectedMessage => Self::UnexpectedMessage {
                expected: r.detail,
                kind: r.kind,
            },
            C::ServerBusy => Self::ServerBusy { limit: r.limit },
            C::ShuttingDown => Self::ShuttingDown,
            C::Timeout => Self::Timeout {
                what: r.detail,
                after_ms: r.limit,
            },
            C::Unspecified => remote(r),
        }
    }
}

// A path problem travels as (detail = variant name, count = len or depth, limit = max).
fn encode_problem(problem: &PathProblem, r: &mut pb::ErrorReply) {
    let (name, count, limit) = match problem {
        PathProblem::NotUtf8 => ("not_utf8", 0, 0),
        PathProblem::NotAbsolute => ("not_absolute", 0, 0),
        PathProblem::EmptyComponent => ("empty_component", 0, 0),
        PathProblem::DotComponent => ("dot_component", 0, 0),
        PathProblem::Nul => ("nul", 0, 0),
        PathProblem::TooLong { len, max } => ("too_long", *len, *max),
        PathProblem::NameTooLong { len, max } => ("name_too_long", *len, *max),
        PathProblem::TooDeep { depth, max } => ("too_deep", *depth, *max),
    };
    r.detail = name.to_owned();
    r.count = count as u64;
    r.limit = limit as u64;
}

fn decode_problem(r: &pb::ErrorReply) -> Option<PathProblem> {
    let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Some(match r.detail.as_str() {
        "not_utf8" => PathProblem::NotUtf8,
        "not_absolute" => PathProblem::NotAbsolute,
        "empty_component" => PathProblem::EmptyComponent,
        "dot_component" => PathProblem::DotComponent,
        "nul" => PathProblem::Nul,
        "too_long" => PathProblem::TooLong {
            len: n(r.count),
            max: n(r.limit),
        },
        "name_too_long" => PathProblem::NameTooLong {
            len: n(r.count),
            max: n(r.limit),
        },
        "too_deep" => PathProblem::TooDeep {
            depth: n(r.count),
            max: n(r.limit),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_wire_error() -> Vec<Error> {
        let p = || "/a/b".to_owned();
        vec![
            Error::NotFound { path: p() },
            Error::AlreadyExists { path: p() },
            Error::NotAContainer {
                path: p(),
                actual: NodeType::File,
            },
            Error::WrongType {
                path: p(),
                expected: NodeType::File,
                actual: NodeType::Table,
            },
            Error::InvalidChild {
                path: p(),
                parent: NodeType::Table,
                child: NodeType::Directory,
            },
            Error::NotEmpty { path: p() },
            Error::InvalidPath {
                path: p(),
                problem: PathProblem::TooDeep { depth: 40, max: 32 },
            },
            Error::InvalidPath {
                path: p(),
                problem: PathProblem::NotUtf8,
            },
            Error::MoveIntoItself {
                from: p(),
                to: "/a/b/c".into(),
            },
            Error::RootNotAllowed {
                operation: "deleted".into(),
            },
            Error::LeaseHeld {
                path: p(),
                remaining_ms: 900,
            },
            Error::LeaseLost { path: p() },
            Error::BlockOutOfRange {
                path: p(),
                index: 7,
                blocks: 3,
            },
            Error::TooManyBlocks {
                path: p(),
                blocks: 10,
                max: 5,
            },
            Error::BatchTooLarge { count: 9, max: 8 },
            Error::TooManyWriters { path: p(), max: 4 },
            Error::SizeBeyondBlocks {
                path: p(),
                size: 10,
                capacity: 5,
            },
            Error::StoreFull {
                blocks: 2,
                storage_class: Some(1),
                location: Some("127.0.0.3".parse().unwrap()),
            },
            Error::StoreFull {
                blocks: 1,
                storage_class: None,
                location: None,
            },
            Error::Recovering {
                datanodes: vec![2, 5],
                retry_ms: 100,
            },
            Error::LostBlocks {
                path: p(),
                blocks: vec![1, 4],
                datanodes: vec![2],
            },
            Error::ChecksumMismatch {
                location: "write to 127.0.0.2:4000".into(),
                offset: 4096,
                expected: 0xdead_beef,
                actual: 1,
            },
            Error::PastEndOfFile {
                path: p(),
                offset: 10,
                size: 5,
            },
            Error::BadRange {
                offset: 1 << 30,
                length: 4096,
                reason: "past the capacity".into(),
            },
            Error::StaleLocation {
                expected: 1,
                current: 4,
            },
            Error::Unwritten {
                location: "dram tier".into(),
                offset: 8192,
            },
            Error::Fenced {
                offset: 1 << 20,
                generation: 3,
                current: 7,
            },
            Error::GrantRefused {
                offset: 4096,
                reason: "forged".into(),
            },
            Error::QuotaExceeded {
                app: "/crail-shuffle/app-1".into(),
                what: "bytes".into(),
                limit: 1 << 30,
                used: 1 << 30,
            },
            Error::NotPermitted {
                operation: "registering a datanode".into(),
                reason: "no datanode secret".into(),
            },
            Error::Unsupported {
                feature: "rdma".into(),
                reason: "no RDMA device".into(),
            },
            Error::UnknownFile { file_id: 9 },
            Error::UnknownDatanode { id: 3 },
            Error::InvalidDatanode {
                reason: "zero capacity".into(),
            },
            Error::VersionMismatch { ours: 1, theirs: 2 },
            Error::AuthFailed {
                reason: "wrong secret".into(),
            },
            Error::FrameTooLarge { len: 99, max: 10 },
            Error::UnknownMessage { kind: 999 },
            Error::Malformed {
                what: "lookup request".into(),
                detail: "bad varint".into(),
            },
            Error::UnexpectedMessage {
                expected: "hello".into(),
                kind: 17,
            },
            Error::ServerBusy { limit: 10 },
            Error::ShuttingDown,
            Error::Timeout {
                what: "handshake".into(),
                after_ms: 200,
            },
        ]
    }

    #[test]
    fn every_wire_error_round_trips_to_the_same_variant_and_message() {
        for err in every_wire_error() {
            let back = Error::from_reply(err.to_reply());
            let (sent, got) = (err.to_string(), back.to_string());
            if let Error::VersionMismatch { ours, theirs } = err {
                // The receiver sees the sender's versions swapped.
                assert!(
                    matches!(back, Error::VersionMismatch { ours: o, theirs: t } if o == theirs && t == ours)
                );
            } else {
                assert_eq!(sent, got);
                assert_eq!(
                    std::mem::discriminant(&err),
                    std::mem::discriminant(&back),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn unknown_codes_keep_the_server_message() {
        let reply = pb::ErrorReply {
            code: 4242,
            message: "something new".into(),
            ..Default::default()
        };
        let err = Error::from_reply(reply);
        assert!(matches!(err, Error::Remote { code: 4242, .. }));
        assert_eq!(err.to_string(), "server error 4242: something new");
    }
}
