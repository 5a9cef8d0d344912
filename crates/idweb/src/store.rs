//! The [`Store`] trait — where sessions live — and [`MemoryStore`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::session::{Session, SessionId};
use crate::time::{Clock, SystemClock};

/// A boxed error from a store backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or failed; the operation may or may
    /// not have happened and can be retried.
    #[error("the session store is unavailable")]
    Unavailable(#[source] BoxError),
    /// Data read from the backend could not be decoded.
    #[error("the session store holds data idweb cannot read")]
    Corrupt(#[source] BoxError),
    /// The write was refused because the session it belongs to was signed
    /// out (removed, expired or tombstoned). Nothing was written.
    #[error("the session was signed out; nothing was written")]
    SignedOut,
    /// A conditional partition write found another version than expected.
    /// Nothing was written.
    #[error("the partition changed concurrently (expected version {expected}, found {found})")]
    Conflict {
        /// The version the writer expected.
        expected: u64,
        /// The version found.
        found: u64,
    },
}

/// How to find sessions without their id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionLookup {
    /// Sessions of one provider session: `(iss, sid)`.
    ByProviderSession {
        /// Issuer.
        iss: String,
        /// The provider's `sid`.
        sid: String,
    },
    /// All sessions of one user: `(iss, sub)`.
    BySubject {
        /// Issuer.
        iss: String,
        /// Subject.
        sub: String,
    },
}

impl std::hash::Hash for SessionLookup {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl SessionLookup {
    fn as_ref(&self) -> LookupRef<'_> {
        match self {
            SessionLookup::ByProviderSession { iss, sid } => LookupRef {
                by_sid: true,
                iss,
                id: sid,
            },
            SessionLookup::BySubject { iss, sub } => LookupRef {
                by_sid: false,
                iss,
                id: sub,
            },
        }
    }
}

/// A [`SessionLookup`] borrowed from a session, to look one up in the
/// memory store's maps without copying three strings (it hashes as the
/// lookup it stands for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LookupRef<'a> {
    by_sid: bool,
    iss: &'a str,
    id: &'a str,
}

impl LookupRef<'_> {
    fn to_owned(self) -> SessionLookup {
        let (iss, id) = (self.iss.to_string(), self.id.to_string());
        if self.by_sid {
            SessionLookup::ByProviderSession { iss, sid: id }
        } else {
            SessionLookup::BySubject { iss, sub: id }
        }
    }
}

impl hashbrown::Equivalent<SessionLookup> for LookupRef<'_> {
    fn equivalent(&self, key: &SessionLookup) -> bool {
        *self == key.as_ref()
    }
}

/// An `(iss, jti)` record's key, borrowed (hashes as the owned pair).
#[derive(Hash)]
struct JtiRef<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(String, String)> for JtiRef<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// Which token-cache partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PartitionKey {
    /// The user tokens of one session.
    Session(SessionId),
    /// App tokens (client credentials) of one client, tenant and audience.
    App {
        /// The client id.
        client_id: String,
        /// The tenant (or issuer) the tokens come from.
        tenant: String,
        /// The audience (resource) of the tokens.
        audience: String,
    },
}

impl PartitionKey {
    /// A flat string form, unique per partition, for backends keyed by strings.
    pub fn storage_key(&self) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        match self {
            PartitionKey::Session(id) => {
                // On every request of the SQLite store: no formatter.
                let mut key = String::with_capacity(2 + id.secret().len());
                key.push_str("s.");
                key.push_str(id.secret());
                key
            }
            PartitionKey::App {
                client_id,
                tenant,
                audience,
            } => format!(
                "a.{}.{}.{}",
                B64.encode(client_id),
                B64.encode(tenant),
                B64.encode(audience)
            ),
        }
    }

    /// The session this partition belongs to, if it is a session partition.
    pub fn session_id(&self) -> Option<&SessionId> {
        match self {
            PartitionKey::Session(id) => Some(id),
            PartitionKey::App { .. } => None,
        }
    }
}

/// One token-cache entry as the store keeps it. The store never sees a
/// token in clear: `sealed` is the encrypted entry.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredEntry {
    /// The entry's cache key (MSAL's key; holds no secret).
    pub cache_key: String,
    /// MSAL's section name: `AccessToken`, `RefreshToken`, `IdToken`, `Account` or `AppMetadata`.
    pub kind: String,
    /// Unix seconds when the entry stops being useful, if it expires.
    pub expires_at: Option<i64>,
    /// The encrypted entry.
    pub sealed: Vec<u8>,
}

impl StoredEntry {
    /// A stored entry.
    pub fn new(
        cache_key: impl Into<String>,
        kind: impl Into<String>,
        expires_at: Option<i64>,
        sealed: Vec<u8>,
    ) -> Self {
        Self {
            cache_key: cache_key.into(),
            kind: kind.into(),
            expires_at,
            sealed,
        }
    }
}

