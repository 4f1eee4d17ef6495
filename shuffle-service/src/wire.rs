//! The service protocol's messages (`proto/crail/shuffle/v1/service.proto`, carried by the
//! node-service layer) and its typed errors on the wire.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use crail_node_service::Failure;

use crate::error::Error;
use crate::layout::ShuffleId;

include!(concat!(env!("OUT_DIR"), "/crail.shuffle.v1.rs"));

pub fn shuffle_ref(id: &ShuffleId) -> ShuffleRef {
    ShuffleRef {
        app: id.app.clone(),
        shuffle: id.shuffle,
    }
}

pub fn shuffle_id(r: Option<&ShuffleRef>) -> ShuffleId {
    r.map_or_else(
        || ShuffleId::new("", 0),
        |r| ShuffleId::new(r.app.clone(), r.shuffle),
    )
}

/// An error as the service sends it: every variant with its fields, a store error as the
/// store's own.
#[cfg(feature = "node")]
pub fn failure(error: &Error) -> Failure {
    let message = error.to_string();
    let detail = |id: &ShuffleId| ErrorDetail {
        shuffle: Some(shuffle_ref(id)),
        ..Default::default()
    };
    let (code, detail) = match error {
        Error::Store(e) => return Failure::store(e),
        Error::Service(e) => {
            return Failure::new(
                "service",
                message,
                ErrorDetail {
                    text: e.to_string(),
                    ..Default::default()
                },
            );
        }
        Error::UnknownShuffle { id } => ("unknown_shuffle", detail(id)),
        Error::AlreadyRegistered { id } => ("already_registered", detail(id)),
        Error::Invalid { id, problem } => (
            "invalid",
            ErrorDetail {
                text: problem.clone(),
                ..detail(id)
            },
        ),
        Error::PartitionOutOfRange {
            id,
            partition,
            partitions,
        } => (
            "partition_out_of_range",
            ErrorDetail {
                number: *partition,
                limit: *partitions,
                ..detail(id)
            },
        ),
        Error::MapOutOfRange { id, map, maps } => (
            "map_out_of_range",
            ErrorDetail {
                number: *map,
                limit: *maps,
                ..detail(id)
            },
        ),
        Error::AlreadyCommitted {
            id,
            map,
            attempt,
            winner,
        } => (
            "already_committed",
            ErrorDetail {
                number: *map,
                attempt: *attempt,
                winner: *winner,
                ..detail(id)
            },
        ),
        Error::Superseded {
            id,
            map,
            attempt,
            generation,
            committed,
        } => (
            "superseded",
            ErrorDetail {
                number: *map,
                limit: *generation,
                attempt: *attempt,
                winner: u64::from(*committed),
                ..detail(id)
            },
        ),
        Error::NotCommitted { id, maps } => (
            "not_committed",
            ErrorDetail {
                maps: maps.clone(),
                ..detail(id)
            },
        ),
        Error::FetchFailed {
            id,
            partition,
            maps,
            cause,
        } => (
            "fetch_failed",
            ErrorDetail {
                limit: *partition,
                maps: maps.clone(),
                text: cause.clone(),
                ..detail(id)
            },
        ),
        Error::BadRecord { id, path, cause } => (
            "bad_record",
            ErrorDetail {
                path: path.clone(),
                text: cause.clone(),
                ..detail(id)
            },
        ),
        Error::CommitLost { id, map, cause } => (
            "commit_lost",
            ErrorDetail {
                number: *map,
                text: cause.clone(),
                ..detail(id)
            },
        ),
        Error::Window {
            id,
            partition,
            map,
            piece,
            window,
        } => (
            "window",
            ErrorDetail {
                number: *map,
                limit: *partition,
                attempt: *piece,
                winner: *window,
                ..detail(id)
            },
        ),
    };
    Failure::new(code, message, detail)
}

/// The typed error a failure stands for.
pub fn error(failure: Box<Failure>) -> Error {
    if let Some(store) = failure.store {
        return Error::Store(store);
    }
    let d: ErrorDetail = failure.detail();
    let id = shuffle_id(d.shuffle.as_ref());
    match failure.code.as_str() {
        "unknown_shuffle" => Error::UnknownShuffle { id },
        "already_registered" => Error::AlreadyRegistered { id },
        "invalid" => Error::Invalid {
            id,
            problem: d.text,
        },
        "partition_out_of_range" => Error::PartitionOutOfRange {
            id,
            partition: d.number,
            partitions: d.limit,
        },
        "map_out_of_range" => Error::MapOutOfRange {
            id,
            map: d.number,
            maps: d.limit,
        },
        "already_committed" => Error::AlreadyCommitted {
            id,
            map: d.number,
            attempt: d.attempt,
            winner: d.winner,
        },
        "superseded" => Error::Superseded {
            id,
            map: d.number,
            attempt: d.attempt,
            generation: d.limit,
            committed: u32::try_from(d.winner).unwrap_or(u32::MAX),
        },
        "not_committed" => Error::NotCommitted { id, maps: d.maps },
        "fetch_failed" => Error::FetchFailed {
            id,
            partition: d.limit,
            maps: d.maps,
            cause: d.text,
        },
        "bad_record" => Error::BadRecord {
            id,
            path: d.path,
            cause: d.text,
        },
        "commit_lost" => Error::CommitLost {
            id,
            map: d.number,
            cause: d.text,
        },
        "window" => Error::Window {
            id,
            partition: d.limit,
            map: d.number,
            piece: d.attempt,
            window: d.winner,
        },
        // A service error of another build, or the service's own connection to a peer.
        _ => Error::Service(crail_node_service::Error::Failed(failure)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_survive_the_wire() {
        let id = ShuffleId::new("app-1", 7);
        let errors = [
            Error::UnknownShuffle { id: id.clone() },
            Error::AlreadyRegistered { id: id.clone() },
            Error::Invalid {
                id: id.clone(),
                problem: "zero partitions".into(),
            },
            Error::PartitionOutOfRange {
                id: id.clone(),
                partition: 9,
                partitions: 4,
            },
            Error::MapOutOfRange {
                id: id.clone(),
                map: 5,
                maps: 2,
            },
            Error::AlreadyCommitted {
                id: id.clone(),
                map: 1,
                attempt: 3,
                winner: 2,
            },
            Error::Superseded {
                id: id.clone(),
                map: 1,
                attempt: 3,
                generation: 0,
                committed: 1,
            },
            Error::NotCommitted {
                id: id.clone(),
                maps: vec![1, 4],
            },
            Error::FetchFailed {
                id: id.clone(),
                partition: 3,
                maps: vec![0, 2],
                cause: "datanode gone".into(),
            },
            Error::BadRecord {
                id: id.clone(),
                path: "/x".into(),
                cause: "not json".into(),
            },
            Error::CommitLost {
                id: id.clone(),
                map: 6,
                cause: "lost".into(),
            },
            Error::Window {
                id: id.clone(),
                partition: 2,
                map: 6,
                piece: 1 << 30,
                window: 64 << 20,
            },
            Error::Store(crail_store::Error::StoreFull {
                blocks: 1,
                storage_class: None,
                location: None,
            }),
        ];
        for e in errors {
            let back = error(Box::new(failure(&e)));
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e}"
            );
        }
    }
}
