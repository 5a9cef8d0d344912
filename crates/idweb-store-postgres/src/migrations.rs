//! Versioned schema migrations, embedded in the binary and applied at open.
//!
//! Applied versions are recorded in `schema_version` inside the store's
//! schema. The whole migration runs in one transaction that first takes an
//! advisory lock named after the schema, so that instances opening a new
//! database at the same moment apply each migration exactly once: the others
//! wait, then find nothing left to do. PostgreSQL's DDL is transactional, so
//! a migration that fails leaves the schema as it was.

use deadpool_postgres::Object;
use idweb::StoreError;

use crate::error::{corrupt, unavailable};

/// One step of the schema.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, in version order. Never edit a released one: add a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "sessions, partitions, entries, tombstones, jtis, locks",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "atomic sign-out",
        sql: include_str!("../migrations/0002_sign_out.sql"),
    },
    Migration {
        version: 3,
        description: "created_at and logged_out_at in microseconds",
        sql: include_str!("../migrations/0003_microsecond_times.sql"),
    },
    Migration {
        version: 4,
        description: "sign_out counts the entries it removes",
        sql: include_str!("../migrations/0004_sign_out_entries.sql"),
    },
];

/// The schema version this build reads and writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings `schema` to `target` (or the latest version); refuses a schema
/// written by a newer version. Returns the version it is at.
pub(crate) async fn run(
    client: &mut Object,
    schema: &str,
    target: Option<i64>,
    now: i64,
) -> Result<i64, StoreError> {
    // `schema` was checked by `PostgresConfig::with_schema`: lowercase
    // letters, digits and `_` only, so it is a plain identifier.
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('idweb schema migration ' || $1::text, 0))",
        &[&schema],
    )
    .await
    .map_err(unavailable)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_version (
             version     bigint NOT NULL PRIMARY KEY,
             description text   NOT NULL,
             applied_at  bigint NOT NULL
         );"
    ))
    .await
    .map_err(unavailable)?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM schema_version",
            &[],
        )
        .await
        .map_err(unavailable)?
        .try_get(0)
        .map_err(crate::error::bad_row)?;
    let latest = latest_version();
    if current > latest {
        return Err(corrupt(format!(
            "the PostgreSQL schema `{schema}` has version {current}, newer than version {latest} this build knows"
        )));
    }
    let target = target.unwrap_or(latest).min(latest);
    let mut at = current;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        tx.batch_execute(m.sql).await.map_err(unavailable)?;
        tx.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
            &[&m.version, &m.description, &now],
        )
        .await
        .map_err(unavailable)?;
        tracing::info!(
            schema,
            version = m.version,
            description = m.description,
            "applied a schema migration"
        );
        at = m.version;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(at)
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