impl std::fmt::Debug for StoredEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredEntry")
            .field("cache_key", &self.cache_key)
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .field("sealed", &format_args!("[{} bytes]", self.sealed.len()))
            .finish()
    }
}

/// A partition as read from the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoredPartition {
    /// Its entries, in no particular order.
    pub entries: Vec<StoredEntry>,
    /// Its version: 0 for a partition never written, +1 for every write.
    pub version: u64,
}

/// A change to one partition, applied atomically.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PartitionWrite {
    /// Entries to insert or replace (by cache key).
    pub upsert: Vec<StoredEntry>,
    /// Cache keys to remove.
    pub remove: Vec<String>,
    /// When set, the write happens only if the partition's version is this one.
    pub expected_version: Option<u64>,
}

impl PartitionWrite {
    /// A write inserting or replacing `entries`.
    pub fn upsert(entries: Vec<StoredEntry>) -> Self {
        Self {
            upsert: entries,
            ..Self::default()
        }
    }

    /// Makes the write conditional on the partition's current version.
    pub fn if_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }
}

/// A record that sessions were signed out: sessions it covers cannot be
/// (re)created while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tombstone {
    /// What was signed out: one provider session `(iss, sid)`, or every
    /// session of `(iss, sub)` that existed at `logged_out_at`.
    pub selector: SessionLookup,
    /// The instant of the sign-out, in Unix microseconds (the unit of
    /// [`Session::created_at`]).
    pub logged_out_at: i64,
    /// Unix seconds until which the tombstone is kept (at least the longest session lifetime).
    pub expires_at: i64,
}

impl Tombstone {
    /// A tombstone for `selector` signed out at `logged_out_at` (Unix
    /// microseconds), kept until `expires_at` (Unix seconds).
    pub fn new(selector: SessionLookup, logged_out_at: i64, expires_at: i64) -> Self {
        Self {
            selector,
            logged_out_at,
            expires_at,
        }
    }

    /// Whether this tombstone forbids `session`: every session of its
    /// provider session `(iss, sid)`; of its subject `(iss, sub)`, the
    /// sessions created at or before `logged_out_at` (a sign-in after the
    /// sign-out, even within the same second, is not covered).
    pub fn covers(&self, session: &Session) -> bool {
        match &self.selector {
            SessionLookup::ByProviderSession { iss, sid } => {
                session.iss == *iss && session.sid.as_deref() == Some(sid.as_str())
            }
            SessionLookup::BySubject { iss, sub } => {
                session.iss == *iss
                    && session.sub == *sub
                    && session.created_at <= self.logged_out_at
            }
        }
    }
}

/// A logout token's replay record, written together with the sign-out it
/// announced (see [`Store::sign_out`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JtiRecord {
    /// The token's issuer.
    pub iss: String,
    /// The token's `jti`.
    pub jti: String,
    /// Unix seconds until which the token could be replayed (the record lasts that long).
    pub expires_at: i64,
}

impl JtiRecord {
    /// A record of `(iss, jti)` kept until `expires_at`.
    pub fn new(iss: impl Into<String>, jti: impl Into<String>, expires_at: i64) -> Self {
        Self {
            iss: iss.into(),
            jti: jti.into(),
            expires_at,
        }
    }
}

/// Which sessions a [`Store::sign_out`] removes, and what it tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignOutTarget {
    /// One session, by id (local sign-out). When the stored session has a
    /// provider session `sid`, `(iss, sid)` is tombstoned too.
    Session(SessionId),
    /// Every session matching the lookup; the lookup's selector is tombstoned.
    Lookup(SessionLookup),
}

/// A whole sign-out, carried out by [`Store::sign_out`] as one step.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignOutRequest {
    /// What to remove and tombstone.
    pub target: SignOutTarget,
    /// The tombstone's `logged_out_at` (Unix microseconds).
    pub logged_out_at: i64,
    /// The tombstone's `expires_at` (Unix seconds).
    pub tombstone_expires_at: i64,
    /// The logout token's replay record, for back-channel logouts.
    pub jti: Option<JtiRecord>,
    /// When set and no live session matches the target, nothing at all is
    /// written (for unauthenticated front-channel requests).
    pub only_if_found: bool,
}

impl SignOutRequest {
    /// A sign-out of `target` at `logged_out_at` (Unix microseconds), its
    /// tombstone kept until `tombstone_expires_at` (Unix seconds); no
    /// replay record; written even when nothing matches.
    pub fn new(target: SignOutTarget, logged_out_at: i64, tombstone_expires_at: i64) -> Self {
        Self {
            target,
            logged_out_at,
            tombstone_expires_at,
            jti: None,
            only_if_found: false,
        }
    }

