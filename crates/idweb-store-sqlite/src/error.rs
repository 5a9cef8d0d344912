//! Mapping backend failures to [`StoreError`].

use std::sync::Arc;

use idweb::{BoxError, StoreError};

/// A database error: [`StoreError::Corrupt`] when a row could not be decoded
/// into the types the schema promises, [`StoreError::Unavailable`] for
/// everything else (I/O, locks held past the busy timeout, a full disk, ...).
/// The [`rusqlite::Error`] is kept as the source.
pub(crate) fn db_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(Box::new(e)),
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

/// Whether `e` is SQLite's "the database is locked by another connection".
pub(crate) fn is_busy(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(source) => source
            .downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(|code| code == rusqlite::ErrorCode::DatabaseBusy),
        _ => false,
    }
}

/// The store was closed with [`SqliteStore::close`](crate::SqliteStore::close)
/// (or its writer stopped).
#[derive(Debug, thiserror::Error)]
#[error("the SQLite store is closed")]
pub(crate) struct Closed;

/// Why a write that was applied was not committed: every write of its
/// transaction gets this, with the database's error as the source.
#[derive(Debug, thiserror::Error)]
#[error("the transaction holding this write was not committed; none of its writes happened")]
pub(crate) struct NotCommitted {
    #[source]
    pub(crate) source: Arc<rusqlite::Error>,
}

/// The write lock could not be taken (another process held it past the busy
/// timeout, or the file could not be written): the write was not attempted.
#[derive(Debug, thiserror::Error)]
#[error("the database's write lock could not be taken; the write was not attempted")]
pub(crate) struct NotStarted {
    #[source]
    pub(crate) source: Arc<rusqlite::Error>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_are_corrupt_and_the_rest_unavailable() {
        assert!(matches!(
            db_error(rusqlite::Error::InvalidColumnName("data".into())),
            StoreError::Corrupt(_)
        ));
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let shown = busy.to_string();
        let e = db_error(busy);
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert!(is_busy(&e));
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source, Some(shown), "the rusqlite error is the source");
        assert!(!is_busy(&db_error(rusqlite::Error::QueryReturnedNoRows)));
        assert!(!is_busy(&StoreError::SignedOut));
    }

    #[test]
    fn a_failed_commit_keeps_its_cause() {
        let cause = Arc::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        let e = unavailable(NotCommitted {
            source: cause.clone(),
        });
        let first = std::error::Error::source(&e).expect("NotCommitted");
        let second = first.source().expect("the rusqlite error");
        assert_eq!(second.to_string(), cause.to_string());
    }
}
