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
//! ## Connections and threads
//!
//! A store (and all its clones) has one **writer** connection on a thread of
//! its own, and a few **reader** connections.
//!
//! - **Reads** take an idle reader connection and run their one statement
//!   right where they are called: in WAL mode a reader never waits for the
//!   writer, so a point read (`get_session`, `partition_version`,
//!   `get_partition`, `find_sessions`, `get_tombstone`) costs the statement
//!   (a few microseconds), not a hop to another thread. The reads whose cost
//!   grows with the store (`session_count`, `list_sessions`, `stats`) run on
//!   tokio's blocking threads, as does a read that finds the file locked by
//!   another process recovering its log (it then waits up to the busy
//!   timeout there).
//! - **Writes** are queued to the writer thread, which commits them in
//!   groups (below).
//! - Every statement is prepared once per connection and cached.
//!
//! ## Group commit
//!
//! The writer takes the first waiting write, opens a `BEGIN IMMEDIATE`
//! transaction, applies that write and every other write already waiting
//! (at most 128), and commits once: one flush of the log for the whole
//! group. Writes that arrive while a group is being committed form the next
//! group. Under concurrent load (many sign-outs at once) the store thus
//! commits many writes per flush; a lone write costs one transaction, as
//! before.
//!
//! - **Each caller is answered only after the commit holding its write has
//!   returned**: an `Ok` is durable.
//! - Each write runs in its own savepoint. A write **refused** for a logical
//!   reason ([`StoreError::Conflict`], [`StoreError::SignedOut`] because of a
//!   tombstone or a removed session, a replayed jti answered `false`, a held
//!   lock answered `None`) or failing on its own is rolled back to its
//!   savepoint, and the other writes of the group go on.
//! - If the **commit fails** (I/O error, full disk), or SQLite rolls the whole
//!   transaction back after one write's error, **every caller of the group**
//!   gets [`StoreError::Unavailable`], refusals included (a refusal may have
//!   been decided on a write of the group that did not happen), and none of
//!   the group's writes is in the file.
//! - If the write lock cannot be taken within the busy timeout (another
//!   process holds it), the writes waiting for it fail with
//!   [`StoreError::Unavailable`] without being attempted.
//! - The writes of one group are applied in the order they were queued; a
//!   caller that awaits each write before the next sees its writes in
//!   order. Once queued, a write is carried out even if its caller stops
//!   waiting (drops the future).
//!
//! ## How it keeps the contract
//!
//! - Every check and the write it guards run inside the writer's
//!   `BEGIN IMMEDIATE` transaction, which holds the database's write lock
//!   from before the check: the check that a session is live and the
//!   partition write, the tombstone check and the session insert, the replay
//!   test and the replay record, the lock test and the lock record. No other
//!   writer comes in between, in this process or another one.
//! - A whole sign-out (`Store::sign_out`: replay check and record,
//!   tombstone, the removal of each selected session with its partition) is
//!   one operation of the writer: it commits in one transaction, shared
//!   with the other writes of its group, or not at all.
//! - `get_session` reads the session and checks its tombstones in one
//!   statement: a session a live tombstone covers is refused even while its
//!   rows are stored.
//! - Other processes on the same file wait up to the busy timeout (5
//!   seconds) for the write lock. A second [`SqliteStore`] on the same file
//!   sees every committed write on its next read: each read statement starts
//!   from the latest commit.
//! - Token-cache entries are rows, inserted, replaced and deleted one by one;
//!   a partition is never rewritten as a whole. A session's partition and its
//!   entries are deleted with the session (by key and by foreign-key cascade).
//! - Expiry is decided by the [`Clock`] given at open, never by SQLite's time.
//!   An expired session reads as absent at once; reading it deletes it and its
//!   partition, and [`SqliteStore::purge_expired`] deletes the rest.
//! - Lookups by `(iss, sid)` and `(iss, sub)` use their own indexes: their cost
//!   follows the sessions of that user, not the size of the file.
//!   [`Store::partition_version`](idweb::Store::partition_version) is one
//!   statement on primary keys.
//!
//! ## Durability: `synchronous = FULL`
//!
//! The database runs in WAL mode (readers never wait for the writer) with
//! `synchronous = FULL`: every committed transaction is flushed to stable
//! storage before its callers are answered. `NORMAL` would be faster (no
//! flush per commit), and is safe against a crash of the application, but a
//! power cut or an operating-system crash can then undo the last commits.
//! Here one of those commits can be a sign-out: the session and its tokens
//! would come back after the restart. A sign-out that was answered with
//! success must stay done, so this store pays one flush of the write-ahead
//! log per commit, and group commit shares that flush among the writes that
//! arrive together.
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
//! Files written by earlier versions of this store (including the first one,
//! built on sqlx) are opened as they are. A database with a newer schema than
//! this build knows is refused with [`StoreError::Corrupt`]. Tables:
//! `sessions`, `partitions`, `entries`, `tombstones`, `jtis`, `locks`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod migrations;
mod ops;
mod pool;
mod sql;
mod store;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idweb::{Clock, StoreError, SystemClock};
use rusqlite::{Connection, OpenFlags};