    /// Records `jti` with the sign-out, and refuses it as a replay when it
    /// is recorded already.
    pub fn with_jti(mut self, jti: JtiRecord) -> Self {
        self.jti = Some(jti);
        self
    }

    /// Writes nothing when no live session matches the target.
    pub fn only_if_found(mut self) -> Self {
        self.only_if_found = true;
        self
    }

    /// The tombstone this sign-out records, given the stored session of a
    /// [`SignOutTarget::Session`] target (`None` for a session without `sid`
    /// or not stored).
    pub fn tombstone(&self, session: Option<&Session>) -> Option<Tombstone> {
        let selector = match &self.target {
            SignOutTarget::Lookup(lookup) => lookup.clone(),
            SignOutTarget::Session(_) => {
                let s = session?;
                SessionLookup::ByProviderSession {
                    iss: s.iss.clone(),
                    sid: s.sid.clone()?,
                }
            }
        };
        Some(Tombstone::new(
            selector,
            self.logged_out_at,
            self.tombstone_expires_at,
        ))
    }
}

/// What a [`Store::sign_out`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignOutOutcome {
    /// The sign-out is stored: these live sessions were removed (each with
    /// its partition and index entries). Empty when none matched.
    SignedOut {
        /// Ids of the live sessions removed.
        removed: Vec<SessionId>,
        /// Token-cache entries (access, refresh and ID tokens, accounts,
        /// app metadata) that left the store with those sessions'
        /// partitions: the entries of the live sessions removed, counted
        /// in the same step that removed them.
        entries_removed: u64,
    },
    /// The request's `jti` was recorded already: nothing was changed.
    Replayed,
}

/// The order-based sign-out behind the default [`Store::sign_out`], for
/// stores that cannot make it one atomic step (and for store steps that span
/// several shards). Each step is one store call, in an order such that a
/// crash (or an error) anywhere leaves a state the retry of the same request
/// completes:
///
/// 1. the replay check ([`Store::is_jti_recorded`]), which writes nothing
///    that counts;
/// 2. the tombstone: from here on, sessions it covers are refused by
///    `put_session` and by `get_session`, even while their rows remain;
/// 3. the removal of each session (its partition and index entries with it);
/// 4. the replay record, last: until it is stored, a retry is not a replay
///    and does steps 2–4 again.
///
/// Two identical requests racing each other may both carry out the
/// sign-out; both are told it happened, which it did.
///
/// # Errors
/// The first store error, with the steps before it done (all of them idempotent).
pub async fn sign_out_in_order<S: Store + ?Sized>(
    store: &S,
    request: &SignOutRequest,
) -> Result<SignOutOutcome, StoreError> {
    if let Some(j) = &request.jti
        && store.is_jti_recorded(&j.iss, &j.jti).await?
    {
        return Ok(SignOutOutcome::Replayed);
    }
    let mut removed = Vec::new();
    let mut entries_removed = 0;
    match &request.target {
        SignOutTarget::Session(id) => {
            // `None` also for a session a tombstone covers already (an
            // earlier attempt got that far): it is removed all the same.
            let session = store.get_session(id).await?;
            if request.only_if_found && session.is_none() {
                return Ok(SignOutOutcome::SignedOut {
                    removed,
                    entries_removed,
                });
            }
            if let Some(t) = request.tombstone(session.as_ref()) {
                store.put_tombstone(&t).await?;
            }
            let entries = partition_len(store, id).await?;
            if store.remove_session(id).await?.is_some() {
                removed.push(id.clone());
                entries_removed += entries;
            }
        }
        SignOutTarget::Lookup(lookup) => {
            if request.only_if_found && store.find_sessions(lookup).await?.is_empty() {
                return Ok(SignOutOutcome::SignedOut {
                    removed,
                    entries_removed,
                });
            }
            if let Some(t) = request.tombstone(None) {
                store.put_tombstone(&t).await?;
            }
            // Looked up after the tombstone: a sign-in either sees the
            // tombstone, or stored its session before it and is found here.
            for id in store.find_sessions(lookup).await? {
                let entries = partition_len(store, &id).await?;
                if store.remove_session(&id).await?.is_some() {
                    removed.push(id);
                    entries_removed += entries;
                }
            }
        }
    }
    if let Some(j) = &request.jti {
        store.record_jti(&j.iss, &j.jti, j.expires_at).await?;
    }
    Ok(SignOutOutcome::SignedOut {
        removed,
        entries_removed,
    })
}

