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
