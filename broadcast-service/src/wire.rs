//! The service protocol's messages (`proto/crail/broadcast/v1/service.proto`, carried by the
//! node-service layer) and its typed errors on the wire.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use std::time::Duration;

use crail_node_service::Failure;

use crate::{Error, VarId};

include!(concat!(env!("OUT_DIR"), "/crail.broadcast.v1.rs"));

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

/// An error as the service sends it: every variant with its fields, a store error as the
/// store's own.
#[cfg(feature = "node")]
pub fn failure(error: &Error) -> Failure {
    let message = error.to_string();
    let detail = |var: &VarId, problem: &str| ErrorDetail {
        var: Some(var_ref(var)),
        problem: problem.to_owned(),
        waited_ms: 0,
    };
    let (code, detail) = match error {
        Error::Store(e) => return Failure::store(e),
        Error::Service(e) => (
            "service",
            ErrorDetail {
                problem: e.to_string(),
                ..Default::default()
            },
        ),
        Error::UnknownVariable { var } => ("unknown_variable", detail(var, "")),
        Error::AlreadyExists { var } => ("already_exists", detail(var, "")),
        Error::BeingWritten { var, waited } => (
            "being_written",
            ErrorDetail {
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                ..detail(var, "")
            },
        ),
        Error::StoreFull { var, cause } => ("store_full", detail(var, cause)),
        Error::Unreadable { var, cause } => ("unreadable", detail(var, cause)),
        Error::Source { var, cause } => ("source", detail(var, cause)),
        Error::Invalid { var, problem } => ("invalid", detail(var, problem)),
    };
    Failure::new(code, message, detail)
}

/// The typed error a failure stands for.
pub fn error(failure: Box<Failure>) -> Error {
    if let Some(store) = failure.store {
        return Error::Store(store);
    }
    let d: ErrorDetail = failure.detail();
    let var = var_id(d.var.as_ref());
    let cause = d.problem;
    match failure.code.as_str() {
        "unknown_variable" => Error::UnknownVariable { var },
        "already_exists" => Error::AlreadyExists { var },
        "being_written" => Error::BeingWritten {
            var,
            waited: Duration::from_millis(d.waited_ms),
        },
        "store_full" => Error::StoreFull { var, cause },
        "unreadable" => Error::Unreadable { var, cause },
        "source" => Error::Source { var, cause },
        "invalid" => Error::Invalid {
            var,
            problem: cause,
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
            Error::Store(crail_store::Error::NotFound { path: "/x".into() }),
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