/// How many entries the partition of session `id` holds (read just before
/// the order-based sign-out removes it; a count, not part of its atomicity).
pub(crate) async fn partition_len<S: Store + ?Sized>(
    store: &S,
    id: &SessionId,
) -> Result<u64, StoreError> {
    let key = PartitionKey::Session(id.clone());
    Ok(store
        .get_partition(&key)
        .await?
        .map_or(0, |p| u64::try_from(p.entries.len()).unwrap_or(u64::MAX)))
}

/// Counts for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Live sessions.
    pub sessions: u64,
    /// Partitions (session and app).
    pub partitions: u64,
    /// Cache entries in all partitions.
    pub entries: u64,
    /// Live tombstones.
    pub tombstones: u64,
}

/// Where sessions live.
///
/// # Contract
///
/// Every implementation passes the conformance suite in the
/// `idweb-store-conformance` crate. In short:
///
/// - [`put_session`](Store::put_session) inserts or replaces a session and its
///   index entries `(iss, sid)` and `(iss, sub)` atomically: a reader sees the
///   session and its index entries together or not at all.
/// - [`get_session`](Store::get_session) returns `None` for an unknown id,
///   for a session whose `expires_at` has passed (by the store's clock), and
///   for a session a live [`Tombstone`] covers, even while its rows are still
///   stored (checked in the same read).
/// - [`put_session`](Store::put_session) is refused with
///   [`StoreError::SignedOut`] when a live [`Tombstone`] covers the session.
/// - [`remove_session`](Store::remove_session) removes the session, its index
///   entries and its token-cache partition atomically and returns the session;
///   removing a missing session is not an error.
/// - [`write_partition`](Store::write_partition) on a session partition is
///   refused with [`StoreError::SignedOut`] unless the session exists (live)
///   at the moment of the write, checked atomically with the write: a refresh
///   that finishes after the session was signed out cannot write tokens back.
///   With `expected_version`, it is refused with [`StoreError::Conflict`]
///   when the version differs. Each write adds one to the version.
/// - [`record_jti`](Store::record_jti) is an atomic test-and-set: exactly one
///   of concurrent callers with the same `(iss, jti)` gets `true`.
/// - [`sign_out`](Store::sign_out) carries out a whole sign-out (replay
///   check and record, tombstone, removals) so that a crash leaves either
///   nothing or all of it — or, for the default implementation, a state its
///   retry completes.
/// - Tombstones and jti records stop counting at their `expires_at`.
/// - [`find_sessions`](Store::find_sessions) returns the ids of live sessions
///   matching the lookup, at a cost proportional to the number of matches,
///   not to the size of the store.
/// - Errors of the backend are [`StoreError::Unavailable`] (never a panic, never
///   a silent success).
#[async_trait]
pub trait Store: Debug + Send + Sync + 'static {
    /// Inserts or replaces `session` and its index entries.
    async fn put_session(&self, session: &Session) -> Result<(), StoreError>;

    /// The live session with this id, if any.
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// [`get_session`](Store::get_session) and, where the store reads it in
    /// the same step at little cost, the version of the session's partition
    /// ([`partition_version`](Store::partition_version) of
    /// `PartitionKey::Session(id)`), read in the same snapshot: the request
    /// path then checks its decoded tokens without a second read. The
    /// version is `None` when not read — the default, which only reads the
    /// session; a store overriding this returns `Some(None)` for a partition
    /// without entries.
    async fn get_session_and_partition_version(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Session, Option<Option<u64>>)>, StoreError> {
        Ok(self.get_session(id).await?.map(|s| (s, None)))
    }

    /// Removes the session, its index entries and its partition; returns the
    /// session if it existed.
    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Ids of the live sessions matching `lookup`.
    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError>;

    /// The number of live sessions (for statistics; may be approximate on
    /// distributed stores).
    async fn session_count(&self) -> Result<u64, StoreError>;

    /// Up to `limit` live sessions whose ids sort after `after`, in id order
    /// (for listing tools).
    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError>;

    /// Every entry of a partition; `None` when it has none.
    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError>;

    /// The current version of a partition (`None` when it has no entries):
    /// the same number [`get_partition`](Store::get_partition) would return,
    /// without reading the entries. The request path calls it on every cache
    /// hit to check that its decoded view of the partition is still current,
    /// so stores should answer it with one indexed read (or from memory that
    /// is kept coherent). The default reads the whole partition.
    async fn partition_version(&self, key: &PartitionKey) -> Result<Option<u64>, StoreError> {
        Ok(self.get_partition(key).await?.map(|p| p.version))
    }

    /// Applies `write` atomically; returns the new version.
    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError>;

    /// Removes a partition; returns whether it existed.
    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError>;

    /// Records a tombstone (replacing one with the same selector if the new one is later).
    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError>;

    /// The live tombstone for `selector`, if any.
    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError>;

    /// Records that `(iss, jti)` was seen, until `expires_at`; `true` the first
    /// time, `false` when it was already recorded (a replay).
    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError>;

    /// Whether `(iss, jti)` is recorded (and its record has not expired),
    /// without recording it.
    ///
    /// The default asks [`record_jti`](Store::record_jti) to record it with
    /// an expiry long past: by the contract such a record never counts, so
    /// the call only tests (it answers `false` exactly when a live record
    /// exists). Stores should answer it with one plain read.
    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        Ok(!self.record_jti(iss, jti, i64::MIN).await?)
    }

    /// Carries out a whole sign-out as one atomic step: when the request
    /// carries a `jti` that is recorded already, nothing changes and the
    /// answer is [`SignOutOutcome::Replayed`]; otherwise the tombstone, the
    /// removal of every selected session with its partition and index
    /// entries, and the `jti` record are stored together, and the answer
    /// lists the live sessions removed. With
    /// [`only_if_found`](SignOutRequest::only_if_found), nothing at all is
    /// written when no live session matches.
    ///
    /// # Atomicity
    ///
    /// An implementation that overrides this method stores all of it or
    /// none of it (one transaction, one lock, one script): a crash or an
    /// error leaves either the state before the call, which the caller's
    /// retry (a provider resending the logout token) completes, or the
    /// whole sign-out. An `Ok` answer means the whole sign-out is stored
    /// (as durably as the store stores anything). An error means it may or
    /// may not have happened; retrying the same request is always safe.
    ///
    /// The default implementation, for stores that cannot do that, is
    /// [`sign_out_in_order`]: crash-safe by its order rather than atomic
    /// (replay check, tombstone, removals, replay record last), so a crash
    /// anywhere leaves a state whose retry completes the sign-out, and in
    /// between the tombstone already keeps the sessions off the request
    /// path.
    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        sign_out_in_order(self, request).await
    }

    /// Forgets a recorded `(iss, jti)` (when the sign-out it announced could
    /// not be carried out, so that the provider's retry is not taken for a replay).
    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError>;

    /// Counts of what the store holds.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Takes the lock `name` for at most `ttl` unless someone else holds it
    /// (an expired lock counts as free). Returns the token that releases it,
    /// or `None` when it is held. Atomic across every user of the store (all
    /// instances of an app): idweb uses it so that at most one refresh-token
    /// redemption per partition runs at a time.
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError>;

    /// Releases a lock taken with [`try_lock`](Store::try_lock), if `token`
    /// still holds it (a lock that expired and was taken by someone else is
    /// left alone).
    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError>;

    /// Deletes what has expired by the store's clock and still takes room:
    /// sessions (with their partitions and index entries), tombstones, jti
    /// records, locks. Returns how many records were deleted. Never deletes
    /// anything live. Apps run it periodically (`idweb-axum` does, every
    /// `IDWEB_PURGE_INTERVAL`).
    ///
    /// The default does nothing and returns 0: for backends that expire
    /// records by themselves (Redis key TTLs).
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Whether the store can serve requests now, for readiness probes.
    ///
    /// The default makes one cheap read (it looks up a session id that
    /// exists nowhere) and passes on its error. A store that keeps an
    /// in-process cache coherent through a subscription also fails while
    /// the subscription is down.
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.get_session(&SessionId::generate()).await.map(|_| ())
    }
}

