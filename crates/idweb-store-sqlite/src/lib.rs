//! # idweb-store-sqlite
//!
//! The embedded default [`idweb::Store`]: sessions, token-cache partitions,
//! sign-out tombstones and logout-token replay records in one SQLite file.
//! For a single server, or several processes on one machine sharing the file;
//! servers on several machines need a distributed store.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use idweb_store_sqlite::SqliteStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Creates the file (and its tables) on first use.
//! let store = SqliteStore::from_url("sqlite://data/idweb.db").await?;
//! let shared: Arc<dyn idweb::Store> = Arc::new(store.clone());
//! // ... RelyingParty::builder(settings).with_store(shared) ...
//! # let _ = shared;
//!
//! // Expired sessions read as absent right away; purging reclaims their rows.
//! tokio::spawn(async move {
//!     loop {
//!         tokio::time::sleep(Duration::from_secs(600)).await;
//!         if let Err(e) = store.purge_expired().await {
//!             eprintln!("purge failed: {e}");
//!         }
//!     }
//! });
//! # Ok(())
//! # }
//! ```
//!
//! ## How it keeps the contract
//!
//! - Every write runs in one `BEGIN IMMEDIATE` transaction, which takes the
//!   database's write lock before reading anything. The check that a session
//!   is live and the partition write, the tombstone check and the session
//!   insert, the replay test and the replay record: each pair happens with no
//!   other writer in between, in this process or another one. An error or a
//!   dropped future rolls the transaction back.
//! - Writers of one [`SqliteStore`] (and its clones) queue in order before
//!   taking the lock; other processes on the same file wait up to the busy
//!   timeout (5 seconds), after which the operation fails with
//!   [`StoreError::Unavailable`].
//! - Token-cache entries are rows, inserted, replaced and deleted one by one;
//!   a partition is never rewritten as a whole. A session's partition and its
//!   entries are deleted with the session (by key and by foreign-key cascade).
//! - Expiry is decided by the [`Clock`] given at open, never by SQLite's time.
//!   An expired session reads as absent at once; reading it deletes it and its
//!   partition, and [`SqliteStore::purge_expired`] deletes the rest.
//! - Lookups by `(iss, sid)` and `(iss, sub)` use their own indexes: their cost
//!   follows the sessions of that user, not the size of the file.
//!
//! ## Durability: `synchronous = FULL`
//!
//! The database runs in WAL mode (readers never wait for the writer) with
//! `synchronous = FULL`: every committed transaction is flushed to stable
//! storage before the call returns. `NORMAL` would be faster (no flush per
//! commit), and is safe against a crash of the application, but a power cut
//! or an operating-system crash can then undo the last commits. Here one of
//! those commits can be a sign-out: the session and its tokens would come
//! back after the restart. A sign-out that was answered with success must
//! stay done, so this store pays one flush of the write-ahead log per write
//! (sign-ins, token refreshes and sign-outs are not frequent enough for it to
//! matter).
//!
//! ## Data at rest
//!
//! - The cache entries' `sealed` bytes are stored exactly as given: already
//!   encrypted by the token cache. The store adds no plaintext.
//! - Sessions are stored as JSON, which includes the ID token of the sign-in
//!   (it is sent back to the provider at sign-out) and the session id.
//! - A new database file is created readable and writable by its owner only
//!   (on Unix); SQLite gives its `-wal` and `-shm` files the same permissions.
//! - `secure_delete` is on: deleted rows are overwritten with zeros, so the
//!   tokens of a signed-out session do not linger in free pages of the file.
//!
//! ## Schema
//!
//! Versioned migrations are embedded in the crate and run at open, in one
//! `BEGIN IMMEDIATE` transaction, recording each version in `schema_version`.
//! A database with a newer schema than this build knows is refused with
//! [`StoreError::Corrupt`]. Tables: `sessions`, `partitions`, `entries`,
//! `tombstones`, `jtis`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod migrations;
mod sql;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idweb::{Clock, SessionId, StoreError, SystemClock};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use config::{SqliteConfig, SqliteUrlError};

use crate::error::{db_error, unavailable};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation waits for a free connection of the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections per file: readers run in parallel, writers take turns.
const MAX_CONNECTIONS: u32 = 8;

/// Rows deleted per transaction by [`SqliteStore::purge_expired`].
const PURGE_BATCH: i64 = 500;

/// An [`idweb::Store`] in a SQLite database. See the [crate documentation](crate).
///
/// Cloning is cheap: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    /// Writers of this pool queue here, in order, before taking the
    /// database's write lock, instead of retrying against each other.
    write_gate: Arc<Mutex<()>>,
}

