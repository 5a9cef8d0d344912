//! Versioned schema migrations, embedded in the binary and applied at open.
//!
//! Applied versions are recorded in `schema_version`. The check of the current
//! version and the migrations themselves run in one `BEGIN IMMEDIATE`
//! transaction, so two processes opening a new database at the same moment
//! apply each migration exactly once: the second waits for the first, then
//! finds nothing left to do.

use idweb::StoreError;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{corrupt, db_error};

/// One step of the schema.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// Every migration, in version order. Never edit a released one: add a new one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "sessions, partitions, entries, tombstones, jtis",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "locks",
        sql: include_str!("../migrations/0002_locks.sql"),
    },
    Migration {
        version: 3,
        description: "created_at and logged_out_at in microseconds",
        sql: include_str!("../migrations/0003_microsecond_times.sql"),
    },
];

/// The schema version this build reads and writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database to [`latest_version`]; refuses a database written by a
/// newer version. Files written by every earlier version of this store (on
/// sqlx or on rusqlite) carry the same `schema_version` table.
pub(crate) fn run(conn: &Connection, now: i64) -> Result<(), StoreError> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db_error)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version     INTEGER NOT NULL PRIMARY KEY,
             description TEXT    NOT NULL,
             applied_at  INTEGER NOT NULL
         ) STRICT",
    )
    .map_err(db_error)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    let latest = latest_version();
    if current > latest {
        return Err(corrupt(format!(
            "the database has schema version {current}, newer than version {latest} this build knows"
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.execute_batch(m.sql).map_err(db_error)?;
        tx.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.description, now],
        )
        .map_err(db_error)?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "applied a schema migration"
        );
    }
    tx.commit().map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.description);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