/// Proof of holding a lock of the store (see [`Store::try_lock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken(String);

impl LockToken {
    /// A new random token.
    pub fn generate() -> Self {
        Self(crate::crypto::random_token())
    }

    /// Wraps a token read back from a backend.
    pub fn from_string(token: String) -> Self {
        Self(token)
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A store in process memory: for development, tests and single-instance apps
/// that accept losing sessions on restart.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
    clock: Arc<dyn Clock>,
}

/// The memory store's maps: hashbrown with foldhash (keys are random
/// session ids or values from verified tokens; SipHash was a visible part of
/// every request in profiles), looked up by borrowed keys where it matters.
#[derive(Debug, Default)]
struct MemoryInner {
    sessions: hashbrown::HashMap<SessionId, Session>,
    index: hashbrown::HashMap<SessionLookup, HashSet<SessionId>>,
    partitions: hashbrown::HashMap<PartitionKey, (u64, BTreeMap<String, StoredEntry>)>,
    tombstones: hashbrown::HashMap<SessionLookup, Tombstone>,
    jtis: hashbrown::HashMap<(String, String), i64>,
    locks: hashbrown::HashMap<String, (LockToken, std::time::SystemTime)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store using the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store using `clock` to decide expiry.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemoryInner::default())),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the store holds, expired records included until
    /// [`purge_expired`](Store::purge_expired) deletes them (for
    /// diagnostics and tests; [`Store::stats`] counts live records only).
    pub fn held(&self) -> MemoryHeld {
        let inner = self.lock();
        MemoryHeld {
            sessions: inner.sessions.len(),
            partitions: inner.partitions.len(),
            tombstones: inner.tombstones.len(),
            jtis: inner.jtis.len(),
        }
    }
}