pub use config::{SqliteConfig, SqliteUrlError};

use crate::error::{db_error, unavailable};
use crate::pool::Readers;
use crate::writer::Writer;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows deleted per transaction by [`SqliteStore::purge_expired`].
const PURGE_BATCH: i64 = 500;

/// Prepared statements kept per connection (the store has about 40).
const STATEMENT_CACHE: usize = 64;

/// Reader connections per store: enough for every runtime thread to read at
/// once, plus reads running on blocking threads.
fn reader_count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get() + 2)
        .clamp(4, 16)
}

/// An [`idweb::Store`] in a SQLite database. See the [crate documentation](crate).
///
/// Cloning is cheap: clones share the connections and the writer.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for a database in memory: the writer's connection is the only one.
    readers: Option<Arc<Readers>>,
    writer: Writer,
    clock: Arc<dyn Clock>,
    /// The file, for `Debug`.
    path: Option<PathBuf>,
    /// Sessions decoded from their rows' JSON, by row text (see
    /// [`store::Decoded`]).
    decoded: store::Decoded,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("readers", &self.inner.readers)
            .finish_non_exhaustive()
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
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
        let now = clock.unix_now();
        let file = path.clone();
        let (writer, readers) = tokio::task::spawn_blocking(move || {
            create_private_file(&file).map_err(unavailable)?;
            // Openers of a new file at once: while one sets it up (WAL mode,
            // migrations), another's setup could fail with `SQLITE_BUSY`
            // although its busy timeout had not passed (seen under load in
            // the concurrent-openers test: some of SQLite's steps there do
            // not wait). The whole setup is tried again, for as long as the
            // busy timeout.
            let started = std::time::Instant::now();
            loop {
                let attempt = (|| {
                    let writer = connect(&file, Role::Writer)?;
                    migrations::run(&writer, now)?;
                    let readers = (0..reader_count())
                        .map(|_| connect(&file, Role::Reader))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok::<_, StoreError>((writer, readers))
                })();
                match attempt {
                    Err(e) if error::is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    other => break other,
                }
            }
        })
        .await
        .map_err(unavailable)??;
        Ok(Self {
            inner: Arc::new(Inner {
                readers: Some(Readers::new(readers)),
                writer: Writer::spawn(writer)?,
                clock,
                path: Some(path),
                decoded: store::Decoded::default(),
            }),
        })
    }

    /// A store in a private in-memory database, gone when the store (and
    /// every clone) is dropped; for tests. All operations share one
    /// connection, the writer's.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when SQLite cannot open it.
    pub async fn open_in_memory_with_clock(clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let now = clock.unix_now();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = Connection::open_in_memory().map_err(db_error)?;
            configure(&conn, Role::Writer, false)?;
            migrations::run(&conn, now)?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(unavailable)??;
        Ok(Self {
            inner: Arc::new(Inner {
                readers: None,
                writer: Writer::spawn(conn)?,
                clock,
                path: None,
                decoded: store::Decoded::default(),
            }),
        })
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
    /// batches of a few hundred rows, each committed with the other writes
    /// of its moment, so other writers are never held up for long.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; batches already done stay done.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let batch = usize::try_from(PURGE_BATCH).unwrap_or(usize::MAX);
        let mut total = 0u64;
        loop {
            let (rows, sessions) = self
                .write(move |conn| ops::purge_sessions(conn, now, PURGE_BATCH))
                .await?;
            total += rows;
            if sessions < batch {
                break;
            }
        }
        for statement in [sql::TOMBSTONES_PURGE, sql::JTIS_PURGE] {
            loop {
                let n = self
                    .write(move |conn| ops::purge_batch(conn, statement, now, PURGE_BATCH))
                    .await?;
                total += n;
                if n < PURGE_BATCH.unsigned_abs() {
                    break;
                }
            }
        }
        tracing::debug!(rows = total, "purged expired rows");
        Ok(total)
    }

    /// Closes the store's connections: waits for running reads, lets the
    /// writes already queued commit, then closes; the last connection to
    /// close checkpoints the write-ahead log into the database file. Every
    /// clone is closed too: operations after this fail with
    /// [`StoreError::Unavailable`].
    pub async fn close(&self) {
        if let Some(readers) = &self.inner.readers {
            readers.close().await;
        }
        self.inner.writer.close().await;
    }

    fn now(&self) -> i64 {
        self.inner.clock.unix_now()
    }

    /// Runs `f` in the writer's next transaction (see the crate docs on
    /// group commit).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(f).await
    }

    /// Runs `f`, one short indexed read, on a reader connection where it is
    /// called.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.inner.readers {
            Some(readers) => readers.read(BUSY_TIMEOUT, f).await,
            None => self.inner.writer.read(f).await,
        }
    }

    /// Runs `f`, a read whose cost grows with the store, on a reader
    /// connection on a blocking thread.
    async fn read_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.inner.readers {
            Some(readers) => readers.read_blocking(BUSY_TIMEOUT, f).await,
            None => self.inner.writer.read(f).await,
        }
    }
}

