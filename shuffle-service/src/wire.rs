//! The service protocol's messages and its typed errors on the wire (messages in
//! `proto/crail/shuffle/v1/service.proto`), framed by [`crail_store::service::read`] and
//! [`crail_store::service::write`].

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use crate::error::Error;
use crate::layout::ShuffleId;

include!(concat!(env!("OUT_DIR"), "/crail.shuffle.v1.rs"));

/// The protocol's version, checked by Hello.
pub const VERSION: u32 = 1;

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

/// An error as the service sends it.
pub fn failure(error: &Error) -> Failure {
    let (code, id, number, limit, problem) = match error {
        Error::UnknownShuffle { id } => ("unknown_shuffle", Some(id), 0, 0, String::new()),
        Error::AlreadyRegistered { id } => ("already_registered", Some(id), 0, 0, String::new()),
        Error::Invalid { id, problem } => ("invalid", Some(id), 0, 0, problem.clone()),
        Error::PartitionOutOfRange {
            id,
            partition,
            partitions,
        } => (
            "partition_out_of_range",
            Some(id),
            *partition,
            *partitions,
            String::new(),
        ),
        Error::MapOutOfRange { id, map, maps } => {
            ("map_out_of_range", Some(id), *map, *maps, String::new())
        }
        other => ("service", None, 0, 0, other.to_string()),
    };
    Failure {
        code: code.into(),
        shuffle: id.map(shuffle_ref),
        number,
        limit,
        problem,
    }
}

/// The typed error a failure stands for.
pub fn error(failure: Failure, service: &str) -> Error {
    let id = shuffle_id(failure.shuffle.as_ref());
    match failure.code.as_str() {
        "unknown_shuffle" => Error::UnknownShuffle { id },
        "already_registered" => Error::AlreadyRegistered { id },
        "invalid" => Error::Invalid {
            id,
            problem: failure.problem,
        },
        "partition_out_of_range" => Error::PartitionOutOfRange {
            id,
            partition: failure.number,
            partitions: failure.limit,
        },
        "map_out_of_range" => Error::MapOutOfRange {
            id,
            map: failure.number,
            maps: failure.limit,
        },
        _ => Error::Service {
            service: service.to_owned(),
            cause: failure.problem,
        },
    }
}
