//! [`RedisStore`]: the [`Store`] contract on Redis.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use idweb::{
    Clock, LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup,
    SignOutOutcome, SignOutRequest, SignOutTarget, Store, StoreError, StoreStats, StoredPartition,
    SystemClock, Tombstone,
};
use redis::{Cmd, ConnectionInfo, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, cmd};

use crate::codec::{
    decode_entry, decode_session, decode_tombstone, encode_entry, encode_session, parse_i64,
    ttl_secs,
};
use crate::conn::{self, Conn};
use crate::error::{Error, corrupt, redis_error, unavailable, unexpected};
use crate::keys::{DEFAULT_PREFIX, Keys, Part, is_sid_tag, l1, selector_tag, session_tag};
use crate::scripts::{self, Call};

/// How long one store operation may take in all, round trips included.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The same for the administrative calls that walk many keys
/// (`list_sessions`, `stats`).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Tries of a compare-and-set on a session's index keys before giving up.
const MAX_CAS_TRIES: usize = 8;

/// Two fields of a hash, as `HMGET` answers them.
type TwoFields = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Commands per pipeline (standalone) or concurrent requests (cluster) when
/// reading many keys.
const BATCH: usize = 256;

/// An [`idweb::Store`] on Redis, standalone or Redis Cluster. See the
/// [crate documentation](crate) for the key layout and how each rule of the
/// contract is kept.
///
/// Cloning is cheap: clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    keys: Keys,
    clock: Arc<dyn Clock>,
    cluster: bool,
    subscribe_to: Vec<ConnectionInfo>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: it is not shown.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix())
            .field("cluster", &self.inner.cluster)
            .field("clock", &self.inner.clock)
            .finish()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url`, with keys under the prefix `idweb`
    /// and expiry decided by the system clock.
    ///
    /// URLs: `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, `rediss://...` (TLS,
    /// checked against the system's root certificates), `redis+unix:///PATH`,
    /// and for Redis Cluster `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT,...`
    /// (seed nodes; `rediss+cluster://` for TLS).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is not understood or Redis
    /// cannot be reached within a few seconds.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with_clock(url, Arc::new(SystemClock)).await
    }

    /// Like [`open`](Self::open), with `clock` deciding expiry.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub async fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_with_prefix(url, DEFAULT_PREFIX, clock).await
    }

    /// Like [`open_with_clock`](Self::open_with_clock), with every key (and
    /// the invalidation channel) under `prefix` instead of `idweb`: apps, or
    /// tests, sharing one Redis stay apart. The prefix must be non-empty and
    /// hold no `{`, `}` or whitespace.
    ///
    /// # Errors
    /// As for [`open`](Self::open); also [`StoreError::Unavailable`] for a
    /// prefix that cannot be used.
    pub async fn open_with_prefix(
        url: &str,
        prefix: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let keys = Keys::new(prefix).map_err(unavailable)?;
        let opened = conn::open(url).await?;
        let cluster = matches!(opened.conn, Conn::Cluster(_));
        Ok(Self {
            inner: Arc::new(Inner {
                conn: opened.conn,
                keys,
                clock,
                cluster,
                subscribe_to: opened.subscribe_to,
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster
    }

    /// The pub/sub channel on which [`CachingStore`](crate::CachingStore)s
    /// of this prefix announce their writes: `PREFIX:invalidate`.
    pub fn invalidation_channel(&self) -> String {
        self.inner.keys.channel().to_string()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub(crate) fn subscribe_to(&self) -> &[ConnectionInfo] {
        &self.inner.subscribe_to
    }

    fn now(&self) -> i64 {
        self.inner.clock.unix_now()
    }

    fn now_ms(&self) -> i64 {
        self.inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// Runs `op`, failing with [`StoreError::Unavailable`] past `limit`.
    async fn timed<T>(
        &self,
        limit: Duration,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(limit, op)
            .await
            .map_err(|_| unavailable(Error::Timeout(limit)))?
    }

    /// Runs a request, once more when the connection was refused (nothing
    /// was sent, so it cannot have happened twice): the first call after
    /// Redis comes back may still meet the failed reconnection.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match f(self.inner.conn.clone()).await {
            Err(e) if e.is_connection_refusal() => {
                f(self.inner.conn.clone()).await.map_err(redis_error)
            }
            other => other.map_err(redis_error),
        }
    }

    async fn query<T: FromRedisValue>(&self, c: &Cmd) -> Result<T, StoreError> {
        self.call(|mut conn| async move { c.query_async(&mut conn).await })
            .await
    }

    /// Runs a script by its hash; loads it and runs it again when the
    /// server does not know it (after a restart or `SCRIPT FLUSH`).
    async fn invoke<T: FromRedisValue>(&self, call: &Call<'_>) -> Result<T, StoreError> {
        let c = call.evalsha();
        self.call(|mut conn| {
            let c = &c;
            async move {
                match c.query_async(&mut conn).await {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        call.script().prepare_invoke().load_async(&mut conn).await?;
                        c.query_async(&mut conn).await
                    }
                    other => other,
                }
            }
        })
        .await
    }

    /// Runs independent commands, in order of replies: one pipeline per
    /// batch on a standalone server, concurrent requests on a cluster (whose
    /// keys are in many slots).
    async fn query_each<T>(&self, cmds: Vec<Cmd>) -> Result<Vec<T>, StoreError>
    where
        T: FromRedisValue + Send + 'static,
    {
        let mut out = Vec::with_capacity(cmds.len());
        for batch in cmds.chunks(BATCH) {
            if !self.inner.cluster {
                let mut pipe = redis::pipe();
                for c in batch {
                    pipe.add_command(c.clone());
                }
                let replies: Vec<T> = self
                    .call(|mut conn| {
                        let pipe = &pipe;
                        async move { pipe.query_async(&mut conn).await }
                    })
                    .await?;
                out.extend(replies);
                continue;
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (i, c) in batch.iter().cloned().enumerate() {
                let mut conn = self.inner.conn.clone();
                tasks.spawn(async move { (i, c.query_async::<T>(&mut conn).await) });
            }
            let mut replies: Vec<Option<T>> = (0..batch.len()).map(|_| None).collect();
            while let Some(done) = tasks.join_next().await {
                let (i, reply) = done.map_err(|e| unavailable(Error::Task(e.to_string())))?;
                if let Some(slot) = replies.get_mut(i) {
                    *slot = Some(reply.map_err(redis_error)?);
                }
            }
            for r in replies {
                out.push(r.ok_or_else(|| unexpected("a reply is missing"))?);
            }
        }
        Ok(out)
    }

    /// Sends `payload` on the invalidation channel.
    pub(crate) async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let mut c = cmd("PUBLISH");
        c.arg(self.inner.keys.channel()).arg(payload);
        self.timed(OP_TIMEOUT, async { self.query::<i64>(&c).await.map(drop) })
            .await
    }

    /// Sends `payload` on the sign-out event channel.
    pub(crate) async fn publish_sign_out(&self, payload: &str) -> Result<(), StoreError> {
        let mut c = cmd("PUBLISH");
        c.arg(self.inner.keys.sign_out_channel()).arg(payload);
        self.timed(OP_TIMEOUT, async { self.query::<i64>(&c).await.map(drop) })
            .await
    }

    /// The partition, with the expiry of its session for a session
    /// partition, read in one consistent step.
    pub(crate) async fn read_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<(StoredPartition, Option<i64>)>, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let k = &self.inner.keys;
            let part = Part::of(key).map_err(unavailable)?;
            let mut inv = Call::new(&scripts::GET_PARTITION);
            inv.key(k.part(&part)).key(k.version(&part)).arg(self.now());
            match &part {
                Part::Session(tag) => inv.key(k.session(tag)).arg("s"),
                Part::App(_) => inv.arg("a"),
            };
            let reply: Vec<Vec<u8>> = self.invoke(&inv).await?;
            match reply.first().map(Vec::as_slice) {
                Some(b"none") => Ok(None),
                Some(b"ok") if reply.len() >= 3 && reply.len() % 2 == 1 => {
                    let version = u64::try_from(parse_i64(&reply[1])?)
                        .map_err(|_| corrupt("negative partition version"))?;
                    let session_exp = if reply[2].is_empty() {
                        None
                    } else {
                        Some(parse_i64(&reply[2])?)
                    };
                    let mut entries = Vec::with_capacity((reply.len() - 3) / 2);
                    for pair in reply[3..].chunks(2) {
                        let cache_key = String::from_utf8(pair[0].clone())
                            .map_err(|_| corrupt("a cache key is not UTF-8"))?;
                        entries.push(decode_entry(cache_key, &pair[1])?);
                    }
                    let mut p = StoredPartition::default();
                    p.entries = entries;
                    p.version = version;
                    Ok(Some((p, session_exp)))
                }
                _ => Err(unexpected("get_partition")),
            }
        })
        .await
    }

    async fn put_session_cluster(
        &self,
        s: &Session,
        data: &[u8],
        old: &str,
        new_idx: &str,
        selectors: &[String],
    ) -> Result<String, StoreError> {
        let k = &self.inner.keys;
        let (now, ttl) = (self.now(), ttl_secs(s.expires_at, self.now()));
        let tag = session_tag(&s.id);
        let part = Part::Session(tag.clone());
        // 1. The session, in its slot.
        let mut inv = Call::new(&scripts::SESSION_WRITE);
        inv.key(k.session(&tag))
            .key(k.part(&part))
            .key(k.version(&part))
            .arg(old)
            .arg(data)
            .arg(s.expires_at)
            .arg(ttl)
            .arg(new_idx);
        let written: String = self.invoke(&inv).await?;
        if written != "ok" {
            return Ok(written);
        }
        // 2. Each index entry, then that selector's tombstone, in their slot:
        // only now, with the session and the entry stored, is the tombstone
        // read (see "Redis Cluster" in the crate documentation).
        let mut refusal = None;
        for t in selectors {
            let mut inv = Call::new(&scripts::SELECTOR_ADD);
            inv.key(k.index(t))
                .key(k.tombstone(t))
                .arg(now)
                .arg(s.id.secret())
                .arg(s.expires_at)
                .arg(ttl)
                .arg(if is_sid_tag(t) { "sid" } else { "sub" })
                .arg(s.created_at);
            let r: String = self.invoke(&inv).await?;
            if r != "ok" {
                refusal = Some(r);
                break;
            }
        }
        if let Some(refusal) = refusal {
            // Take the session back out: it must not outlive the tombstone.
            self.remove_session_cluster(&s.id).await?;
            return Ok(refusal);
        }
        // 3. Index entries the old version had and this one has not.
        let new_keys: Vec<&str> = new_idx.split('\n').collect();
        for o in old
            .split('\n')
            .filter(|o| !o.is_empty() && !new_keys.contains(o))
        {
            let mut c = cmd("ZREM");
            c.arg(o).arg(s.id.secret());
            self.query::<i64>(&c).await?;
        }
        // 4. Counting and listing.
        let mut inv = Call::new(&scripts::META_ADD);
        inv.key(k.meta_expiry())
            .key(k.meta_ids())
            .arg(now)
            .arg(s.id.secret())
            .arg(s.expires_at)
            .arg(ttl);
        self.invoke::<String>(&inv).await?;
        Ok("ok".into())
    }

    async fn remove_session_cluster(&self, id: &SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        let k = &self.inner.keys;
        let tag = session_tag(id);
        let part = Part::Session(tag.clone());
        let mut inv = Call::new(&scripts::SESSION_REMOVE);
        inv.key(k.session(&tag))
            .key(k.part(&part))
            .key(k.version(&part));
        let reply: Vec<Vec<u8>> = self.invoke(&inv).await?;
        let [data, idx] =
            <[Vec<u8>; 2]>::try_from(reply).map_err(|_| unexpected("remove_session (cluster)"))?;
        // The session and its tokens are gone; what follows only tidies up.
        // Should it fail, the index entries point at a missing session,
        // which lookups skip, and they are pruned when the session would
        // have ended.
        let idx = String::from_utf8_lossy(&idx).into_owned();
        for key in idx.split('\n').filter(|key| !key.is_empty()) {
            let mut c = cmd("ZREM");
            c.arg(key).arg(id.secret());
            self.query::<i64>(&c).await?;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(k.meta_expiry())
            .arg(id.secret())
            .cmd("ZREM")
            .arg(k.meta_ids())
            .arg(id.secret());
        self.call(|mut conn| {
            let pipe = &pipe;
            async move { pipe.query_async::<Vec<i64>>(&mut conn).await }
        })
        .await?;
        Ok((!data.is_empty()).then_some(data))
    }

    async fn remove_session_single(&self, id: &SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        let k = &self.inner.keys;
        let tag = session_tag(id);
        let part = Part::Session(tag.clone());
        let sk = k.session(&tag);
        for _ in 0..MAX_CAS_TRIES {
            let mut get = cmd("HGET");
            get.arg(&sk).arg("idx");
            let old: String = self
                .query::<Option<String>>(&get)
                .await?
                .unwrap_or_default();
            let mut inv = Call::new(&scripts::REMOVE_SESSION);
            inv.key(&sk)
                .key(k.part(&part))
                .key(k.version(&part))
                .key(k.meta_expiry())
                .key(k.meta_ids());
            for o in old.split('\n').filter(|o| !o.is_empty()) {
                inv.key(o);
            }
            inv.arg(&old).arg(id.secret());
            let reply: Vec<Vec<u8>> = self.invoke(&inv).await?;
            match reply.first().map(Vec::as_slice) {
                Some(b"retry") => continue,
                Some(b"none") => return Ok(None),
                Some(b"ok") => {
                    return reply
                        .into_iter()
                        .nth(1)
                        .map(Some)
                        .ok_or_else(|| unexpected("remove_session"));
                }
                _ => return Err(unexpected("remove_session")),
            }
        }
        Err(unavailable(Error::Contended))
    }

    /// Whether a live tombstone covers `session`, given the tombstone value
    /// (`''` for none) read for each index key the session is under.
    fn covered(
        &self,
        session: &Session,
        tombstones: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        let now = self.now();
        for (index, value) in tombstones {
            if value.is_empty() {
                continue;
            }
            let Some(tag) = self.inner.keys.tag_of_index(index) else {
                continue;
            };
            let value =
                std::str::from_utf8(value).map_err(|_| corrupt("a tombstone is not text"))?;
            let (logged_out_at, expires_at) = decode_tombstone(value)?;
            let selector = match (is_sid_tag(tag), &session.sid) {
                (true, Some(sid)) => SessionLookup::ByProviderSession {
                    iss: session.iss.clone(),
                    sid: sid.clone(),
                },
                (true, None) => continue,
                (false, _) => SessionLookup::BySubject {
                    iss: session.iss.clone(),
                    sub: session.sub.clone(),
                },
            };
            if expires_at > now
                && Tombstone::new(selector, logged_out_at, expires_at).covers(session)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `get_session` on a standalone server: one script reads the session
    /// and its tombstones together.
    async fn get_session_single(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let mut inv = Call::new(&scripts::GET_SESSION);
        inv.key(self.inner.keys.session(&session_tag(id)));
        let reply: Vec<Vec<u8>> = self.invoke(&inv).await?;
        let mut it = reply.into_iter();
        let (Some(data), Some(exp), Some(_idx)) = (it.next(), it.next(), it.next()) else {
            return Ok(None);
        };
        if parse_i64(&exp)? <= self.now() {
            return Ok(None);
        }
        let session = decode_session(id, &data)?;
        let rest: Vec<Vec<u8>> = it.collect();
        let tombstones: Vec<(String, Vec<u8>)> = rest
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((String::from_utf8_lossy(k).into_owned(), v.clone())),
                _ => None,
            })
            .collect();
        Ok((!self.covered(&session, &tombstones)?).then_some(session))
    }

    /// `get_session` on a cluster: the session (its slot), then the
    /// tombstones of its selectors (theirs).
    async fn get_session_cluster(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let k = &self.inner.keys;
        let mut c = cmd("HMGET");
        c.arg(k.session(&session_tag(id)))
            .arg("data")
            .arg("exp")
            .arg("idx");
        let (data, exp, idx): (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>) =
            self.query(&c).await?;
        let (Some(data), Some(exp)) = (data, exp) else {
            return Ok(None);
        };
        if parse_i64(&exp)? <= self.now() {
            return Ok(None);
        }
        let session = decode_session(id, &data)?;
        let indexes: Vec<String> = idx
            .unwrap_or_default()
            .split('\n')
            .filter(|i| k.tag_of_index(i).is_some())
            .map(str::to_string)
            .collect();
        let gets = indexes
            .iter()
            .filter_map(|i| k.tag_of_index(i))
            .map(|tag| {
                let mut c = cmd("GET");
                c.arg(k.tombstone(tag));
                c
            })
            .collect();
        let values: Vec<Option<Vec<u8>>> = self.query_each(gets).await?;
        let tombstones: Vec<(String, Vec<u8>)> = indexes
            .into_iter()
            .zip(values)
            .map(|(i, v)| (i, v.unwrap_or_default()))
            .collect();
        Ok((!self.covered(&session, &tombstones)?).then_some(session))
    }

    /// A whole sign-out on a standalone server: one script (`SIGN_OUT`) that
    /// checks the candidates and does everything, publishing
    /// `ORIGIN\nWORDS` on the invalidation channel when `announce_as` gives
    /// the origin. A lookup's first call names no candidate (one round trip
    /// when the index is empty; else the script answers the indexed ids and
    /// the second call names them); a session's `idx` is read first. Two
    /// round trips at most; more only when a concurrent write changed the
    /// candidates in between. `words` receives the names
    /// of the in-process cache entries concerned (also on failure), after
    /// `first_word` when given (an acknowledgement request).
    pub(crate) async fn sign_out_single(
        &self,
        request: &SignOutRequest,
        announce_as: Option<&str>,
        first_word: Option<&str>,
        words: &mut Vec<String>,
    ) -> Result<SignOutOutcome, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let k = &self.inner.keys;
            let now = self.now();
            // A lookup's sessions, as the script last found them indexed.
            // The first try names none: a provider session this app does not
            // know (most back-channel logouts a multi-app provider sends) is
            // then one round trip, and otherwise the script answers with the
            // indexed ids for the second.
            let mut indexed: Vec<String> = Vec::new();
            for _ in 0..MAX_CAS_TRIES {
                let (lookup_mode, ids, expected_idx, tomb_tag, lookup_index) = match &request.target
                {
                    SignOutTarget::Session(id) => {
                        let mut get = cmd("HGET");
                        get.arg(k.session(&session_tag(id))).arg("idx");
                        let idx: String = self
                            .query::<Option<String>>(&get)
                            .await?
                            .unwrap_or_default();
                        // The session's provider session, from its index keys.
                        let sid_tag = idx
                            .split('\n')
                            .filter_map(|i| k.tag_of_index(i))
                            .find(|t| is_sid_tag(t))
                            .map(str::to_string);
                        (false, vec![id.secret().to_string()], idx, sid_tag, None)
                    }
                    SignOutTarget::Lookup(lookup) => {
                        let tag = selector_tag(lookup).map_err(unavailable)?;
                        let index = k.index(&tag);
                        let ids = std::mem::take(&mut indexed);
                        (true, ids, String::new(), Some(tag), Some(index))
                    }
                    _ => return Err(unavailable(Error::Unsupported("sign-out target"))),
                };
                words.clear();
                words.extend(first_word.map(str::to_string));
                if let Some(t) = &tomb_tag {
                    words.push(l1::tombstone(t));
                }
                let tags: Vec<String> = ids
                    .iter()
                    .map(|id| session_tag(&SessionId::from_string(id.clone())))
                    .collect();
                for tag in &tags {
                    words.push(l1::session(tag));
                    words.push(l1::partition(&Part::Session(tag.clone())));
                }
                let payload = announce_as
                    .map(|origin| idweb_l1::names::message(origin, words))
                    .unwrap_or_default();
                let unused = k.meta_expiry();
                let mut inv = Call::new(&scripts::SIGN_OUT);
                inv.key(k.meta_expiry())
                    .key(k.meta_ids())
                    .key(k.meta_tombstones());
                match &request.jti {
                    Some(j) => inv.key(k.jti(&j.iss, &j.jti)),
                    None => inv.key(unused),
                };
                match &tomb_tag {
                    Some(t) => inv.key(k.tombstone(t)),
                    None => inv.key(unused),
                };
                match &lookup_index {
                    Some(i) => inv.key(i),
                    None => inv.key(unused),
                };
                for tag in &tags {
                    let part = Part::Session(tag.clone());
                    inv.key(k.session(tag))
                        .key(k.part(&part))
                        .key(k.version(&part));
                }
                let flag = |b: bool| if b { "1" } else { "0" };
                let (jti_exp, jti_ttl) = request
                    .jti
                    .as_ref()
                    .map_or((0, 1), |j| (j.expires_at, ttl_secs(j.expires_at, now)));
                inv.arg(now)
                    .arg(if lookup_mode { "lookup" } else { "session" })
                    .arg(flag(request.jti.is_some()))
                    .arg(jti_exp)
                    .arg(jti_ttl)
                    .arg(flag(tomb_tag.is_some()))
                    .arg(request.logged_out_at)
                    .arg(request.tombstone_expires_at)
                    .arg(ttl_secs(request.tombstone_expires_at, now))
                    .arg(tomb_tag.as_deref().unwrap_or_default())
                    .arg(flag(request.only_if_found))
                    .arg(&expected_idx)
                    .arg(k.channel())
                    .arg(&payload)
                    .arg(ids.len());
                for id in &ids {
                    inv.arg(id);
                }
                let reply: Vec<Vec<u8>> = self.invoke(&inv).await?;
                return match reply.first().map(Vec::as_slice) {
                    Some(b"retry") => {
                        indexed = session_ids(&reply[1..])?;
                        continue;
                    }
                    Some(b"replayed") => Ok(SignOutOutcome::Replayed),
                    Some(b"ok") if reply.len() >= 2 => {
                        let entries_removed = u64::try_from(parse_i64(&reply[1])?)
                            .map_err(|_| corrupt("a negative count of entries"))?;
                        let removed = session_ids(&reply[2..])?
                            .into_iter()
                            .map(SessionId::from_string)
                            .collect();
                        Ok(SignOutOutcome::SignedOut {
                            removed,
                            entries_removed,
                        })
                    }
                    _ => Err(unexpected("sign_out")),
                };
            }
            Err(unavailable(Error::Contended))
        })
        .await
    }

    /// Session record and expiry of each id, `None` where absent.
    async fn sessions_of(&self, ids: &[String]) -> Result<Vec<Option<(Vec<u8>, i64)>>, StoreError> {
        let k = &self.inner.keys;
        let cmds = ids
            .iter()
            .map(|id| {
                let mut c = cmd("HMGET");
                c.arg(k.session(&session_tag(&SessionId::from_string(id.clone()))))
                    .arg("data")
                    .arg("exp");
                c
            })
            .collect();
        let rows: Vec<TwoFields> = self.query_each(cmds).await?;
        rows.into_iter()
            .map(|row| match row {
                (Some(data), Some(exp)) => Ok(Some((data, parse_i64(&exp)?))),
                _ => Ok(None),
            })
            .collect()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn put_session(&self, s: &Session) -> Result<(), StoreError> {
        self.timed(OP_TIMEOUT, async {
            let k = &self.inner.keys;
            let now = self.now();
            let ttl = ttl_secs(s.expires_at, now);
            let tag = session_tag(&s.id);
            let part = Part::Session(tag.clone());
            let sk = k.session(&tag);
            let data = encode_session(s)?;
            let selectors = idweb_l1::names::session_selectors(s);
            let new_idx = selectors
                .iter()
                .map(|t| k.index(t))
                .collect::<Vec<_>>()
                .join("\n");
            for _ in 0..MAX_CAS_TRIES {
                let mut get = cmd("HGET");
                get.arg(&sk).arg("idx");
                let old: String = self
                    .query::<Option<String>>(&get)
                    .await?
                    .unwrap_or_default();
                let reply: String = if self.inner.cluster {
                    self.put_session_cluster(s, &data, &old, &new_idx, &selectors)
                        .await?
                } else {
                    let old_keys: Vec<&str> = old.split('\n').filter(|o| !o.is_empty()).collect();
                    let mut inv = Call::new(&scripts::PUT_SESSION);
                    inv.key(&sk)
                        .key(k.part(&part))
                        .key(k.version(&part))
                        .key(k.meta_expiry())
                        .key(k.meta_ids());
                    for t in &selectors {
                        inv.key(k.index(t)).key(k.tombstone(t));
                    }
                    for o in &old_keys {
                        inv.key(*o);
                    }
                    inv.arg(now)
                        .arg(s.id.secret())
                        .arg(&data)
                        .arg(s.expires_at)
                        .arg(ttl)
                        .arg(&old)
                        .arg(&new_idx)
                        .arg(s.created_at)
                        .arg(selectors.len())
                        .arg(old_keys.len());
                    for t in &selectors {
                        inv.arg(if is_sid_tag(t) { "sid" } else { "sub" });
                    }
                    self.invoke(&inv).await?
                };
                return match reply.as_str() {
                    "retry" => continue,
                    "ok" => Ok(()),
                    "signedout" => Err(StoreError::SignedOut),
                    "corrupt" => Err(corrupt("a tombstone does not decode")),
                    _ => Err(unexpected("put_session")),
                };
            }
            Err(unavailable(Error::Contended))
        })
        .await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.timed(OP_TIMEOUT, async {
            if self.inner.cluster {
                self.get_session_cluster(id).await
            } else {
                self.get_session_single(id).await
            }
        })
        .await
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let data = if self.inner.cluster {
                self.remove_session_cluster(id).await?
            } else {
                self.remove_session_single(id).await?
            };
            data.map(|d| decode_session(id, &d)).transpose()
        })
        .await
    }

    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let now = self.now();
            let index = self
                .inner
                .keys
                .index(&selector_tag(lookup).map_err(unavailable)?);
            let mut range = cmd("ZRANGEBYSCORE");
            range.arg(&index).arg(format!("({now}")).arg("+inf");
            let ids: Vec<String> = self.query(&range).await?;
            let cmds = ids
                .iter()
                .map(|id| {
                    let mut c = cmd("HMGET");
                    c.arg(
                        self.inner
                            .keys
                            .session(&session_tag(&SessionId::from_string(id.clone()))),
                    )
                    .arg("exp")
                    .arg("idx");
                    c
                })
                .collect();
            let rows: Vec<(Option<Vec<u8>>, Option<String>)> = self.query_each(cmds).await?;
            let mut found = Vec::new();
            for (id, row) in ids.into_iter().zip(rows) {
                // Live, and still indexed under this lookup (an entry left
                // by a replaced or removed session is skipped).
                if let (Some(exp), Some(idx)) = row
                    && parse_i64(&exp)? > now
                    && idx.split('\n').any(|i| i == index)
                {
                    found.push(SessionId::from_string(id));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let mut c = cmd("ZCOUNT");
            c.arg(self.inner.keys.meta_expiry())
                .arg(format!("({}", self.now()))
                .arg("+inf");
            self.query(&c).await
        })
        .await
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.timed(ADMIN_TIMEOUT, async {
            let now = self.now();
            let batch = limit.clamp(16, BATCH);
            let mut cursor = after.map_or_else(|| "-".to_string(), |a| format!("({}", a.secret()));
            let mut out = Vec::new();
            while out.len() < limit {
                let mut c = cmd("ZRANGEBYLEX");
                c.arg(self.inner.keys.meta_ids())
                    .arg(&cursor)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(batch);
                let ids: Vec<String> = self.query(&c).await?;
                let Some(last) = ids.last() else { break };
                cursor = format!("({last}");
                let full = ids.len() == batch;
                let rows = self.sessions_of(&ids).await?;
                for (id, row) in ids.iter().zip(rows) {
                    if let Some((data, exp)) = row
                        && exp > now
                        && out.len() < limit
                    {
                        out.push(decode_session(&SessionId::from_string(id.clone()), &data)?);
                    }
                }
                if !full {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        Ok(self.read_partition(key).await?.map(|(p, _)| p))
    }

    /// One script: the session's expiry, whether the partition has
    /// entries, and its version; one round trip, no entry read.
    async fn partition_version(&self, key: &PartitionKey) -> Result<Option<u64>, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let k = &self.inner.keys;
            let part = Part::of(key).map_err(unavailable)?;
            let mut inv = Call::new(&scripts::PARTITION_VERSION);
            inv.key(k.part(&part)).key(k.version(&part)).arg(self.now());
            match &part {
                Part::Session(tag) => inv.key(k.session(tag)).arg("s"),
                Part::App(_) => inv.arg("a"),
            };
            let reply: Option<Vec<u8>> = self.invoke(&inv).await?;
            reply
                .map(|v| {
                    u64::try_from(parse_i64(&v)?).map_err(|_| corrupt("negative partition version"))
                })
                .transpose()
        })
        .await
    }

    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let k = &self.inner.keys;
            let part = Part::of(key).map_err(unavailable)?;
            if let Part::App(storage) = &part {
                // For statistics only; recorded first so that no partition
                // escapes the count.
                let mut c = cmd("SADD");
                c.arg(k.meta_apps()).arg(storage);
                self.query::<i64>(&c).await?;
            }
            let mut inv = Call::new(&scripts::WRITE_PARTITION);
            inv.key(k.part(&part)).key(k.version(&part)).arg(self.now());
            match &part {
                Part::Session(tag) => inv.key(k.session(tag)).arg("s"),
                Part::App(_) => inv.arg("a"),
            };
            match write.expected_version {
                Some(v) => inv.arg(v),
                None => inv.arg(""),
            };
            inv.arg(write.remove.len());
            for r in &write.remove {
                inv.arg(r);
            }
            inv.arg(write.upsert.len());
            for e in &write.upsert {
                inv.arg(&e.cache_key).arg(encode_entry(e));
            }
            let reply: Vec<Vec<u8>> = self.invoke(&inv).await?;
            match (reply.first().map(Vec::as_slice), reply.get(1)) {
                (Some(b"ok"), Some(v)) => {
                    u64::try_from(parse_i64(v)?).map_err(|_| corrupt("negative partition version"))
                }
                (Some(b"signedout"), _) => Err(StoreError::SignedOut),
                (Some(b"conflict"), Some(found)) => Err(StoreError::Conflict {
                    expected: write.expected_version.unwrap_or_default(),
                    found: u64::try_from(parse_i64(found)?).unwrap_or_default(),
                }),
                _ => Err(unexpected("write_partition")),
            }
        })
        .await
    }

    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let k = &self.inner.keys;
            let part = Part::of(key).map_err(unavailable)?;
            let mut inv = Call::new(&scripts::REMOVE_PARTITION);
            inv.key(k.part(&part)).key(k.version(&part));
            let had: i64 = self.invoke(&inv).await?;
            if let Part::App(storage) = &part {
                let mut c = cmd("SREM");
                c.arg(k.meta_apps()).arg(storage);
                self.query::<i64>(&c).await?;
            }
            Ok(had > 0)
        })
        .await
    }

    async fn put_tombstone(&self, t: &Tombstone) -> Result<(), StoreError> {
        self.timed(OP_TIMEOUT, async {
            let k = &self.inner.keys;
            let now = self.now();
            let ttl = ttl_secs(t.expires_at, now);
            let tag = selector_tag(&t.selector).map_err(unavailable)?;
            let mut inv = Call::new(&scripts::PUT_TOMBSTONE);
            inv.key(k.tombstone(&tag));
            if !self.inner.cluster {
                inv.key(k.meta_tombstones());
            }
            inv.arg(now)
                .arg(t.logged_out_at)
                .arg(t.expires_at)
                .arg(ttl)
                .arg(&tag);
            let reply: String = self.invoke(&inv).await?;
            match reply.as_str() {
                "ok" if self.inner.cluster => {
                    let mut inv = Call::new(&scripts::META_TOMBSTONE);
                    inv.key(k.meta_tombstones())
                        .arg(now)
                        .arg(t.expires_at)
                        .arg(ttl)
                        .arg(&tag);
                    self.invoke::<String>(&inv).await.map(drop)
                }
                "ok" | "kept" => Ok(()),
                _ => Err(unexpected("put_tombstone")),
            }
        })
        .await
    }

    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let tag = selector_tag(selector).map_err(unavailable)?;
            let mut c = cmd("GET");
            c.arg(self.inner.keys.tombstone(&tag));
            let Some(v) = self.query::<Option<String>>(&c).await? else {
                return Ok(None);
            };
            let (logged_out_at, expires_at) = decode_tombstone(&v)?;
            Ok((expires_at > self.now())
                .then(|| Tombstone::new(selector.clone(), logged_out_at, expires_at)))
        })
        .await
    }

    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let now = self.now();
            let mut inv = Call::new(&scripts::RECORD_JTI);
            inv.key(self.inner.keys.jti(iss, jti))
                .arg(now)
                .arg(expires_at)
                .arg(ttl_secs(expires_at, now));
            Ok(self.invoke::<i64>(&inv).await? == 1)
        })
        .await
    }

    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let mut c = cmd("GET");
            c.arg(self.inner.keys.jti(iss, jti));
            match self.query::<Option<Vec<u8>>>(&c).await? {
                Some(v) => Ok(parse_i64(&v)? > self.now()),
                None => Ok(false),
            }
        })
        .await
    }

    /// Standalone: one script after one read (see `sign_out_single`),
    /// atomic. Cluster: the keys of one sign-out live in several slots, so
    /// it runs in order ([`idweb::sign_out_in_order`]), crash-safe but not
    /// atomic.
    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        if self.inner.cluster {
            return idweb::sign_out_in_order(self, request).await;
        }
        self.sign_out_single(request, None, None, &mut Vec::new())
            .await
    }

    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.timed(OP_TIMEOUT, async {
            let mut c = cmd("DEL");
            c.arg(self.inner.keys.jti(iss, jti));
            self.query::<i64>(&c).await.map(drop)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.timed(ADMIN_TIMEOUT, async {
            let k = &self.inner.keys;
            let live = format!("({}", self.now());
            let mut count = cmd("ZCOUNT");
            count.arg(k.meta_expiry()).arg(&live).arg("+inf");
            let mut tombs = cmd("ZCOUNT");
            tombs.arg(k.meta_tombstones()).arg(&live).arg("+inf");
            let mut ids = cmd("ZRANGEBYSCORE");
            ids.arg(k.meta_expiry()).arg(&live).arg("+inf");
            let mut apps = cmd("SMEMBERS");
            apps.arg(k.meta_apps());
            let ids: Vec<String> = self.query(&ids).await?;
            let apps: Vec<String> = self.query(&apps).await?;
            let parts = ids
                .iter()
                .map(|id| Part::Session(session_tag(&SessionId::from_string(id.clone()))))
                .chain(apps.into_iter().map(Part::App))
                .flat_map(|p| {
                    // The version field is not an entry.
                    let mut len = cmd("HLEN");
                    len.arg(k.part(&p));
                    let mut version = cmd("HEXISTS");
                    version.arg(k.part(&p)).arg(b"\xff");
                    [len, version]
                })
                .collect();
            let replies: Vec<u64> = self.query_each(parts).await?;
            let lens: Vec<u64> = replies
                .chunks(2)
                .map(|pair| pair[0].saturating_sub(pair.get(1).copied().unwrap_or(0)))
                .collect();
            let mut stats = StoreStats::default();
            stats.sessions = self.query(&count).await?;
            stats.tombstones = self.query(&tombs).await?;
            stats.partitions = lens.iter().filter(|n| **n > 0).count() as u64;
            stats.entries = lens.iter().sum();
            Ok(stats)
        })
        .await
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.timed(OP_TIMEOUT, async {
            let now = self.now_ms();
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            let token = LockToken::generate();
            let mut inv = Call::new(&scripts::TRY_LOCK);
            inv.key(self.inner.keys.lock(name))
                .arg(now)
                .arg(format!("{}:{}", now.saturating_add(ttl_ms), token.as_str()))
                .arg(ttl_ms);
            Ok((self.invoke::<i64>(&inv).await? == 1).then_some(token))
        })
        .await
    }

    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        self.timed(OP_TIMEOUT, async {
            let mut inv = Call::new(&scripts::UNLOCK);
            inv.key(self.inner.keys.lock(name)).arg(token.as_str());
            self.invoke::<i64>(&inv).await.map(drop)
        })
        .await
    }
}

/// The session ids in a script's reply.
fn session_ids(reply: &[Vec<u8>]) -> Result<Vec<String>, StoreError> {
    reply
        .iter()
        .map(|id| String::from_utf8(id.clone()).map_err(|_| corrupt("a session id is not UTF-8")))
        .collect()
}
