//! One error type over the layers the SDK calls.

/// What went wrong, from whichever layer: each variant keeps the layer's typed error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store (namenode, datanodes, configuration).
    #[error(transparent)]
    Store(#[from] crail_store::Error),
    /// The shuffle service.
    #[error(transparent)]
    Shuffle(#[from] crail_shuffle::Error),
    /// The broadcast service.
    #[error(transparent)]
    Broadcast(#[from] crail_broadcast::Error),
    /// Records: an unknown serializer or sorter, a malformed or truncated record.
    #[error(transparent)]
    Records(#[from] crail_serializers::Error),
}

/// The SDK's result.
pub type Result<T> = std::result::Result<T, Error>;

/// What kind of failure an [`Error`] is, whichever layer raised it: for bindings that map
/// errors onto their own types (Python exceptions, Java exceptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such path, shuffle or variable.
    NotFound,
    /// It exists already (or another attempt committed first).
    AlreadyExists,
    /// The store has no room left.
    StoreFull,
    /// Stored data could not be read (a node died): its writers must run again.
    FetchFailed,
    /// A bad name, range, record or setting.
    InvalidArgument,
    /// A store peer (namenode, datanode) did not answer.
    Unreachable,
    /// The engine's node (its shuffle or broadcast service) is gone or unreachable: another
    /// node can serve.
    NodeLost,
    /// Anything else.
    Other,
}

impl Error {
    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        use crail_broadcast::Error as B;
        use crail_shuffle::Error as S;
        use crail_store::Error as T;
        match self {
            Self::Store(s) | Self::Shuffle(S::Store(s)) | Self::Broadcast(B::Store(s)) => match s {
                T::NotFound { .. } | T::UnknownFile { .. } => ErrorKind::NotFound,
                T::AlreadyExists { .. } => ErrorKind::AlreadyExists,
                // No room: in the store, or in the application's quota.
                T::StoreFull { .. } | T::QuotaExceeded { .. } => ErrorKind::StoreFull,
                // Data that is gone: lost with its datanode, corrupt, its block given to
                // another file since (fenced), or never written.
                T::LostBlocks { .. }
                | T::ChecksumMismatch { .. }
                | T::Fenced { .. }
                | T::Unwritten { .. } => ErrorKind::FetchFailed,
                T::InvalidPath { .. } | T::WrongType { .. } | T::NotAContainer { .. } => {
                    ErrorKind::InvalidArgument
                }
                T::Connect { .. }
                | T::ConnectionLost { .. }
                | T::Timeout { .. }
                | T::Recovering { .. } => ErrorKind::Unreachable,
                _ => ErrorKind::Other,
            },
            Self::Shuffle(S::UnknownShuffle { .. })
            | Self::Broadcast(B::UnknownVariable { .. }) => ErrorKind::NotFound,
            Self::Shuffle(
                S::AlreadyRegistered { .. } | S::AlreadyCommitted { .. } | S::Superseded { .. },
            )
            | Self::Broadcast(B::AlreadyExists { .. }) => ErrorKind::AlreadyExists,
            Self::Broadcast(B::StoreFull { .. }) => ErrorKind::StoreFull,
            Self::Shuffle(S::FetchFailed { .. }) | Self::Broadcast(B::Unreadable { .. }) => {
                ErrorKind::FetchFailed
            }
            Self::Shuffle(
                S::Invalid { .. }
                | S::PartitionOutOfRange { .. }
                | S::MapOutOfRange { .. }
                | S::Window { .. },
            )
            | Self::Broadcast(B::Invalid { .. })
            | Self::Records(_) => ErrorKind::InvalidArgument,
            // Only a service that cannot be reached or whose connection broke is a lost node; a
            // refused handshake (a wrong secret) is not, and a request it failed arrives as
            // its own typed error (a full store as the store's StoreFull).
            Self::Shuffle(S::Service(e)) | Self::Broadcast(B::Service(e)) if e.is_lost() => {
                ErrorKind::NodeLost
            }
            _ => ErrorKind::Other,
        }
    }

    /// For a fetch failure of a shuffle: the maps whose output was lost, ascending.
    pub fn lost_maps(&self) -> &[u32] {
        match self {
            Self::Shuffle(crail_shuffle::Error::FetchFailed { maps, .. }) => maps,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_that_is_gone_is_a_fetch_failure_and_a_refusal_is_not() {
        let gone = [
            crail_store::Error::Fenced {
                offset: 0,
                generation: 1,
                current: 2,
            },
            crail_store::Error::Unwritten {
                location: "dram tier".into(),
                offset: 0,
            },
        ];
        for e in gone {
            assert_eq!(Error::Store(e).kind(), ErrorKind::FetchFailed);
        }
        let refused = crail_store::Error::GrantRefused {
            offset: 0,
            reason: "forged".into(),
        };
        assert_eq!(Error::Store(refused).kind(), ErrorKind::Other);
    }
}
