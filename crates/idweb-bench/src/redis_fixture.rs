//! Fixtures for `benches/redis.rs`: relying parties over a [`RedisStore`]
//! and a [`CachingStore`] holding a chosen number of sessions, filled
//! concurrently; a relay that counts the Redis round trips of a store
//! ([`CountingProxy`]); and [`RedisAdmin`], which reads Redis's memory use
//! and deletes every key of the run at the end.
//!
//! Every key lives under a prefix made of `idweb-bench-`, a random word
//! drawn once per run, and the size of the store, so that runs, and the
//! stores of one run, never meet, and the run can delete exactly its own
//! keys.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use idweb::{
    BoxError, PartitionKey, RelyingParty, Session, SessionId, Settings, SignOut, SignOutSelector,
    Store, StoreError, SystemClock,
};
use idweb_store_redis::{CachingStore, RedisStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::{access_token, new_session, relying_party_with, user_entries};

/// Store writes in flight at once while filling a store.
pub const IN_FLIGHT: usize = 64;

/// How long the eviction's tombstones last (the relying party's default:
/// the session lifetime, plus clock skew, plus an hour).
const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(12 * 3600 + 300 + 3600);

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sessions between two progress reports (and memory checks) while filling.
const REPORT_EVERY: usize = 50_000;

/// Tries of one session's writes while filling, before giving up.
const WRITE_TRIES: usize = 3;

/// Keys asked for per `SCAN` call, and so at most deleted per `UNLINK`.
const SCAN_COUNT: usize = 1_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Redis's own memory figures (`INFO memory`), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisMemory {
    /// `used_memory`: what Redis's allocator holds for data and overhead.
    pub used: u64,
    /// `used_memory_rss`: the process's resident memory.
    pub rss: u64,
    /// `used_memory_peak`: the highest `used` since Redis started.
    pub peak: u64,
}

impl RedisMemory {
    fn parse(info: &str) -> Self {
        let mut m = Self::default();
        for line in info.lines() {
            let Some((k, v)) = line.trim().split_once(':') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "used_memory" => m.used = v,
                "used_memory_rss" => m.rss = v,
                "used_memory_peak" => m.peak = v,
                _ => {}
            }
        }
        m
    }
}

/// What Redis did, by all its clients (`INFO cpu`, `stats`, `clients`,
/// `commandstats`), read at one moment: the difference of two readings
/// ([`RedisActivity::since`]) shows how busy Redis was meanwhile, and with
/// what.
#[derive(Debug, Clone)]
pub struct RedisActivity {
    at: Instant,
    /// Seconds of CPU Redis used (system and user).
    cpu: f64,
    /// Commands processed, scripts' inner commands included.
    commands: u64,
    /// Clients connected.
    clients: u64,
    /// Calls and microseconds spent, by command.
    by_command: BTreeMap<String, (u64, u64)>,
}

impl RedisActivity {
    fn parse(info: &str) -> Self {
        let mut a = Self {
            at: Instant::now(),
            cpu: 0.0,
            commands: 0,
            clients: 0,
            by_command: BTreeMap::new(),
        };
        for line in info.lines() {
            let Some((k, v)) = line.trim().split_once(':') else {
                continue;
            };
            match k {
                "used_cpu_sys" | "used_cpu_user" => a.cpu += v.parse::<f64>().unwrap_or(0.0),
                "total_commands_processed" => a.commands = v.parse().unwrap_or(0),
                "connected_clients" => a.clients = v.parse().unwrap_or(0),
                _ => {
                    let Some(name) = k.strip_prefix("cmdstat_") else {
                        continue;
                    };
                    let field = |f: &str| {
                        v.split(',')
                            .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                            .and_then(|n| n.parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    a.by_command
                        .insert(name.to_string(), (field("calls"), field("usec")));
                }
            }
        }
        a
    }

    /// One line: wall time since `before`, Redis's CPU use and commands
    /// meanwhile, and the commands that took most of its time.
    pub fn since(&self, before: &RedisActivity) -> String {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        let cpu = self.cpu - before.cpu;
        let mut top: Vec<(String, u64, u64)> = self
            .by_command
            .iter()
            .map(|(name, (calls, usec))| {
                let (c0, u0) = before.by_command.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    calls.saturating_sub(c0),
                    usec.saturating_sub(u0),
                )
            })
            .filter(|(_, calls, _)| *calls > 0)
            .collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.2));
        let top: Vec<String> = top
            .iter()
            .take(5)
            .map(|(name, calls, usec)| {
                format!(
                    "{name} {:.1} s in {calls} calls ({:.1} us each)",
                    *usec as f64 / 1e6,
                    *usec as f64 / (*calls).max(1) as f64
                )
            })
            .collect();
        format!(
            "{wall:.0} s: Redis used {cpu:.1} s of CPU ({:.0}%), processed {} commands, has {} clients; most time in: {}",
            100.0 * cpu / wall.max(1e-9),
            self.commands.saturating_sub(before.commands),
            self.clients,
            top.join("; ")
        )
    }
}