/// Opens a connection to the database file for `role`.
fn connect(path: &Path, role: Role) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if role == Role::Writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(db_error)?;
    configure(&conn, role, true)?;
    Ok(conn)
}

/// The settings of every connection (see the crate docs on durability).
fn configure(conn: &Connection, role: Role, file: bool) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if file {
        // Persistent in the file; the writer sets it, readers check it.
        let statement = match role {
            Role::Writer => "PRAGMA journal_mode = WAL",
            Role::Reader => "PRAGMA journal_mode",
        };
        let mode: String = conn
            .query_row(statement, [], |row| row.get(0))
            .map_err(db_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(unavailable(format!(
                "the database could not be put in WAL mode (it is in `{mode}` mode)"
            )));
        }
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )
    .map_err(db_error)?;
    if role == Role::Reader {
        // Reads on the caller's thread fail fast on a locked file and are
        // retried on a blocking thread (see `pool`); a reader never writes.
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(db_error)?;
        conn.busy_timeout(Duration::ZERO).map_err(db_error)?;
    }
    Ok(())
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

    /// A pragma's value on the writer connection or on a reader connection.
    async fn pragma(store: &SqliteStore, role: Role, name: &'static str) -> String {
        let statement = format!("SELECT CAST({name} AS TEXT) FROM pragma_{name}");
        let read = move |conn: &Connection| {
            let column = if name == "busy_timeout" {
                "timeout"
            } else {
                name
            };
            let statement = statement.replacen(name, column, 1);
            conn.query_row(&statement, [], |row| row.get::<_, String>(0))
                .map_err(db_error)
        };
        match role {
            Role::Writer => store.inner.writer.read(read).await,
            Role::Reader => store.read(read).await,
        }
        .expect("pragma")
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "idweb-sqlite-unit-{}-{}-{name}",
            std::process::id(),
            idweb::SessionId::generate().fingerprint()
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
        for role in [Role::Writer, Role::Reader] {
            assert_eq!(pragma(&store, role, "journal_mode").await, "wal");
            // 2 = FULL.
            assert_eq!(pragma(&store, role, "synchronous").await, "2");
            assert_eq!(pragma(&store, role, "foreign_keys").await, "1");
            assert_eq!(pragma(&store, role, "secure_delete").await, "1");
        }
        assert_eq!(pragma(&store, Role::Writer, "busy_timeout").await, "5000");
        assert_eq!(pragma(&store, Role::Writer, "query_only").await, "0");
        // Readers fail fast inline (and wait on a blocking thread instead).
        assert_eq!(pragma(&store, Role::Reader, "busy_timeout").await, "0");
        assert_eq!(pragma(&store, Role::Reader, "query_only").await, "1");
        store.close().await;
        remove_db(&path);
    }

    /// A database in memory with the schema, for query plans.
    fn schema() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        configure(&conn, Role::Writer, false).expect("configure");
        migrations::run(&conn, 0).expect("migrate");
        conn
    }

    fn plan(conn: &Connection, statement: &str) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {statement}");
        let mut st = conn
            .prepare(&explain)
            .unwrap_or_else(|e| panic!("{e}: {statement}"));
        let mut rows = st.raw_query();
        let mut plan = Vec::new();
        while let Some(row) = rows.next().expect("plan row") {
            plan.push(row.get::<_, String>(3).expect("detail"));
        }
        plan
    }

    /// Every lookup is served by a key or an index: no statement reads a
    /// whole table, and none sorts.
    #[test]
    fn statements_use_indexes() {
        let conn = schema();
        for statement in sql::INDEXED {
            let plan = plan(&conn, statement);
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
        let by_index = |statement: &str, index: &str| {
            let plan = plan(&conn, statement);
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{statement} does not use {index}: {plan:?}"
            );
        };
        by_index(sql::SESSIONS_BY_SID, "sessions_by_provider_session");
        by_index(sql::SESSIONS_BY_SUB, "sessions_by_subject");
        by_index(sql::EXPIRED_SESSIONS, "sessions_by_expiry");
        by_index(sql::PARTITIONS_DELETE_OF_SESSION, "partitions_by_session");
        // One row of `partitions` by its key, then a probe of each other
        // table by its key.
        let version = plan(&conn, sql::PARTITION_LIVE_VERSION);
        for index in [
            "sqlite_autoindex_partitions_1",
            "sqlite_autoindex_entries_1",
            "sqlite_autoindex_sessions_1",
        ] {
            assert!(
                version.iter().any(|step| step.contains(index)),
                "{version:?} does not use {index}"
            );
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let path = temp_path("newer.db");
        let store = SqliteStore::open(&path).await.expect("open");
        store.close().await;
        let conn = Connection::open(&path).expect("raw connection");
        conn.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, 'from the future', 0)",
            [migrations::latest_version() + 1],
        )
        .expect("insert");
        drop(conn);
        let r = SqliteStore::open(&path).await;
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
        remove_db(&path);
    }
}
