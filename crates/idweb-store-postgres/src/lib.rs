//! # idweb-store-postgres
//!
//! An [`idweb::Store`] on PostgreSQL, for apps that run on several servers
//! and already have a PostgreSQL database: sessions, token-cache partitions
//! (one row per cache entry), sign-out tombstones, logout-token replay
//! records and locks, in tables of their own schema.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use idweb_store_postgres::PostgresStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Creates the schema `idweb` (or migrates it) in the existing database.
//! let store = PostgresStore::open("postgres://app:secret@db.internal:5432/app").await?;
//! let shared: Arc<dyn idweb::Store> = Arc::new(store.clone());
//! // ... RelyingParty::builder(settings).with_store(shared) ...
//! # let _ = shared;
//!
//! // Expired rows read as absent right away; purging reclaims them.
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
//! With `IDWEB_STORE=postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`
//! (`postgresql://` too), `idweb-stores` (feature `postgres`) and
//! `idweb_axum::IdWeb::from_env` open it; see [`PostgresConfig`] for the
//! options.
//!
//! ## Connections
//!
//! A store (and all its clones) keeps a pool of up to 16 connections
//! (tokio-postgres, pooled by deadpool). Each statement is prepared once per
//! connection; afterwards **every operation is one statement, hence one
//! round trip**: a cache hit (`get_partition` or `partition_version`) is one
//! indexed read, and the writes that take several steps (`put_session`,
//! `write_partition`, `put_tombstone`, `Store::sign_out`) are
//! PL/pgSQL functions installed by the migrations, each running as one
//! transaction on the server. Connections are made in 3 s at most, a
//! connection waits at most 5 s for the pool, and every operation is bounded
//! by 5 s (60 s for `session_count`, `list_sessions`, `stats` and each purge
//! batch): while PostgreSQL is down or unreachable every call fails
//! promptly with [`StoreError::Unavailable`], and the same store works again
//! once it is back (broken connections are dropped and replaced), with no
//! new `open`.
//!
//! ## How it keeps the contract
//!
//! - **No resurrection by a late refresh.** `write_partition` on a session
//!   partition locks the session's row (`FOR SHARE`) while it checks that
//!   the session is live, compares the version and writes. A concurrent
//!   `remove_session` (a `DELETE` whose cascade takes the partition and its
//!   entries) either comes first, and the write finds no session
//!   ([`StoreError::SignedOut`]), or waits for the write and then removes
//!   what it wrote.
//! - **No sign-in past a sign-out.** `put_session` takes the selectors'
//!   advisory locks shared (transaction-scoped), then checks the tombstones,
//!   then writes; `put_tombstone` takes the selector's lock exclusively. A
//!   sign-in thus either sees the tombstone, or its session is committed
//!   before the tombstone is, and the sign-out's lookup (which follows the
//!   tombstone) finds and removes it.
//! - **Conditional writes** lock the partition's row (`FOR UPDATE`), compare
//!   its version and bump it; the first write of a new partition is an
//!   `INSERT ... ON CONFLICT` that decides on the committed row.
//! - **Replay records and locks** are single `INSERT ... ON CONFLICT DO
//!   UPDATE ... WHERE expired` statements: atomic test-and-set.
//! - **Lookups** by `(iss, sid)` and `(iss, sub)` use their own indexes; cost
//!   follows the user's sessions, not the table's size.
//! - **One atomic sign-out.** [`Store::sign_out`](idweb::Store::sign_out)
//!   checks and records the logout token's `jti`, records the tombstone and
//!   removes every selected session (with partitions and entries) in one
//!   transaction, or writes nothing (a replay, or `only_if_found` with no
//!   live session).
//! - **Signed-out sessions stay out.** `get_session` checks the session's
//!   live tombstones (`(iss, sid)`, and `(iss, sub)` of a sign-out not
//!   before its creation) in the same statement: a covered session is
//!   refused even while its rows remain.
//!
//! ## Expiry
//!
//! Expiry is decided by the [`Clock`] given at open, never by the server's
//! clock: every read compares with the clock's time, so expired rows are
//! never returned. [`PostgresStore::purge_expired`] deletes them in batches
//! of 500 rows (one short statement each, skipping rows another instance is
//! purging at the same moment).
//!
//! ## Data at rest
//!
//! Cache entries are stored as sealed by the token cache (already
//! encrypted). Sessions are stored as JSON, which includes the session id
//! and the sealed ID token. Errors carry PostgreSQL's SQLSTATE and message,
//! never its `DETAIL` (which can repeat row values). A sign-out is as
//! durable as the server's commit (`synchronous_commit`), and as replicated
//! as its standby setup: a failover to a lagging asynchronous standby can
//! bring back signed-out sessions.
//!
//! ## The in-process cache
//!
//! [`CachingStore`] (`idweb-l1`'s layer over this store) answers
//! `get_session`, `get_partition` and `partition_version` from process
//! memory, kept coherent across instances by `LISTEN/NOTIFY`:
//!
//! - every write carries its invalidation as a `pg_notify` **in the same
//!   statement**, hence the same transaction: a write that rolls back
//!   announces nothing, and one that commits is delivered to every
//!   connection listening at that moment, in commit order. The one-statement
//!   `sign_out` composes its invalidation in SQL from the sessions it
//!   removed (or "drop everything" when it would exceed the 8000-byte
//!   payload limit);
//! - each cache listens on `SCHEMA:invalidate` and its own
//!   `SCHEMA:ack:TOKEN` on a connection of its own, outside the pool,
//!   named `idweb listener SCHEMA` (`application_name`), and publishes its
//!   heartbeats and acknowledgements on it;
//! - **fail-closed**: while that connection is down (closed, terminated,
//!   unable to publish a heartbeat) or after any store failure, L1 is
//!   bypassed and emptied until the connection listens again; leases and
//!   acknowledged sign-outs work as on Redis (see `idweb-l1`).
//!
//! With `IDWEB_STORE_L1` (default `true`),
//! [`PostgresConfig::open_shared`] puts it in front. [`PostgresSignOutBus`]
//! carries sign-out events as notifications on `SCHEMA:signout`.
//!
//! ## Schema
//!
//! Versioned migrations run at open, in one transaction under an advisory
//! lock, recording each version in `schema_version`. A schema newer than
//! this build knows is refused with [`StoreError::Corrupt`]. Tables:
//! `sessions`, `partitions`, `entries`, `tombstones`, `jtis`, `locks`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod l1;
mod migrations;
mod signout_bus;
mod sql;
mod store;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use idweb::{Clock, StoreError, SystemClock};
use tokio_postgres::NoTls;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub use config::{DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, PostgresConfig, PostgresUrlError};
pub use error::PostgresError;
pub use idweb_l1::CacheOptions;
pub use l1::CachingStore;
pub use migrations::latest_version;
pub use signout_bus::PostgresSignOutBus;

