//! The service protocol's messages (`proto/crail/broadcast/v1/service.proto`, framed by
//! [`crail_store::service`]) and its typed errors on the wire.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Error, VarId};

include!(concat!(env!("OUT_DIR"), "/crail.broadcast.v1.rs"));

/// The protocol's version, checked by Hello.
pub const VERSION: u32 = 1;

/// No Data message announces more.
pub const MAX_DATA: u32 = 16 << 20;

pub fn var_ref(var: &VarId) -> VarRef {
    VarRef {
        app: var.app.clone(),
        id: var.id.clone(),
    }
}

pub fn var_id(r: Option<&VarRef>) -> VarId {
    r.map_or_else(
        || VarId::new("", ""),
        |r| VarId::new(r.app.clone(), r.id.clone()),
    )
}

/// Reads the `len` raw bytes that follow a Data message into `buf` and splits them off:
/// once the caller drops the chunk, the next one reuses its memory.
pub async fn read_data<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    len: u32,
    buf: &mut BytesMut,
) -> Result<Bytes, String> {
    if len > MAX_DATA {
        return Err(format!(
            "a data message of {len} bytes is past the limit of {MAX_DATA}"
        ));
    }
    let len = len as usize;
    buf.clear();
    buf.reserve(len);
    while buf.len() < len {
        let want = len - buf.len();
        let mut rest = (&mut *buf).limit(want);
        match reader.read_buf(&mut rest).await {
            Ok(0) => return Err("data cut short".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("data cut short: {e}")),
        }
    }
    Ok(buf.split().freeze())
}

/// An error as the service sends it.
pub fn failure(error: &Error) -> Failure {
    let (code, var, problem, waited) = match error {
        Error::UnknownVariable { var } => ("unknown_variable", Some(var), String::new(), 0),
        Error::AlreadyExists { var } => ("already_exists", Some(var), String::new(), 0),
        Error::BeingWritten { var, waited } => (
            "being_written",
            Some(var),
            String::new(),
            waited.as_millis() as u64,
        ),
        Error::StoreFull { var, cause } => ("store_full", Some(var), cause.clone(), 0),
        Error::Unreadable { var, cause } => ("unreadable", Some(var), cause.clone(), 0),
        Error::Source { var, cause } => ("source", Some(var), cause.clone(), 0),
        Error::Invalid { var, problem } => ("invalid", Some(var), problem.clone(), 0),
        Error::Service { cause, .. } => ("service", None, cause.clone(), 0),
        other => ("service", None, other.to_string(), 0),
    };
    Failure {
        code: code.into(),
        var: var.map(var_ref),
        problem,
        waited_ms: waited,
    }
}

/// The typed error a failure stands for.
pub fn error(failure: Failure, service: &str) -> Error {
    let var = var_id(failure.var.as_ref());
    let cause = failure.problem;
    match failure.code.as_str() {
        "unknown_variable" => Error::UnknownVariable { var },
        "already_exists" => Error::AlreadyExists { var },
        "being_written" => Error::BeingWritten {
            var,
            waited: Duration::from_millis(failure.waited_ms),
        },
        "store_full" => Error::StoreFull { var, cause },
        "unreadable" => Error::Unreadable { var, cause },
        "source" => Error::Source { var, cause },
        "invalid" => Error::Invalid {
            var,
            problem: cause,
        },
        _ => Error::Service {
            service: service.to_owned(),
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_survive_the_wire() {
        let var = VarId::new("app-1", "b7");
        let errors = [
            Error::UnknownVariable { var: var.clone() },
            Error::AlreadyExists { var: var.clone() },
            Error::BeingWritten {
                var: var.clone(),
                waited: Duration::from_millis(1500),
            },
            Error::StoreFull {
                var: var.clone(),
                cause: "no room".into(),
            },
            Error::Unreadable {
                var: var.clone(),
                cause: "datanode gone".into(),
            },
            Error::Source {
                var: var.clone(),
                cause: "client left".into(),
            },
            Error::Invalid {
                var: var.clone(),
                problem: "bad name".into(),
            },
        ];
        for e in errors {
            let back = error(failure(&e), "unix:@x");
            assert_eq!(back.to_string(), e.to_string());
        }
        let store = Error::Store(crail_store::Error::NotFound { path: "/x".into() });
        assert!(matches!(
            error(failure(&store), "unix:@x"),
            Error::Service { cause, .. } if cause.contains("/x")
        ));
    }
}