/// Mebibytes, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The benchmark's own connection to Redis: memory figures, and the deletion
/// of every key of this run (by prefix, with `SCAN` and `UNLINK`), at the
/// latest when it is dropped.
pub struct RedisAdmin {
    client: redis::Client,
    addr: String,
    base_prefix: String,
    deleted: AtomicBool,
}

impl fmt::Debug for RedisAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdmin")
            .field("addr", &self.addr)
            .field("base_prefix", &self.base_prefix)
            .finish()
    }
}

impl RedisAdmin {
    /// Connects to the Redis at `addr` (`HOST:PORT`, no password) and draws
    /// this run's prefix.
    ///
    /// # Errors
    /// Redis does not answer a `PING` within a few seconds.
    pub async fn connect(addr: &str) -> Result<Self, BoxError> {
        let client = redis::Client::open(format!("redis://{addr}"))?;
        let ping = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, ping)
            .await
            .map_err(|_| format!("Redis at {addr} did not answer within {CONNECT_TIMEOUT:?}"))??;
        Ok(Self {
            client,
            addr: addr.to_string(),
            base_prefix: format!("idweb-bench-{}", SessionId::generate().fingerprint()),
            deleted: AtomicBool::new(false),
        })
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The store URL of this Redis.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The prefix shared by every key of this run.
    pub fn base_prefix(&self) -> &str {
        &self.base_prefix
    }

    /// The key prefix of one store of this run.
    pub fn prefix(&self, label: &str) -> String {
        format!("{}.{label}", self.base_prefix)
    }

    /// Redis's memory figures now.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn memory(&self) -> Result<RedisMemory, BoxError> {
        let mut c = self.client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
        Ok(RedisMemory::parse(&info))
    }

    /// What Redis has done so far, by all its clients.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn activity(&self) -> Result<RedisActivity, BoxError> {
        let mut c = self.client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("stats")
            .arg("clients")
            .arg("commandstats")
            .query_async(&mut c)
            .await?;
        Ok(RedisActivity::parse(&info))
    }

    /// Deletes every key of this run: `SCAN MATCH PREFIX.*` in steps of
    /// `SCAN_COUNT`, each step's keys with one `UNLINK` (freed by Redis in
    /// the background), then a last `SCAN` to check that none is left.
    /// Returns the number of keys deleted. Blocking (usable in `Drop`).
    ///
    /// # Errors
    /// Redis does not answer, or keys are left.
    pub fn delete_keys(&self) -> Result<u64, BoxError> {
        self.deleted.store(true, Ordering::SeqCst);
        let mut con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(Duration::from_secs(30)))?;
        let pattern = format!("{}.*", self.base_prefix);
        let scan = |con: &mut redis::Connection, cursor: u64| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query::<(u64, Vec<Vec<u8>>)>(con)
        };
        let mut deleted = 0u64;
        // A key missed by one pass (SCAN may miss keys created meanwhile)
        // is caught by the next one.
        for _ in 0..3 {
            let mut cursor = 0u64;
            let mut seen = 0u64;
            loop {
                let (next, keys) = scan(&mut con, cursor)?;
                if !keys.is_empty() {
                    seen += keys.len() as u64;
                    deleted += redis::cmd("UNLINK").arg(&keys).query::<u64>(&mut con)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            if seen == 0 {
                return Ok(deleted);
            }
        }
        Err(format!("keys under {pattern} are left after three passes").into())
    }
}

impl Drop for RedisAdmin {
    fn drop(&mut self) {
        if !self.deleted.load(Ordering::SeqCst)
            && let Err(e) = self.delete_keys()
        {
            eprintln!(
                "could not delete the keys under {}.*: {e}",
                self.base_prefix
            );
        }
    }
}

