//! Mapping backend failures to [`StoreError`].

use idweb::{BoxError, StoreError};

/// A database error: [`StoreError::Corrupt`] when a row could not be decoded
/// into the types the schema promises, [`StoreError::Unavailable`] for
/// everything else (I/O, locks held past the busy timeout, a closed pool, ...).
/// The source is kept.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(Box::new(e)),
        other => StoreError::Unavailable(Box::new(other)),
    }
}

/// Data that does not decode.
pub(crate) fn corrupt(e: impl Into<BoxError>) -> StoreError {
    StoreError::Corrupt(e.into())
}

/// A failure that is not the database's.
pub(crate) fn unavailable(e: impl Into<BoxError>) -> StoreError {
    StoreError::Unavailable(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_are_corrupt_and_the_rest_unavailable() {
        assert!(matches!(
            db_error(sqlx::Error::ColumnNotFound("data".into())),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            db_error(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        let e = db_error(sqlx::Error::PoolClosed);
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source, Some(sqlx::Error::PoolClosed.to_string()));
    }
}
