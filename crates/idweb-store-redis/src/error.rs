//! Mapping failures to [`StoreError`].

use std::time::Duration;

use idweb::{BoxError, StoreError};

/// Failures of this crate's own making (the rest are Redis's errors).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// An operation did not finish in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The URL given to `open` is not one this store understands.
    #[error("invalid Redis URL: {0}")]
    BadUrl(String),
    /// The key prefix cannot be used.
    #[error("invalid key prefix {0:?}: it must be non-empty and hold no '{{', '}}' or whitespace")]
    BadPrefix(String),
    /// A script answered something it never answers.
    #[error("unexpected reply from Redis: {0}")]
    UnexpectedReply(String),
    /// A session kept changing its index entries under a writer.
    #[error("the session changed concurrently too many times; try again")]
    Contended,
    /// A variant of a non-exhaustive idweb type this version does not know.
    #[error("unsupported {0}")]
    Unsupported(&'static str),
    /// The cache needs a Tokio runtime for its subscriber task.
    #[error("no Tokio runtime to run the invalidation subscriber on")]
    NoRuntime,
    /// No node to subscribe on.
    #[error("no Redis node to subscribe on")]
    NoNode,
    /// A background task failed.
    #[error("a background task failed: {0}")]
    Task(String),
}

/// A Redis failure, keeping it as the source.
pub(crate) fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// A failure that is not Redis's own error.
pub(crate) fn unavailable(e: impl Into<BoxError>) -> StoreError {
    StoreError::Unavailable(e.into())
}

/// Stored data that does not decode.
pub(crate) fn corrupt(e: impl Into<BoxError>) -> StoreError {
    StoreError::Corrupt(e.into())
}

/// An unexpected script reply.
pub(crate) fn unexpected(what: impl Into<String>) -> StoreError {
    unavailable(Error::UnexpectedReply(what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_errors_are_unavailable_and_keep_their_source() {
        let e = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        let shown = e.to_string();
        let mapped = redis_error(e);
        assert!(matches!(mapped, StoreError::Unavailable(_)));
        let source = std::error::Error::source(&mapped).map(ToString::to_string);
        assert_eq!(source, Some(shown));
    }
}