/// What one relayed connection carried from the store to Redis.
#[derive(Debug, Default)]
struct ConnStats {
    /// Set once the connection sent `SUBSCRIBE`: the invalidation
    /// subscription of a [`CachingStore`], not a data connection.
    subscriber: AtomicBool,
    /// Whether the last bytes went from the store to Redis.
    store_turn: AtomicBool,
    /// Bursts of requests: each time the store sends after Redis answered.
    round_trips: AtomicU64,
    commands: Mutex<BTreeMap<String, u64>>,
}

/// Requests that went from stores to Redis through a [`CountingProxy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Times a store sent requests after having received a reply (or
    /// first): for one caller awaiting each call, its round trips. Commands
    /// pipelined together count once.
    pub round_trips: u64,
    /// Commands, by name.
    pub commands: BTreeMap<String, u64>,
}

impl Traffic {
    /// What happened after `before`.
    pub fn since(&self, before: &Traffic) -> Traffic {
        let mut commands = BTreeMap::new();
        for (name, n) in &self.commands {
            let d = n.saturating_sub(before.commands.get(name).copied().unwrap_or(0));
            if d > 0 {
                commands.insert(name.clone(), d);
            }
        }
        Traffic {
            round_trips: self.round_trips.saturating_sub(before.round_trips),
            commands,
        }
    }

    /// Adds `other` to this.
    pub fn add(&mut self, other: &Traffic) {
        self.round_trips += other.round_trips;
        for (name, n) in &other.commands {
            *self.commands.entry(name.clone()).or_default() += n;
        }
    }

    /// Commands in all.
    pub fn command_count(&self) -> u64 {
        self.commands.values().sum()
    }

    /// `round trips, commands (NAME n, ...)`, each divided by `per`.
    pub fn per(&self, per: u64) -> String {
        let per = per.max(1) as f64;
        let names: Vec<String> = self
            .commands
            .iter()
            .map(|(name, n)| format!("{name} {:.2}", *n as f64 / per))
            .collect();
        format!(
            "{:.2} round trips, {:.2} commands ({})",
            self.round_trips as f64 / per,
            self.command_count() as f64 / per,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    }
}

/// A TCP relay in front of Redis that counts, per connection, the commands
/// a store sends and its round trips. Stores opened on
/// `redis://ADDR` (its [`addr`](Self::addr)) reach the real Redis through it.
/// It adds latency, so it is used to count, never to time.
#[derive(Debug)]
pub struct CountingProxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<ConnStats>>>>,
    accept: JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        // Also ends every relayed connection (their tasks belong to it).
        self.accept.abort();
    }
}

impl CountingProxy {
    /// Listens on a free port of `127.0.0.1` and relays to `upstream`
    /// (`HOST:PORT`).
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<Vec<Arc<ConnStats>>>> = Arc::default();
        let upstream = upstream.to_string();
        let registry = conns.clone();
        let accept = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let stats = Arc::new(ConnStats::default());
                lock(&registry).push(stats.clone());
                relays.spawn(relay(client, server, stats));
            }
        });
        Ok(Self {
            addr,
            conns,
            accept,
        })
    }

    /// Where stores connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The traffic of every data connection so far (invalidation
    /// subscriptions, with their pings, are left out).
    pub fn traffic(&self) -> Traffic {
        let mut t = Traffic::default();
        for c in lock(&self.conns)
            .iter()
            .filter(|c| !c.subscriber.load(Ordering::SeqCst))
        {
            t.round_trips += c.round_trips.load(Ordering::SeqCst);
            for (name, n) in lock(&c.commands).iter() {
                *t.commands.entry(name.clone()).or_default() += n;
            }
        }
        t
    }
}

async fn relay(client: TcpStream, server: TcpStream, stats: Arc<ConnStats>) {
    let (mut from_store, mut to_store) = client.into_split();
    let (mut from_redis, mut to_redis) = server.into_split();
    let up = {
        let stats = stats.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let n = match from_store.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if !stats.store_turn.swap(true, Ordering::SeqCst) {
                    stats.round_trips.fetch_add(1, Ordering::SeqCst);
                }
                // Counted before being passed on: once the store has its
                // reply, its commands are in the figures.
                pending.extend_from_slice(&buf[..n]);
                let (names, used) = command_names(&pending);
                pending.drain(..used);
                {
                    let mut commands = lock(&stats.commands);
                    for name in names {
                        if name == "SUBSCRIBE" {
                            stats.subscriber.store(true, Ordering::SeqCst);
                        }
                        *commands.entry(name).or_default() += 1;
                    }
                }
                if to_redis.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = to_redis.shutdown().await;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_redis.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            stats.store_turn.store(false, Ordering::SeqCst);
            if to_store.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_store.shutdown().await;
    };
    tokio::join!(up, down);
}