/// A write transaction (`BEGIN IMMEDIATE`) with this store's turn to write.
/// Dropped without [`commit`](WriteTx::commit), it rolls back.
struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(db_error)
    }

    /// Rolls back; nothing was written.
    async fn abort(self) {
        if let Err(e) = self.tx.rollback().await {
            // The connection discards the transaction in any case.
            tracing::warn!(error = %e, "rolling back a refused write failed");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, runs migrations.
    /// Expiry follows the system clock.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be created or opened
    /// or the migrations fail; [`StoreError::Corrupt`] when its schema is
    /// newer than this build knows.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Arc::new(SystemClock)).await
    }

    /// Like [`open`](Self::open), with `clock` deciding expiry.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub async fn open_with_clock(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let to_create = path.clone();
        tokio::task::spawn_blocking(move || create_private_file(&to_create))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Self::ready(pool, clock).await
    }

    /// A store in a private in-memory database, gone when the store (and
    /// every clone) is dropped; for tests. All operations share one
    /// connection.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when SQLite cannot open it.
    pub async fn open_in_memory_with_clock(clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .pragma("secure_delete", "ON");
        // One connection that never closes by itself: the database lives as
        // long as that connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Self::ready(pool, clock).await
    }

    /// Parses `sqlite://PATH` (also `sqlite:PATH`) and opens that file with
    /// [`open`](Self::open). Relative paths are relative to the working
    /// directory; `sqlite:///var/lib/app/idweb.db` is absolute.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is not of that form (the
    /// message does not repeat the URL, which could hold credentials meant
    /// for another store), or as for [`open`](Self::open).
    pub async fn from_url(url: &str) -> Result<Self, StoreError> {
        Self::open(path_of_url(url)?).await
    }

    /// Deletes expired sessions (with their partitions and entries),
    /// tombstones and jti records; returns how many rows went. Works in
    /// batches, so other writers are never held up for long.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; batches already done stay done.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let batch = usize::try_from(PURGE_BATCH).unwrap_or(usize::MAX);
        let mut total = 0u64;
        loop {
            let mut w = self.begin_write().await?;
            let ids: Vec<String> = sqlx::query_scalar(sql::EXPIRED_SESSIONS)
                .bind(now)
                .bind(PURGE_BATCH)
                .fetch_all(&mut *w.tx)
                .await
                .map_err(db_error)?;
            for id in &ids {
                for statement in [
                    sql::ENTRIES_DELETE_OF_SESSION,
                    sql::PARTITIONS_DELETE_OF_SESSION,
                ] {
                    total += sqlx::query(statement)
                        .bind(id)
                        .execute(&mut *w.tx)
                        .await
                        .map_err(db_error)?
                        .rows_affected();
                }
                total += sqlx::query(sql::SESSION_DELETE_IF_EXPIRED)
                    .bind(id)
                    .bind(now)
                    .execute(&mut *w.tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
            }
            w.commit().await?;
            if ids.len() < batch {
                break;
            }
        }
        for statement in [sql::TOMBSTONES_PURGE, sql::JTIS_PURGE] {
            loop {
                let mut w = self.begin_write().await?;
                let n = sqlx::query(statement)
                    .bind(now)
                    .bind(PURGE_BATCH)
                    .execute(&mut *w.tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                w.commit().await?;
                total += n;
                if n < PURGE_BATCH.unsigned_abs() {
                    break;
                }
            }
        }
        tracing::debug!(rows = total, "purged expired rows");
        Ok(total)
    }

    /// Closes the store's connections, waiting for running operations; the
    /// last connection to close checkpoints the write-ahead log into the
    /// database file. Every clone is closed too: operations after this fail
    /// with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn ready(pool: SqlitePool, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        if let Err(e) = migrations::run(&pool, clock.unix_now()).await {
            pool.close().await;
            return Err(e);
        }
        Ok(Self {
            pool,
            clock,
            write_gate: Arc::new(Mutex::new(())),
        })
    }

    fn now(&self) -> i64 {
        self.clock.unix_now()
    }

    /// Waits for this store's turn to write, then takes the database's write
    /// lock (`BEGIN IMMEDIATE`, waiting up to the busy timeout for other
    /// processes).
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let turn = self.write_gate.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Deletes the session `id` (and, by cascade, its partition) if it has expired.
    async fn delete_if_expired(&self, id: &SessionId, now: i64) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(sql::SESSION_DELETE_IF_EXPIRED)
            .bind(id.secret())
            .bind(now)
            .execute(&mut *w.tx)
            .await
            .map_err(db_error)?;
        w.commit().await
    }
}

/// The file path of a `sqlite://PATH` or `sqlite:PATH` URL.
fn path_of_url(url: &str) -> Result<PathBuf, StoreError> {
    config::parse_path(url).map_err(unavailable)
}

