//! Helpers shared by the integration tests: the shared Redis, key prefixes
//! that keep tests apart (and their keys deleted afterwards), and private
//! Redis servers that tests may stop and start.

#![allow(dead_code)]

pub mod scenarios;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idweb::{
    Clock, LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup,
    SignOutOutcome, SignOutRequest, Store, StoreError, StoreStats, StoredPartition, Tombstone,
};
use idweb_store_redis::RedisStore;

/// The Redis the tests share: `IDWEB_TEST_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("IDWEB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("idweb-test-{}", SessionId::generate().fingerprint())
}

/// A store on the shared Redis under a fresh prefix. Fails the test (never
/// skips it) when Redis cannot be reached.
pub async fn open(prefix: &str, clock: Arc<dyn Clock>) -> RedisStore {
    let url = redis_url();
    match RedisStore::open_with_prefix(&url, prefix, clock).await {
        Ok(store) => store,
        Err(e) => panic!(
            "these tests need a Redis server at {url} (set IDWEB_TEST_REDIS_URL to use another): {e} ({:?})",
            std::error::Error::source(&e).map(ToString::to_string)
        ),
    }
}

/// Deletes every key under `prefix` (never `KEYS`: a cursor walk).
pub fn delete_keys(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut con);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Every key under `prefix`.
pub fn keys_under(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).expect("url");
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .expect("scan");
        out.extend(keys);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// A store that deletes its prefix's keys when dropped (so that the
/// conformance tests leave nothing behind in the shared Redis).
#[derive(Debug)]
pub struct Cleaned {
    inner: Arc<dyn Store>,
    url: String,
    prefix: String,
}

impl Cleaned {
    pub fn wrap(inner: Arc<dyn Store>, url: String, prefix: String) -> Arc<dyn Store> {
        Arc::new(Self { inner, url, prefix })
    }
}

impl Drop for Cleaned {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        // A plain thread: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || delete_keys(&url, &prefix)).join();
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
    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        self.inner.is_jti_recorded(iss, jti).await
    }
    async fn sign_out(&self, r: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        self.inner.sign_out(r).await
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

/// A TCP port nothing listens on now (and, for cluster nodes, whose bus
/// port, ten thousand higher, is free too).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind a free port");
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair found");
}

/// Where private servers keep their (cluster) state files.
pub fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("idweb-store-redis");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A private `redis-server` child process on a loopback port, keeping
/// nothing on disk. Stopped when dropped, and by a watchdog should the test
/// process die first.
#[derive(Debug)]
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
}

impl RedisProcess {
    /// Starts a server on `port` and waits until it answers.
    pub fn start(port: u16, extra: &[String]) -> Self {
        let mut p = Self {
            child: None,
            port,
            extra: extra.to_vec(),
        };
        p.restart();
        p
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("these tests start their own redis-server, which failed: {e}")
            });
        watchdog(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
            if up.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the server `pid` once this test process is gone (a panic that
/// aborts, or statics, never run `Drop`).
fn watchdog(pid: u32) {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if [ \"$(cat /proc/{pid}/comm 2>/dev/null)\" = redis-server ]; then kill {pid}; fi"
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