/// The names (upper case) of the complete commands at the start of `buf`, a
/// client's byte stream in RESP (arrays of bulk strings, or inline
/// commands), and how many bytes they take. Bytes that do not parse count
/// as one command `?` and are consumed.
fn command_names(buf: &[u8]) -> (Vec<String>, usize) {
    fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
        let rest = buf.get(from..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..end], from + end + 2))
    }
    fn number(bytes: &[u8]) -> Option<usize> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
    enum Parsed {
        Command(String, usize),
        Incomplete,
        Bad,
    }
    fn one(buf: &[u8]) -> Parsed {
        if buf.first() != Some(&b'*') {
            return match line(buf, 0) {
                Some((text, end)) => {
                    let name = String::from_utf8_lossy(text)
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_uppercase();
                    Parsed::Command(name, end)
                }
                None => Parsed::Incomplete,
            };
        }
        let Some((count, mut pos)) = line(buf, 1) else {
            return Parsed::Incomplete;
        };
        let Some(count) = number(count) else {
            return Parsed::Bad;
        };
        let mut name = String::new();
        for i in 0..count {
            match buf.get(pos) {
                None => return Parsed::Incomplete,
                Some(b'$') => {}
                Some(_) => return Parsed::Bad,
            }
            let Some((len, start)) = line(buf, pos + 1) else {
                return Parsed::Incomplete;
            };
            let Some(len) = number(len) else {
                return Parsed::Bad;
            };
            let end = start + len + 2;
            if buf.len() < end {
                return Parsed::Incomplete;
            }
            if i == 0 {
                name = String::from_utf8_lossy(&buf[start..start + len]).to_ascii_uppercase();
            }
            pos = end;
        }
        Parsed::Command(name, pos)
    }
    let (mut names, mut used) = (Vec::new(), 0);
    while used < buf.len() {
        match one(&buf[used..]) {
            Parsed::Command(name, n) => {
                names.push(name);
                used += n;
            }
            Parsed::Incomplete => break,
            Parsed::Bad => {
                names.push("?".to_string());
                used = buf.len();
            }
        }
    }
    (names, used)
}

/// Puts a new session of `sub` into `rp`'s store, with the three entries a
/// sign-in leaves in its partition (written through `rp`'s token cache).
///
/// # Errors
/// The store refused or failed.
pub async fn add_session(rp: &RelyingParty, iss: &str, sub: &str) -> Result<Session, StoreError> {
    let now = rp.clock().unix_now();
    let s = new_session(iss, sub, now);
    rp.store().put_session(&s).await?;
    rp.token_cache()
        .write(
            &PartitionKey::Session(s.id.clone()),
            &user_entries(rp, &s, now),
            &[],
            None,
        )
        .await?;
    Ok(s)
}

/// How a fill went.
#[derive(Debug, Clone)]
pub struct Population {
    /// Sessions asked for.
    pub target: usize,
    /// Sessions stored (fewer than `target` when the fill was stopped).
    pub stored: usize,
    /// How long it took.
    pub took: Duration,
    /// Why it stopped before the target, if it did.
    pub stopped: Option<String>,
    /// Redis's memory before and after.
    pub memory_before: RedisMemory,
    /// See [`memory_before`](Self::memory_before).
    pub memory_after: RedisMemory,
}

/// Limits of a fill.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop adding sessions after this long.
    pub time: Duration,
    /// Stop adding sessions once Redis's `used_memory` passes this.
    pub memory: u64,
}