/// Creates the database file, readable and writable by its owner only, if it
/// does not exist yet; SQLite creates its journal files with the same
/// permissions.
#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Elsewhere SQLite creates the file with the platform's default permissions.
#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_paths() {
        let ok = |url: &str| path_of_url(url).map_err(|e| e.to_string());
        assert_eq!(ok("sqlite://idweb.db"), Ok(PathBuf::from("idweb.db")));
        assert_eq!(ok("sqlite:idweb.db"), Ok(PathBuf::from("idweb.db")));
        assert_eq!(ok("SQLite://data/x.db"), Ok(PathBuf::from("data/x.db")));
        assert_eq!(
            ok("sqlite:///var/lib/idweb/idweb.db"),
            Ok(PathBuf::from("/var/lib/idweb/idweb.db"))
        );
        assert_eq!(ok("sqlite:/abs.db"), Ok(PathBuf::from("/abs.db")));
        for bad in [
            "",
            "sqlite://",
            "sqlite:",
            "sqlite::memory:",
            "sqlite://x.db?mode=rwc",
            "idweb.db",
            "redis://user:hunter2@host/0",
        ] {
            let err = path_of_url(bad).expect_err(bad);
            let shown = format!("{err} {:?}", std::error::Error::source(&err));
            assert!(matches!(err, StoreError::Unavailable(_)), "{bad}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    async fn pragma(store: &SqliteStore, name: &str) -> String {
        let row: (String,) = sqlx::query_as(match name {
            "journal_mode" => "SELECT CAST(journal_mode AS TEXT) FROM pragma_journal_mode",
            "synchronous" => "SELECT CAST(synchronous AS TEXT) FROM pragma_synchronous",
            "foreign_keys" => "SELECT CAST(foreign_keys AS TEXT) FROM pragma_foreign_keys",
            "secure_delete" => "SELECT CAST(secure_delete AS TEXT) FROM pragma_secure_delete",
            "busy_timeout" => "SELECT CAST(timeout AS TEXT) FROM pragma_busy_timeout",
            _ => "SELECT 'unknown'",
        })
        .fetch_one(&store.pool)
        .await
        .expect("pragma");
        row.0
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "idweb-sqlite-unit-{}-{}-{name}",
            std::process::id(),
            SessionId::generate().fingerprint()
        ))
    }

    fn remove_db(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }

    #[tokio::test]
    async fn file_settings_are_applied() {
        let path = temp_path("settings.db");
        let store = SqliteStore::open(&path).await.expect("open");
        assert_eq!(pragma(&store, "journal_mode").await, "wal");
        // 2 = FULL.
        assert_eq!(pragma(&store, "synchronous").await, "2");
        assert_eq!(pragma(&store, "foreign_keys").await, "1");
        assert_eq!(pragma(&store, "secure_delete").await, "1");
        assert_eq!(pragma(&store, "busy_timeout").await, "5000");
        store.close().await;
        remove_db(&path);
    }

    /// Every lookup is served by a key or an index: no statement reads a
    /// whole table, and none sorts.
    #[tokio::test]
    async fn statements_use_indexes() {
        let store = SqliteStore::open_in_memory_with_clock(Arc::new(SystemClock))
            .await
            .expect("open");
        for statement in sql::INDEXED {
            let explain = format!("EXPLAIN QUERY PLAN {statement}");
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
                .fetch_all(&store.pool)
                .await
                .unwrap_or_else(|e| panic!("{e}: {statement}"));
            let plan: Vec<String> = rows.into_iter().map(|r| r.3).collect();
            for step in &plan {
                // The first page of a listing walks the primary key in
                // order, stopping at the limit.
                let ordered_walk = statement == &sql::SESSIONS_LIST_FIRST
                    && step.starts_with("SCAN sessions USING INDEX sqlite_autoindex_sessions_1");
                let constant = step == "SCAN CONSTANT ROW";
                assert!(
                    !(step.starts_with("SCAN") && !ordered_walk && !constant),
                    "full scan in {statement}: {plan:?}"
                );
                assert!(
                    !step.contains("TEMP B-TREE"),
                    "sort in {statement}: {plan:?}"
                );
            }
        }
        let by_index = |statement: &'static str, index: &'static str| {
            let pool = store.pool.clone();
            async move {
                let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(
                    format!("EXPLAIN QUERY PLAN {statement}"),
                ))
                .fetch_all(&pool)
                .await
                .expect("plan");
                assert!(
                    rows.iter().any(|r| r.3.contains(index)),
                    "{statement} does not use {index}: {rows:?}"
                );
            }
        };
        by_index(sql::SESSIONS_BY_SID, "sessions_by_provider_session").await;
        by_index(sql::SESSIONS_BY_SUB, "sessions_by_subject").await;
        by_index(sql::EXPIRED_SESSIONS, "sessions_by_expiry").await;
        by_index(sql::PARTITIONS_DELETE_OF_SESSION, "partitions_by_session").await;
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let path = temp_path("newer.db");
        let store = SqliteStore::open(&path).await.expect("open");
        sqlx::query("INSERT INTO schema_version (version, description, applied_at) VALUES (?1, 'from the future', 0)")
            .bind(migrations::latest_version() + 1)
            .execute(&store.pool)
            .await
            .expect("insert");
        store.close().await;
        let r = SqliteStore::open(&path).await;
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
        remove_db(&path);
    }
}
