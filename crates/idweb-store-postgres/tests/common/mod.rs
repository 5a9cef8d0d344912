//! Shared code of the integration tests: the shared PostgreSQL, a schema
//! (or a database) per test, dropped afterwards, and an admin connection.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idweb::{
    Clock, LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup, Store,
    StoreError, StoreStats, StoredPartition, Tombstone,
};
use idweb_store_postgres::{PostgresConfig, PostgresStore};

/// The PostgreSQL server the tests share: `IDWEB_TEST_POSTGRES_URL` (a URL
/// of an existing database the user may create schemas and databases in),
/// or the local default.
pub fn server_url() -> String {
    std::env::var("IDWEB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The same server, database `db`.
pub fn url_of_database(db: &str) -> String {
    let base = server_url();
    let (head, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{head}/{db}")
}

/// A schema (or database) name no other test uses.
pub fn unique_name(what: &str) -> String {
    format!(
        "idweb_test_{what}_{}",
        SessionId::generate().fingerprint().to_ascii_lowercase()
    )
}

/// A store on the shared server in `schema`. Fails the test (never skips
/// it) when PostgreSQL cannot be reached.
pub async fn open(schema: &str, clock: Arc<dyn Clock>) -> PostgresStore {
    open_url(&server_url(), schema, clock).await
}

pub async fn open_url(url: &str, schema: &str, clock: Arc<dyn Clock>) -> PostgresStore {
    let config = PostgresConfig::parse(url)
        .expect("test URL")
        .with_schema(schema)
        .expect("schema name");
    match config.open(clock).await {
        Ok(store) => store,
        Err(e) => panic!(
            "these tests need PostgreSQL at {url} (set IDWEB_TEST_POSTGRES_URL to use another): {e} ({:?})",
            std::error::Error::source(&e).map(ToString::to_string)
        ),
    }
}

/// A plain connection for the test's own statements.
pub async fn admin_at(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub async fn admin() -> tokio_postgres::Client {
    admin_at(&server_url()).await
}

/// Runs `sql` on a connection of its own, from a plain thread (usable from
/// `Drop`, inside or outside a runtime).
pub fn run_detached(url: String, sql: String) {
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(Ok((client, conn))) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(&url, tokio_postgres::NoTls),
            )
            .await
            else {
                return;
            };
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let _ = tokio::time::timeout(Duration::from_secs(30), client.batch_execute(&sql)).await;
        });
    })
    .join();
}

/// Drops a schema when the test ends, however it ends.
pub struct DropSchema(pub String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        run_detached(
            server_url(),
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
        );
    }
}

/// A database of the test's own, dropped (with its connections) at the end.
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = unique_name("db");
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        Self { name }
    }

    pub fn url(&self) -> String {
        url_of_database(&self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        run_detached(
            server_url(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A store that drops its schema when dropped (so that the conformance
/// tests leave nothing behind on the shared server).
#[derive(Debug)]
pub struct Cleaned {
    inner: Arc<dyn Store>,
    schema: String,
}

impl Cleaned {
    pub fn wrap(inner: Arc<dyn Store>, schema: String) -> Arc<dyn Store> {
        Arc::new(Self { inner, schema })
    }
}

impl Drop for Cleaned {
    fn drop(&mut self) {
        run_detached(
            server_url(),
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
        );
    }
}

#[async_trait]
impl Store for Cleaned {
    async fn put_session(&self, s: &Session) -> Result<(), StoreError> {
        self.inner.put_session(s).await
    }
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.get_session(id).await
    }
    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.remove_session(id).await
    }
    async fn find_sessions(&self, l: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        self.inner.find_sessions(l).await
    }
    async fn session_count(&self) -> Result<u64, StoreError> {
        self.inner.session_count().await
    }
    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.inner.list_sessions(after, limit).await
    }
    async fn get_partition(&self, k: &PartitionKey) -> Result<Option<StoredPartition>, StoreError> {
        self.inner.get_partition(k).await
    }
    async fn partition_version(&self, k: &PartitionKey) -> Result<Option<u64>, StoreError> {
        self.inner.partition_version(k).await
    }
    async fn write_partition(
        &self,
        k: &PartitionKey,
        w: PartitionWrite,
    ) -> Result<u64, StoreError> {
        self.inner.write_partition(k, w).await
    }
    async fn remove_partition(&self, k: &PartitionKey) -> Result<bool, StoreError> {
        self.inner.remove_partition(k).await
    }
    async fn put_tombstone(&self, t: &Tombstone) -> Result<(), StoreError> {
        self.inner.put_tombstone(t).await
    }
    async fn get_tombstone(&self, s: &SessionLookup) -> Result<Option<Tombstone>, StoreError> {
        self.inner.get_tombstone(s).await
    }
    async fn record_jti(&self, iss: &str, jti: &str, exp: i64) -> Result<bool, StoreError> {
        self.inner.record_jti(iss, jti, exp).await
    }
    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.inner.forget_jti(iss, jti).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.inner.try_lock(name, ttl).await
    }
    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        self.inner.unlock(name, token).await
    }
}