/// A store on Redis holding a chosen number of live sessions, with relying
/// parties over it with and without the in-process cache.
///
/// - [`hit`](Self::hit): a session whose partition holds one access token
///   for [`TOKEN_TARGET`](crate::TOKEN_TARGET), valid for an hour:
///   `token_for_user(&hit, &[HIT_SCOPE])` is a cache hit.
/// - Every other user (`sub`) has one session with a provider session id
///   and a partition of three entries (access, refresh and ID token), as in
///   the other benchmarks' stores.
#[derive(Debug)]
pub struct RedisFixture {
    /// Live sessions in the store.
    pub sessions: usize,
    /// How the store was filled.
    pub population: Population,
    /// The key prefix of this store.
    pub prefix: String,
    /// The store, without the in-process cache.
    pub plain: RedisStore,
    /// The same store behind the in-process cache (default options).
    pub cached: Arc<CachingStore>,
    /// A relying party over [`plain`](Self::plain).
    pub rp_plain: Arc<RelyingParty>,
    /// A relying party over [`cached`](Self::cached) (same client and
    /// cache keys).
    pub rp_cached: RelyingParty,
    /// The session of the cache hit.
    pub hit: Session,
    /// The issuer of every session.
    pub iss: String,
    settings: Settings,
    next_user: AtomicU64,
}

impl RedisFixture {
    /// Opens a store under `admin.prefix(label)`, fills it with `sessions`
    /// sessions through the [`Store`] trait and the token cache,
    /// [`IN_FLIGHT`] sessions at a time, within `limits`, and puts the
    /// in-process cache in front of it (waiting until it is active).
    ///
    /// # Errors
    /// Redis or the provider cannot be reached, a write fails three times,
    /// or the store does not hold the sessions written.
    ///
    /// # Panics
    /// When `sessions` is 0.
    pub async fn build(
        admin: &RedisAdmin,
        settings: &Settings,
        issuer: &str,
        label: &str,
        sessions: usize,
        limits: Limits,
    ) -> Result<Self, BoxError> {
        assert!(sessions > 0, "a Redis fixture needs at least one session");
        let prefix = admin.prefix(label);
        let plain =
            RedisStore::open_with_prefix(&admin.url(), &prefix, Arc::new(SystemClock)).await?;
        let rp_plain =
            Arc::new(relying_party_with(settings.clone(), Arc::new(plain.clone())).await?);
        let iss = issuer.to_string();

        let memory_before = admin.memory().await?;
        let started = Instant::now();
        let now = rp_plain.clock().unix_now();
        let hit = new_session(&iss, "hit-user", now);
        plain.put_session(&hit).await?;
        rp_plain
            .token_cache()
            .write(
                &PartitionKey::Session(hit.id.clone()),
                &[access_token(&rp_plain, &hit, now)],
                &[],
                None,
            )
            .await?;
        let (added, stopped) = fill(admin, &rp_plain, &iss, sessions - 1, started, limits).await?;
        let took = started.elapsed();
        let memory_after = admin.memory().await?;
        let stored = added + 1;
        let count = plain.session_count().await?;
        if count != stored as u64 {
            return Err(format!("the store holds {count} sessions, not {stored}").into());
        }

        let cached = Arc::new(CachingStore::new(plain.clone())?);
        if !cached.wait_until_active(Duration::from_secs(10)).await {
            return Err("the in-process cache did not become active".into());
        }
        let as_store: Arc<dyn Store> = cached.clone();
        let rp_cached = relying_party_with(settings.clone(), as_store).await?;
        Ok(Self {
            sessions: stored,
            population: Population {
                target: sessions,
                stored,
                took,
                stopped,
                memory_before,
                memory_after,
            },
            prefix,
            plain,
            cached,
            rp_plain,
            rp_cached,
            hit,
            iss,
            settings: settings.clone(),
            next_user: AtomicU64::new(0),
        })
    }

    /// The relying parties' settings (client and cache keys).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Adds a new user with two sessions, each with a three-entry partition,
    /// and returns the selector that signs that user out everywhere. The
    /// writes go to Redis directly (not through the in-process cache).
    ///
    /// # Errors
    /// The store refused or failed.
    pub async fn add_user_with_two_sessions(&self) -> Result<SignOutSelector, StoreError> {
        let k = self.next_user.fetch_add(1, Ordering::Relaxed);
        let sub = format!("evict-{k:07}");
        for _ in 0..2 {
            add_session(&self.rp_plain, &self.iss, &sub).await?;
        }
        Ok(SignOutSelector::Subject {
            iss: self.iss.clone(),
            sub,
        })
    }

    /// A [`SignOut`] evicting from `store`, with the relying party's default
    /// tombstone lifetime.
    pub fn sign_out(store: Arc<dyn Store>) -> SignOut {
        SignOut::new(store, Arc::new(SystemClock), TOMBSTONE_LIFETIME)
    }
}

