//! What can go wrong on a node-service connection, and a service's typed failure on the wire.

use bytes::Bytes;

/// A failure of a connection to a node's service, or a request it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service could not be reached.
    #[error("{service} service {endpoint}: cannot connect: {cause}")]
    Connect {
        /// The service ("shuffle", "broadcast").
        service: &'static str,
        /// Where it was sought.
        endpoint: String,
        /// Why not.
        cause: String,
    },
    /// The handshake failed: a wrong or missing shared secret, another protocol version,
    /// another service on that endpoint.
    #[error("{service} service {endpoint}: {cause}")]
    Refused {
        /// The service.
        service: &'static str,
        /// Its endpoint.
        endpoint: String,
        /// The store's typed error (`AuthFailed`, `VersionMismatch`, ...).
        cause: Box<crail_store::Error>,
    },
    /// The connection broke, or the peer broke the protocol.
    #[error("{service} service {endpoint}: connection lost: {reason}")]
    Lost {
        /// The service.
        service: &'static str,
        /// Its endpoint.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// The service did not answer in time.
    #[error("{service} service {endpoint}: no answer to {what} within {after_ms} ms")]
    Timeout {
        /// The service.
        service: &'static str,
        /// Its endpoint.
        endpoint: String,
        /// What was waited for.
        what: &'static str,
        /// How long.
        after_ms: u64,
    },
    /// The service answered the request with a failure.
    #[error("{0}")]
    Failed(Box<Failure>),
    /// An endpoint's text does not parse.
    #[error("{text:?}: {problem}")]
    BadEndpoint {
        /// The text.
        text: String,
        /// What is wrong.
        problem: String,
    },
    /// The store failed (finding a service where it advertised itself).
    #[error(transparent)]
    Store(#[from] crail_store::Error),
}

impl Error {
    /// Whether the service itself is gone or unreachable (its node lost, for the engines);
    /// false for a request it failed and for a refused handshake.
    pub fn is_lost(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Lost { .. } | Self::Timeout { .. }
        )
    }
}

/// The layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request a service failed, as it travels: the service's name for the error, its message,
/// the store's typed error when the store failed the request, and the service's own fields.
#[derive(Debug)]
pub struct Failure {
    /// The service's name for the error; [`Failure::STORE`] when `store` is set.
    pub code: String,
    /// The error's one-line message.
    pub message: String,
    /// The store's error, same variant as the service saw.
    pub store: Option<crail_store::Error>,
    /// The service's own fields (a message the service defines; empty when none).
    pub detail: Bytes,
}

impl Failure {
    /// The code of a failure that carries a store error.
    pub const STORE: &'static str = "store";

    /// A failure the store's `error` caused.
    pub fn store(error: &crail_store::Error) -> Self {
        Self {
            code: Self::STORE.to_owned(),
            message: error.to_string(),
            // The store's errors are not Clone (some hold an io::Error): a copy through the
            // wire form, which is what the client will see anyway.
            store: Some(crail_store::Error::from_wire(&error.to_wire())),
            detail: Bytes::new(),
        }
    }

    /// A failure of the service's own: `code`, the error's message, the service's fields.
    pub fn new(code: &str, message: String, detail: impl prost::Message) -> Self {
        Self {
            code: code.to_owned(),
            message,
            store: None,
            detail: Bytes::from(detail.encode_to_vec()),
        }
    }

    /// The service's fields, decoded as `M` (the defaults when absent or undecodable).
    pub fn detail<M: prost::Message + Default>(&self) -> M {
        M::decode(self.detail.clone()).unwrap_or_default()
    }

    pub(crate) fn to_proto(&self) -> crate::proto::Failure {
        crate::proto::Failure {
            code: self.code.clone(),
            message: clip(&self.message),
            store: self.store.as_ref().map(|e| e.to_wire()).unwrap_or_default(),
            detail: self.detail.clone(),
        }
    }

    pub(crate) fn from_proto(f: crate::proto::Failure) -> Self {
        Self {
            store: (!f.store.is_empty()).then(|| crail_store::Error::from_wire(&f.store)),
            code: f.code,
            message: f.message,
            detail: f.detail,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.store {
            Some(store) => write!(f, "{store}"),
            None => f.write_str(&self.message),
        }
    }
}

/// A message cut to a few KiB, at a character boundary: a failure never grows past what a
/// one-line error needs, whatever a client sent.
fn clip(text: &str) -> String {
    const MAX: usize = 4096;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_store_error_and_the_service_fields() {
        let full = crail_store::Error::StoreFull {
            blocks: 3,
            storage_class: None,
            location: None,
        };
        let back = Failure::from_proto(Failure::store(&full).to_proto());
        assert!(
            matches!(
                back.store,
                Some(crail_store::Error::StoreFull { blocks: 3, .. })
            ),
            "{back:?}"
        );
        assert_eq!(back.to_string(), full.to_string());

        let own = Failure::new(
            "odd",
            "an odd thing".into(),
            crate::proto::Opened {
                host: "127.0.0.2".into(),
            },
        );
        let back = Failure::from_proto(own.to_proto());
        assert_eq!(back.code, "odd");
        assert_eq!(back.detail::<crate::proto::Opened>().host, "127.0.0.2");
        assert_eq!(back.to_string(), "an odd thing");
        assert!(
            Failure::from_proto(Failure::new("x", "é".repeat(5000), ()).to_proto())
                .message
                .len()
                < 4200
        );
    }
}
