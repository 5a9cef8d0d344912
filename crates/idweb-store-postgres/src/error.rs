//! Mapping failures to [`StoreError`].

use std::time::Duration;

use idweb::{BoxError, StoreError};

/// A failure talking to PostgreSQL, as this store reports it.
///
/// A database error keeps its SQLSTATE and primary message but not its
/// `DETAIL`, which can repeat a row's values (a session id is a bearer
/// credential). Every other driver error (I/O, a closed connection, the
/// protocol) is kept whole as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// PostgreSQL refused or failed a statement.
    #[error("PostgreSQL error {code}: {message}")]
    Database {
        /// The SQLSTATE (`57P01`: the connection was terminated by an administrator).
        code: String,
        /// PostgreSQL's primary message.
        message: String,
    },
    /// The connection failed, was closed, or could not be made.
    #[error("cannot reach PostgreSQL")]
    Connection(#[source] tokio_postgres::Error),
    /// No connection could be had (or the operation did not finish) in time.
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection pool failed for another reason.
    #[error("the PostgreSQL connection pool failed: {0}")]
    Pool(String),
    /// A statement answered something it never answers.
    #[error("unexpected reply from PostgreSQL: {0}")]
    UnexpectedReply(&'static str),
}

impl From<tokio_postgres::Error> for PostgresError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PostgresError::Database {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => PostgresError::Connection(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for PostgresError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) => PostgresError::Timeout(crate::POOL_WAIT),
            other => PostgresError::Pool(other.to_string()),
        }
    }
}

/// A failure of PostgreSQL or of the way to it.
pub(crate) fn unavailable(e: impl Into<PostgresError>) -> StoreError {
    StoreError::Unavailable(Box::new(e.into()))
}

/// Stored data that does not decode.
pub(crate) fn corrupt(e: impl Into<BoxError>) -> StoreError {
    StoreError::Corrupt(e.into())
}

/// A row whose columns are not what the schema promises.
pub(crate) fn bad_row(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(Box::new(e))
}