/// The records a [`MemoryStore`] holds, expired ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryHeld {
    /// Sessions.
    pub sessions: usize,
    /// Token-cache partitions.
    pub partitions: usize,
    /// Tombstones.
    pub tombstones: usize,
    /// Logout-token ids (`jti`) seen.
    pub jtis: usize,
}

/// The lookups that find `s` (by subject, and by provider session when it
/// has one), borrowed from it.
fn lookups_of(s: &Session) -> impl Iterator<Item = LookupRef<'_>> {
    let by_sub = LookupRef {
        by_sid: false,
        iss: &s.iss,
        id: &s.sub,
    };
    let by_sid = s.sid.as_deref().map(|sid| LookupRef {
        by_sid: true,
        iss: &s.iss,
        id: sid,
    });
    std::iter::once(by_sub).chain(by_sid)
}

impl MemoryInner {
    fn unindex(&mut self, s: &Session) {
        for key in lookups_of(s) {
            if let Some(set) = self.index.get_mut(&key) {
                set.remove(&s.id);
                if set.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
    }

    fn remove(&mut self, id: &SessionId) -> Option<Session> {
        self.remove_counted(id).map(|(s, _)| s)
    }

    /// [`remove`](Self::remove), with the number of entries its partition held.
    fn remove_counted(&mut self, id: &SessionId) -> Option<(Session, u64)> {
        let s = self.sessions.remove(id)?;
        self.unindex(&s);
        let entries = self
            .partitions
            .remove(&PartitionKey::Session(id.clone()))
            .map_or(0, |(_, e)| u64::try_from(e.len()).unwrap_or(u64::MAX));
        Some((s, entries))
    }

    fn live_session(&self, id: &SessionId, now: i64) -> bool {
        self.sessions.get(id).is_some_and(|s| !s.is_expired(now))
    }

    /// Records `tombstone` unless a later sign-out of the same selector is kept.
    fn put_tombstone(&mut self, tombstone: &Tombstone) {
        let keep_old = self
            .tombstones
            .get(&tombstone.selector)
            .is_some_and(|old| old.logged_out_at > tombstone.logged_out_at);
        if !keep_old {
            self.tombstones
                .insert(tombstone.selector.clone(), tombstone.clone());
        }
    }

    /// Whether `(iss, jti)` is recorded and unexpired. One lookup: expired
    /// records are left for [`Store::purge_expired`], so that a logout never
    /// costs a scan of every record (it did, and it showed in profiles).
    fn jti_recorded(&self, iss: &str, jti: &str, now: i64) -> bool {
        self.jtis
            .get(&JtiRef(iss, jti))
            .is_some_and(|exp| *exp > now)
    }

    /// The version of partition `key` while it holds entries.
    fn version_of(&self, key: &PartitionKey) -> Option<u64> {
        self.partitions
            .get(key)
            .and_then(|(version, entries)| (!entries.is_empty()).then_some(*version))
    }

    /// The session `id` as a read returns it: `None` when absent, signed
    /// out (a tombstone covers it, its rows not yet removed) or ended (then
    /// removed now).
    fn readable(&mut self, id: &SessionId, now: i64) -> Option<Session> {
        match self.sessions.get(id) {
            Some(s) if s.is_expired(now) => {
                self.remove(id);
                None
            }
            Some(s) if self.tombstoned(s, now) => None,
            Some(s) => Some(s.clone()),
            None => None,
        }
    }

    /// Whether a live tombstone covers `session` (asked on every read of a
    /// session: no allocation).
    fn tombstoned(&self, session: &Session, now: i64) -> bool {
        if self.tombstones.is_empty() {
            return false;
        }
        lookups_of(session).any(|k| {
            self.tombstones
                .get(&k)
                .is_some_and(|t| t.expires_at > now && t.covers(session))
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let now = self.clock.unix_now();
        let mut inner = self.lock();
        if inner.tombstoned(session, now) {
            return Err(StoreError::SignedOut);
        }
        // Replacing a session keeps its partition.
        if let Some(old) = inner.sessions.remove(&session.id) {
            inner.unindex(&old);
        }
        for key in lookups_of(session) {
            inner
                .index
                .entry(key.to_owned())
                .or_default()
                .insert(session.id.clone());
        }
        inner.sessions.insert(session.id.clone(), session.clone());
        Ok(())
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let now = self.clock.unix_now();
        Ok(self.lock().readable(id, now))
    }

    /// Under the store's one lock: the session and its partition's version.
    async fn get_session_and_partition_version(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Session, Option<Option<u64>>)>, StoreError> {
        let now = self.clock.unix_now();
        let mut inner = self.lock();
        let Some(session) = inner.readable(id, now) else {
            return Ok(None);
        };
        let version = inner.version_of(&PartitionKey::Session(id.clone()));
        Ok(Some((session, Some(version))))
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().remove(id))
    }

    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        let now = self.clock.unix_now();
        let inner = self.lock();
        Ok(inner
            .index
            .get(lookup)
            .map(|ids| {
                ids.iter()
                    .filter(|id| inner.sessions.get(*id).is_some_and(|s| !s.is_expired(now)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let now = self.clock.unix_now();
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| !s.is_expired(now))
            .count() as u64)
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let now = self.clock.unix_now();
        let inner = self.lock();
        let mut all: Vec<&Session> = inner
            .sessions
            .values()
            .filter(|s| !s.is_expired(now))
            .filter(|s| after.is_none_or(|a| s.id.secret() > a.secret()))
            .collect();
        all.sort_by(|a, b| a.id.secret().cmp(b.id.secret()));
        Ok(all.into_iter().take(limit).cloned().collect())
    }

    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        let now = self.clock.unix_now();
        let inner = self.lock();
        if let Some(id) = key.session_id()
            && !inner.live_session(id, now)
        {
            return Ok(None);
        }
        Ok(inner.partitions.get(key).and_then(|(version, entries)| {
            (!entries.is_empty()).then(|| StoredPartition {
                entries: entries.values().cloned().collect(),
                version: *version,
            })
        }))
    }

    async fn partition_version(&self, key: &PartitionKey) -> Result<Option<u64>, StoreError> {
        let now = self.clock.unix_now();
        let inner = self.lock();
        if let Some(id) = key.session_id()
            && !inner.live_session(id, now)
        {
            return Ok(None);
        }
        Ok(inner.version_of(key))
    }

    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        let now = self.clock.unix_now();
        let mut inner = self.lock();
        if let Some(id) = key.session_id()
            && !inner.live_session(id, now)
        {
            return Err(StoreError::SignedOut);
        }
        let (version, entries) = inner.partitions.entry(key.clone()).or_default();
        if let Some(expected) = write.expected_version
            && expected != *version
        {
            return Err(StoreError::Conflict {
                expected,
                found: *version,
            });
        }
        for k in &write.remove {
            entries.remove(k);
        }
        for e in write.upsert {
            entries.insert(e.cache_key.clone(), e);
        }
        *version += 1;
        Ok(*version)
    }

    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .partitions
            .remove(key)
            .is_some_and(|(_, entries)| !entries.is_empty()))
    }

    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError> {
        self.lock().put_tombstone(tombstone);
        Ok(())
    }

    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        let now = self.clock.unix_now();
        Ok(self
            .lock()
            .tombstones
            .get(selector)
            .filter(|t| t.expires_at > now)
            .cloned())
    }

    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let now = self.clock.unix_now();
        let mut inner = self.lock();
        if inner.jti_recorded(iss, jti, now) {
            return Ok(false);
        }
        inner
            .jtis
            .insert((iss.to_string(), jti.to_string()), expires_at);
        Ok(true)
    }

    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        let now = self.clock.unix_now();
        Ok(self.lock().jti_recorded(iss, jti, now))
    }

    /// Atomic: everything happens under the store's one lock.
    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        let now = self.clock.unix_now();
        let mut inner = self.lock();
        if let Some(j) = &request.jti
            && inner.jti_recorded(&j.iss, &j.jti, now)
        {
            return Ok(SignOutOutcome::Replayed);
        }
        let (tombstone, ids) = match &request.target {
            SignOutTarget::Session(id) => {
                (request.tombstone(inner.sessions.get(id)), vec![id.clone()])
            }
            SignOutTarget::Lookup(lookup) => (
                request.tombstone(None),
                inner
                    .index
                    .get(lookup)
                    .map(|ids| ids.iter().cloned().collect())
                    .unwrap_or_default(),
            ),
        };
        if request.only_if_found && !ids.iter().any(|id| inner.live_session(id, now)) {
            return Ok(SignOutOutcome::SignedOut {
                removed: Vec::new(),
                entries_removed: 0,
            });
        }
        if let Some(t) = &tombstone {
            inner.put_tombstone(t);
        }
        let mut removed = Vec::new();
        let mut entries_removed = 0u64;
        for id in ids {
            if let Some((s, entries)) = inner.remove_counted(&id)
                && !s.is_expired(now)
            {
                removed.push(id);
                entries_removed += entries;
            }
        }
        if let Some(j) = &request.jti {
            inner
                .jtis
                .insert((j.iss.clone(), j.jti.clone()), j.expires_at);
        }
        Ok(SignOutOutcome::SignedOut {
            removed,
            entries_removed,
        })
    }

    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.lock().jtis.remove(&JtiRef(iss, jti));
        Ok(())
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        if inner.locks.get(name).is_some_and(|(_, until)| *until > now) {
            return Ok(None);
        }
        let token = LockToken::generate();
        inner
            .locks
            .insert(name.to_string(), (token.clone(), now + ttl));
        Ok(Some(token))
    }

    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.locks.get(name).is_some_and(|(held, _)| held == token) {
            inner.locks.remove(name);
        }
        Ok(())
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let (now, now_time) = (self.clock.unix_now(), self.clock.now());
        let mut inner = self.lock();
        let expired: Vec<SessionId> = inner
            .sessions
            .values()
            .filter(|s| s.is_expired(now))
            .map(|s| s.id.clone())
            .collect();
        let mut purged = 0usize;
        for id in &expired {
            purged += usize::from(inner.remove(id).is_some());
        }
        let before = inner.tombstones.len() + inner.jtis.len() + inner.locks.len();
        inner.tombstones.retain(|_, t| t.expires_at > now);
        inner.jtis.retain(|_, exp| *exp > now);
        inner.locks.retain(|_, (_, until)| *until > now_time);
        purged += before - (inner.tombstones.len() + inner.jtis.len() + inner.locks.len());
        Ok(purged as u64)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.clock.unix_now();
        let inner = self.lock();
        let live = |k: &PartitionKey| k.session_id().is_none_or(|id| inner.live_session(id, now));
        let parts: Vec<usize> = inner
            .partitions
            .iter()
            .filter(|(k, (_, e))| !e.is_empty() && live(k))
            .map(|(_, (_, e))| e.len())
            .collect();
        Ok(StoreStats {
            sessions: inner
                .sessions
                .values()
                .filter(|s| !s.is_expired(now))
                .count() as u64,
            partitions: parts.len() as u64,
            entries: parts.iter().sum::<usize>() as u64,
            tombstones: inner
                .tombstones
                .values()
                .filter(|t| t.expires_at > now)
                .count() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    /// The borrowed keys the memory store looks up with hash and compare as
    /// the owned keys they stand for (a lookup by a key that hashed
    /// differently would miss: a tombstone or a replay not found).
    #[test]
    fn borrowed_keys_hash_and_compare_as_the_owned_ones() {
        let hasher = hashbrown::DefaultHashBuilder::default();
        let by_sid = SessionLookup::ByProviderSession {
            iss: "https://idp".into(),
            sid: "s1".into(),
        };
        let by_sub = SessionLookup::BySubject {
            iss: "https://idp".into(),
            sub: "s1".into(),
        };
        for key in [&by_sid, &by_sub] {
            let r = key.as_ref();
            assert_eq!(&r.to_owned(), key);
            assert_eq!(hasher.hash_one(key), hasher.hash_one(r));
            assert!(hashbrown::Equivalent::equivalent(&r, key));
        }
        assert!(!hashbrown::Equivalent::equivalent(
            &by_sid.as_ref(),
            &by_sub
        ));
        let jti = ("https://idp".to_string(), "j1".to_string());
        assert_eq!(
            hasher.hash_one(&jti),
            hasher.hash_one(JtiRef("https://idp", "j1"))
        );
        assert!(hashbrown::Equivalent::equivalent(
            &JtiRef("https://idp", "j1"),
            &jti
        ));
        assert!(!hashbrown::Equivalent::equivalent(
            &JtiRef("https://idp", "j2"),
            &jti
        ));
    }

    /// A session is refused by a tombstone of its subject or of its provider
    /// session, found by the borrowed lookups.
    #[tokio::test]
    async fn a_tombstone_by_subject_or_by_sid_hides_the_session() {
        for selector in [
            SessionLookup::BySubject {
                iss: "https://idp".into(),
                sub: "alice".into(),
            },
            SessionLookup::ByProviderSession {
                iss: "https://idp".into(),
                sid: "sid-1".into(),
            },
        ] {
            let store = MemoryStore::new();
            let now = SystemClock.unix_now();
            let session = Session::new(
                "https://idp",
                "alice",
                Some("sid-1".into()),
                crate::Secret::new("t"),
                SystemClock.unix_micros(),
                now + 3600,
            );
            store.put_session(&session).await.unwrap();
            assert!(store.get_session(&session.id).await.unwrap().is_some());
            store
                .put_tombstone(&Tombstone {
                    selector: selector.clone(),
                    logged_out_at: SystemClock.unix_micros() + 1,
                    expires_at: now + 60,
                })
                .await
                .unwrap();
            assert!(
                store.get_session(&session.id).await.unwrap().is_none(),
                "{selector:?}"
            );
        }
    }
}