use crate::error::unavailable;

/// How long one operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long operations whose cost grows with the store may take.
const LONG_OP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an operation waits for a connection of the pool.
pub(crate) const POOL_WAIT: Duration = Duration::from_secs(5);

/// How long opening (connecting and migrating) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Rows deleted per statement by [`PostgresStore::purge_expired`].
const PURGE_BATCH: i64 = 500;

/// An [`idweb::Store`] in a PostgreSQL database. See the [crate documentation](crate).
///
/// Cloning is cheap: clones share the connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    clock: Arc<dyn Clock>,
    /// For `Debug` (hides the password).
    config: PostgresConfig,
    schema_version: i64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("config", &self.inner.config)
            .field("schema_version", &self.inner.schema_version)
            .finish_non_exhaustive()
    }
}

/// Whether `e` says the connection itself is gone (rather than the
/// statement failing on a working connection).
fn connection_lost(e: &tokio_postgres::Error, closed: bool) -> bool {
    if closed || e.is_closed() {
        return true;
    }
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        // 57P0x: terminated by an administrator, crash or shutdown; 08: connection exception.
        code.starts_with("57P0") || code.starts_with("08")
    })
}

impl PostgresStore {
    /// Opens the store at `url` (see [`PostgresConfig`]) in the default
    /// schema, creating or migrating it; expiry follows the system clock.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for a URL this store refuses (the message
    /// does not repeat it), when PostgreSQL cannot be reached, or when the
    /// migration fails; [`StoreError::Corrupt`] when the schema is newer
    /// than this build knows.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config =
            PostgresConfig::parse(url).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Self::open_config(config, Arc::new(SystemClock)).await
    }

    pub(crate) async fn open_config(
        config: PostgresConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let mut pg = config.pg.clone();
        let search_path = format!("-c search_path={}", config.schema);
        let options = match pg.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {search_path}"),
            _ => search_path,
        };
        pg.options(options);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(Duration::from_secs(4)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| unavailable(PostgresError::Pool(e.to_string())))?;
        let now = clock.unix_now();
        let schema_version = tokio::time::timeout(OPEN_TIMEOUT, async {
            let mut client = pool.get().await.map_err(unavailable)?;
            migrations::run(&mut client, &config.schema, config.max_version, now).await
        })
        .await
        .map_err(|_| unavailable(PostgresError::Timeout(OPEN_TIMEOUT)))??;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                clock,
                config,
                schema_version,
            }),
        })
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        self.inner.config.schema()
    }

    /// The schema version this store migrated to at open.
    pub fn schema_version(&self) -> i64 {
        self.inner.schema_version
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.unix_now()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        match self.inner.clock.now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(_) => 0,
        }
    }

    /// Runs one prepared statement on a connection of the pool, within
    /// `limit`. A statement that only reads (`read_only`) and fails because
    /// its pooled connection turned out to be dead (killed, or the server
    /// restarted meanwhile) is run again on another connection, at most
    /// once per connection of the pool; a write is never repeated (it may
    /// have happened), its caller gets [`StoreError::Unavailable`].
    pub(crate) async fn query_within(
        &self,
        limit: Duration,
        statement: &'static str,
        params: &[&(dyn ToSql + Sync)],
        read_only: bool,
    ) -> Result<Vec<Row>, StoreError> {
        let attempts = if read_only {
            self.inner.config.pool_size + 1
        } else {
            1
        };
        let run = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let client = self.inner.pool.get().await.map_err(unavailable)?;
                let result = async {
                    let prepared = client.prepare_cached(statement).await?;
                    client.query(&prepared, params).await
                }
                .await;
                match result {
                    Ok(rows) => return Ok(rows),
                    Err(e) if attempt < attempts && connection_lost(&e, client.is_closed()) => {
                        tracing::debug!(error = %PostgresError::from(e), "a pooled connection was lost; reading again on another");
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            }
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| unavailable(PostgresError::Timeout(limit)))?
    }

    /// [`query_within`](Self::query_within) the usual operation time.
    pub(crate) async fn query(
        &self,
        statement: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.query_within(OP_TIMEOUT, statement, params, false)
            .await
    }

    /// [`query`](Self::query) for a statement that only reads.
    pub(crate) async fn read(
        &self,
        statement: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.query_within(OP_TIMEOUT, statement, params, true).await
    }

    /// The only row of a statement that always returns exactly one.
    pub(crate) async fn query_one(
        &self,
        statement: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        self.query(statement, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| unavailable(PostgresError::UnexpectedReply("no row")))
    }

    /// Deletes expired sessions (with their partitions and entries),
    /// tombstones, replay records and locks; returns how many rows of those
    /// tables went (entries and partitions deleted by cascade not counted).
    /// Works in statements of at most 500 rows each, so writers are never
    /// held up for long; rows another instance's purge holds are skipped.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; batches already done stay done.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let (now, now_ms) = (self.now(), self.now_ms());
        let mut total = 0u64;
        for (statement, at) in [
            (sql::PURGE_SESSIONS, now),
            (sql::PURGE_TOMBSTONES, now),
            (sql::PURGE_JTIS, now),
            (sql::PURGE_LOCKS, now_ms),
        ] {
            loop {
                let n = self
                    .execute_within(LONG_OP_TIMEOUT, statement, &[&at, &PURGE_BATCH])
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

    async fn execute_within(
        &self,
        limit: Duration,
        statement: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let run = async {
            let client = self.inner.pool.get().await.map_err(unavailable)?;
            let prepared = client
                .prepare_cached(statement)
                .await
                .map_err(unavailable)?;
            client.execute(&prepared, params).await.map_err(unavailable)
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| unavailable(PostgresError::Timeout(limit)))?
    }

    /// Connections open now and idle now (for tests and diagnostics).
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.inner.pool.status();
        (s.size, s.available)
    }
}
