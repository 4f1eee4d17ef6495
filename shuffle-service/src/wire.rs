//! The service protocol's framing and its typed errors on the wire (messages in
//! `proto/crail/shuffle/v1/service.proto`): a 4-byte little-endian length, then the message.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::layout::ShuffleId;

include!(concat!(env!("OUT_DIR"), "/crail.shuffle.v1.rs"));

/// The protocol's version, checked by Hello.
pub const VERSION: u32 = 1;

/// No message is larger (a lent group of 100,000 partitions is about 6 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection between messages.
    Closed,
    /// Anything else: I/O, a length past the limit, a body that does not decode.
    Bad(String),
}

/// Reads one message; `buf` is reused between calls.
pub async fn read<M: Message + Default, R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<M, ReadError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Bad(e.to_string())),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(ReadError::Bad(format!(
            "a message of {len} bytes is past the limit of {MAX_MESSAGE}"
        )));
    }
    buf.resize(len, 0);
    reader
        .read_exact(buf)
        .await
        .map_err(|e| ReadError::Bad(format!("message cut short: {e}")))?;
    M::decode(&buf[..]).map_err(|e| ReadError::Bad(format!("undecodable message: {e}")))
}

/// Writes one message.
pub async fn write<M: Message, W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &M,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4 + message.encoded_len());
    out.extend_from_slice(&(message.encoded_len() as u32).to_le_bytes());
    message.encode(&mut out).map_err(std::io::Error::other)?;
    writer.write_all(&out).await?;
    writer.flush().await
}

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