/// Adds `count` users of one session each, [`IN_FLIGHT`] at a time; returns
/// how many were added and, if it stopped early, why.
async fn fill(
    admin: &RedisAdmin,
    rp: &Arc<RelyingParty>,
    iss: &str,
    count: usize,
    started: Instant,
    limits: Limits,
) -> Result<(usize, Option<String>), BoxError> {
    let mut tasks = JoinSet::new();
    let (mut next, mut done) = (0usize, 0usize);
    let mut stopped: Option<String> = None;
    let mut report_at = REPORT_EVERY;
    loop {
        while stopped.is_none() && next < count && tasks.len() < IN_FLIGHT {
            let (rp, iss, sub) = (rp.clone(), iss.to_string(), format!("user-{next:07}"));
            next += 1;
            tasks.spawn(async move {
                let mut last = None;
                for _ in 0..WRITE_TRIES {
                    match add_session(&rp, &iss, &sub).await {
                        Ok(_) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.map_or_else(|| "no try".to_string(), |e| e.to_string()))
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        joined.map_err(|e| e.to_string())??;
        done += 1;
        if stopped.is_none() && started.elapsed() > limits.time {
            stopped = Some(format!(
                "the time limit of {} s was reached",
                limits.time.as_secs()
            ));
        }
        if done >= report_at {
            report_at += REPORT_EVERY;
            let memory = admin.memory().await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  {done} of {count} sessions in {secs:.0} s ({:.0}/s); Redis used_memory {:.0} MiB",
                done as f64 / secs,
                mib(memory.used)
            );
            if stopped.is_none() && memory.used > limits.memory {
                stopped = Some(format!(
                    "Redis's memory passed the limit of {:.0} MiB",
                    mib(limits.memory)
                ));
            }
        }
    }
    Ok((done, stopped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_named_once_complete() {
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let evalsha = b"*4\r\n$7\r\nevalsha\r\n$2\r\nab\r\n$1\r\n0\r\n$0\r\n\r\n";
        let mut stream = Vec::new();
        stream.extend_from_slice(get);
        stream.extend_from_slice(evalsha);
        stream.extend_from_slice(b"PING\r\n");
        let (names, used) = command_names(&stream);
        assert_eq!(names, ["GET", "EVALSHA", "PING"]);
        assert_eq!(used, stream.len());
        // Cut anywhere inside the second command: only the first is complete.
        for cut in get.len()..get.len() + evalsha.len() {
            let (names, used) = command_names(&stream[..cut]);
            assert_eq!(
                (names.as_slice(), used),
                (&["GET".to_string()][..], get.len())
            );
        }
        let (names, used) = command_names(b"*x\r\n");
        assert_eq!((names, used), (vec!["?".to_string()], 4));
    }

    #[test]
    fn traffic_is_counted_by_difference() {
        let a = Traffic {
            round_trips: 3,
            commands: BTreeMap::from([("GET".to_string(), 2)]),
        };
        let mut b = a.clone();
        b.round_trips = 5;
        b.commands.insert("GET".into(), 4);
        b.commands.insert("EVALSHA".into(), 1);
        let d = b.since(&a);
        assert_eq!(d.round_trips, 2);
        assert_eq!(d.command_count(), 3);
        assert_eq!(
            d.per(2),
            "1.00 round trips, 1.50 commands (EVALSHA 0.50, GET 1.00)"
        );
    }

    #[test]
    fn activity_is_read_from_info() {
        let a = RedisActivity::parse(
            "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.5\r\n# Stats\r\ntotal_commands_processed:10\r\n# Clients\r\nconnected_clients:3\r\n# Commandstats\r\ncmdstat_get:calls=4,usec=8,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n",
        );
        assert_eq!((a.cpu, a.commands, a.clients), (4.0, 10, 3));
        assert_eq!(a.by_command.get("get"), Some(&(4, 8)));
        let mut b = a.clone();
        b.by_command.insert("get".into(), (6, 20));
        assert!(
            b.since(&a).contains("get 0.0 s in 2 calls (6.0 us each)"),
            "{}",
            b.since(&a)
        );
    }

    #[test]
    fn memory_figures_are_read_from_info() {
        let m = RedisMemory::parse(
            "# Memory\r\nused_memory:1000\r\nused_memory_human:1000B\r\nused_memory_rss:4096\r\nused_memory_peak:2000\r\n",
        );
        assert_eq!(
            m,
            RedisMemory {
                used: 1000,
                rss: 4096,
                peak: 2000
            }
        );
    }
}
