//! Observability: the metrics idweb records through the [`metrics`] facade
//! (the app installs a recorder, e.g. a Prometheus exporter; without one
//! every record is a no-op), the store latency wrapper [`MeteredStore`],
//! and the audit trail of sign-outs ([`SignOutAudit`], on the tracing
//! target [`AUDIT_TARGET`]). `docs/OBSERVABILITY.md` lists every metric and
//! audit field.
//!
//! Label values are `&'static str` from fixed sets: never a user, a
//! session, an issuer or a URL.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lc_rs::hmac;
use metrics::{Counter, Histogram};

use crate::crypto::{hex, random_bytes};
use crate::events::SignOutPath;
use crate::session::{Session, SessionId};
use crate::store::{
    LockToken, PartitionKey, PartitionWrite, SessionLookup, SignOutOutcome, SignOutRequest, Store,
    StoreError, StoreStats, StoredPartition, Tombstone,
};
use crate::time::{Clock, SystemClock};

/// The `tracing` target of audit events: one event per sign-out.
pub const AUDIT_TARGET: &str = "idweb::audit";

/// Metric names (Prometheus conventions: `_total` counters, `_seconds`
/// histograms).
pub(crate) mod names {
    /// Completed sign-ins.
    pub(crate) const SIGN_INS: &str = "idweb_sign_ins_total";
    /// Failed sign-ins, by `reason`.
    pub(crate) const SIGN_IN_FAILURES: &str = "idweb_sign_in_failures_total";
    /// Access-token requests for a signed-in user, by `result`.
    pub(crate) const TOKEN_REQUESTS: &str = "idweb_token_requests_total";
    /// Waits for a refresh already in flight, by `scope` (`process`, `store`).
    pub(crate) const REFRESH_WAITS: &str = "idweb_token_refresh_waits_total";
    /// Sign-outs, by `path` and `outcome`.
    pub(crate) const SIGN_OUTS: &str = "idweb_sign_outs_total";
    /// Sessions removed by sign-outs, by `path`.
    pub(crate) const SESSIONS_REMOVED: &str = "idweb_sign_out_sessions_removed_total";
    pub(crate) const ENTRIES_REMOVED: &str = "idweb_sign_out_entries_removed_total";
    /// Logout requests refused before any eviction, by `reason`.
    pub(crate) const LOGOUT_REFUSED: &str = "idweb_logout_requests_refused_total";
    /// Logout tokens whose `jti` was seen before.
    pub(crate) const JTI_REPLAYS: &str = "idweb_logout_token_replays_total";
    /// Store operation latency, by `operation` and `backend`.
    pub(crate) const STORE_DURATION: &str = "idweb_store_operation_duration_seconds";
    /// Store operations that failed, by `operation` and `backend`.
    pub(crate) const STORE_ERRORS: &str = "idweb_store_operation_errors_total";
}

/// A counter registered once (with the recorder installed at that time), so
/// that a hot path increments it without building a key.
pub(crate) fn counter(name: &'static str, label: &'static str, value: &'static str) -> Counter {
    metrics::counter!(name, label => value)
}

/// Counts one occurrence (for paths that are not hot: failures, sign-outs).
pub(crate) fn count(name: &'static str, label: &'static str, value: &'static str) {
    metrics::counter!(name, label => value).increment(1);
}

/// The store operations [`MeteredStore`] times (the `operation` label).
#[derive(Clone, Copy)]
enum Op {
    PutSession,
    GetSession,
    RemoveSession,
    FindSessions,
    SessionCount,
    ListSessions,
    GetPartition,
    WritePartition,
    RemovePartition,
    PutTombstone,
    GetTombstone,
    RecordJti,
    IsJtiRecorded,
    SignOut,
    ForgetJti,
    Stats,
    TryLock,
    Unlock,
    PurgeExpired,
    CheckReady,
}

const OPS: [Op; 20] = [
    Op::PutSession,
    Op::GetSession,
    Op::RemoveSession,
    Op::FindSessions,
    Op::SessionCount,
    Op::ListSessions,
    Op::GetPartition,
    Op::WritePartition,
    Op::RemovePartition,
    Op::PutTombstone,
    Op::GetTombstone,
    Op::RecordJti,
    Op::IsJtiRecorded,
    Op::SignOut,
    Op::ForgetJti,
    Op::Stats,
    Op::TryLock,
    Op::Unlock,
    Op::PurgeExpired,
    Op::CheckReady,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::PutSession => "put_session",
            Op::GetSession => "get_session",
            Op::RemoveSession => "remove_session",
            Op::FindSessions => "find_sessions",
            Op::SessionCount => "session_count",
            Op::ListSessions => "list_sessions",
            Op::GetPartition => "get_partition",
            Op::WritePartition => "write_partition",
            Op::RemovePartition => "remove_partition",
            Op::PutTombstone => "put_tombstone",
            Op::GetTombstone => "get_tombstone",
            Op::RecordJti => "record_jti",
            Op::IsJtiRecorded => "is_jti_recorded",
            Op::SignOut => "sign_out",
            Op::ForgetJti => "forget_jti",
            Op::Stats => "stats",
            Op::TryLock => "try_lock",
            Op::Unlock => "unlock",
            Op::PurgeExpired => "purge_expired",
            Op::CheckReady => "check_ready",
        }
    }
}

/// The backend label of a store URL scheme: one of a fixed set (`memory`,
/// `sqlite`, `redis`, `postgres`), else `other`.
pub fn store_backend_label(scheme: &str) -> &'static str {
    match scheme {
        "memory" => "memory",
        "sqlite" => "sqlite",
        "redis" | "rediss" | "redis+cluster" | "redis-cluster" => "redis",
        "postgres" | "postgresql" => "postgres",
        _ => "other",
    }
}

/// A [`Store`] that records the latency of each operation of the store it
/// wraps in the histogram `idweb_store_operation_duration_seconds`
/// (labels `operation`, `backend`) and counts its failures in
/// `idweb_store_operation_errors_total`; otherwise it only forwards.
///
/// The metric handles are registered when the wrapper is made, with the
/// recorder installed then: install the recorder first. The per-request
/// version check of the token cache ([`Store::partition_version`]) is
/// forwarded untimed, so that a cache hit costs no clock reads.
///
/// ```
/// use std::sync::Arc;
/// use idweb::{MemoryStore, MeteredStore, Store};
///
/// let store: Arc<dyn Store> = Arc::new(MeteredStore::new(Arc::new(MemoryStore::new()), "memory"));
/// # let _ = store;
/// ```
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    backend: &'static str,
    durations: Vec<Histogram>,
    errors: Vec<Counter>,
}

impl fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredStore")
            .field("backend", &self.backend)
            .field("inner", &self.inner)
            .finish()
    }
}

impl MeteredStore {
    /// Times the operations of `inner`, labelled `backend` (use a fixed
    /// name such as [`store_backend_label`] gives).
    pub fn new(inner: Arc<dyn Store>, backend: &'static str) -> Self {
        let durations = OPS
            .iter()
            .map(|op| {
                metrics::histogram!(names::STORE_DURATION, "operation" => op.name(), "backend" => backend)
            })
            .collect();
        let errors = OPS
            .iter()
            .map(|op| {
                metrics::counter!(names::STORE_ERRORS, "operation" => op.name(), "backend" => backend)
            })
            .collect();
        Self {
            inner,
            backend,
            durations,
            errors,
        }
    }

    /// The store underneath.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    async fn timed<T>(
        &self,
        op: Op,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = f.await;
        let i = op as usize;
        if let Some(h) = self.durations.get(i) {
            h.record(start.elapsed());
        }
        if result.is_err()
            && let Some(c) = self.errors.get(i)
        {
            c.increment(1);
        }
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        self.timed(Op::PutSession, self.inner.put_session(session))
            .await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.timed(Op::GetSession, self.inner.get_session(id)).await
    }

    async fn get_session_and_partition_version(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Session, Option<Option<u64>>)>, StoreError> {
        self.timed(
            Op::GetSession,
            self.inner.get_session_and_partition_version(id),
        )
        .await
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.timed(Op::RemoveSession, self.inner.remove_session(id))
            .await
    }

    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        self.timed(Op::FindSessions, self.inner.find_sessions(lookup))
            .await
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        self.timed(Op::SessionCount, self.inner.session_count())
            .await
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.timed(Op::ListSessions, self.inner.list_sessions(after, limit))
            .await
    }

    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        self.timed(Op::GetPartition, self.inner.get_partition(key))
            .await
    }

    // The hot path's version check: forwarded as is (the inner store's own
    // future, no second allocation, no clock read).
    fn partition_version<'life0, 'life1, 'async_trait>(
        &'life0 self,
        key: &'life1 PartitionKey,
    ) -> Pin<Box<dyn Future<Output = Result<Option<u64>, StoreError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.partition_version(key)
    }

    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        self.timed(Op::WritePartition, self.inner.write_partition(key, write))
            .await
    }

    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        self.timed(Op::RemovePartition, self.inner.remove_partition(key))
            .await
    }

    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError> {
        self.timed(Op::PutTombstone, self.inner.put_tombstone(tombstone))
            .await
    }

    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.timed(Op::GetTombstone, self.inner.get_tombstone(selector))
            .await
    }

    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        self.timed(Op::RecordJti, self.inner.record_jti(iss, jti, expires_at))
            .await
    }

    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        self.timed(Op::IsJtiRecorded, self.inner.is_jti_recorded(iss, jti))
            .await
    }

    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        self.timed(Op::SignOut, self.inner.sign_out(request)).await
    }

    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.timed(Op::ForgetJti, self.inner.forget_jti(iss, jti))
            .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.timed(Op::Stats, self.inner.stats()).await
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.timed(Op::TryLock, self.inner.try_lock(name, ttl))
            .await
    }

    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        self.timed(Op::Unlock, self.inner.unlock(name, token)).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.timed(Op::PurgeExpired, self.inner.purge_expired())
            .await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        self.timed(Op::CheckReady, self.inner.check_ready()).await
    }
}

/// How a sign-out ended, as the audit trail and the `outcome` label say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditOutcome {
    /// The eviction is stored (possibly of no session).
    SignedOut,
    /// A back-channel logout token whose `jti` was used before: nothing changed.
    Replayed,
    /// The store failed: the sign-out may not have happened (the answer
    /// was an error, and the provider or the user can retry).
    Error,
}

impl AuditOutcome {
    /// The outcome's name (`signed_out`, `replayed`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignedOut => "signed_out",
            Self::Replayed => "replayed",
            Self::Error => "error",
        }
    }
}

/// One sign-out, as the audit trail records it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AuditRecord<'a> {
    /// How the sign-out reached the app.
    pub path: SignOutPath,
    /// The issuer.
    pub iss: &'a str,
    /// The user's subject, when known.
    pub sub: Option<&'a str>,
    /// The provider session, when known.
    pub sid: Option<&'a str>,
    /// Sessions removed.
    pub sessions_removed: usize,
    /// Token-cache entries removed with them.
    pub entries_removed: u64,
    /// How it ended.
    pub outcome: AuditOutcome,
}

impl<'a> AuditRecord<'a> {
    /// A record of `path` at `iss` with `outcome`, no subject or `sid`,
    /// and no session removed (see the `with_*` methods).
    pub fn new(path: SignOutPath, iss: &'a str, outcome: AuditOutcome) -> Self {
        Self {
            path,
            iss,
            sub: None,
            sid: None,
            sessions_removed: 0,
            entries_removed: 0,
            outcome,
        }
    }

    /// With the subject and the provider session.
    #[must_use]
    pub fn with_user(mut self, sub: Option<&'a str>, sid: Option<&'a str>) -> Self {
        self.sub = sub;
        self.sid = sid;
        self
    }

    /// With the number of sessions removed.
    #[must_use]
    pub fn with_sessions_removed(mut self, n: usize) -> Self {
        self.sessions_removed = n;
        self
    }

    /// With the number of token-cache entries removed.
    #[must_use]
    pub fn with_entries_removed(mut self, n: u64) -> Self {
        self.entries_removed = n;
        self
    }
}

/// The audit trail of sign-outs: [`record`](Self::record) writes one
/// `tracing` event on the target [`AUDIT_TARGET`] (`idweb::audit`) per
/// sign-out, and counts it in the sign-out metrics. The user's `sub` and
/// `sid` appear as keyed fingerprints (HMAC-SHA-256 under a key derived
/// from the app's cookie key, first 16 bytes in hex): the same user gives
/// the same fingerprint on every instance of the app, and the values
/// cannot be read back or guessed without the key. No token, session id or
/// secret is ever part of an event.
///
/// ```
/// use idweb::{AuditOutcome, AuditRecord, SignOutAudit, SignOutPath};
///
/// let audit = SignOutAudit::new(b"the app's cookie key", "instance-1");
/// audit.record(
///     &AuditRecord::new(SignOutPath::Operator, "https://idp.example", AuditOutcome::SignedOut)
///         .with_user(Some("alice"), None)
///         .with_sessions_removed(2)
///         .with_entries_removed(9),
/// );
/// assert_eq!(audit.fingerprint("alice").len(), 32);
/// assert_ne!(audit.fingerprint("alice"), "alice");
/// ```
#[derive(Clone)]
pub struct SignOutAudit {
    key: hmac::Key,
    instance: Arc<str>,
    clear: bool,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SignOutAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignOutAudit")
            .field("key", &"[redacted]")
            .field("instance", &self.instance)
            .field("identifiers_in_clear", &self.clear)
            .finish()
    }
}

/// The label that derives the fingerprint key from the app's secret.
const FINGERPRINT_KEY_LABEL: &[u8] = b"idweb audit fingerprint key v1";

impl SignOutAudit {
    /// An audit trail whose fingerprints are keyed by `secret` (the app's
    /// cookie key: every instance of the app has the same), naming this
    /// instance `instance`.
    pub fn new(secret: &[u8], instance: impl Into<String>) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            FINGERPRINT_KEY_LABEL,
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            instance: instance.into().into(),
            clear: false,
            clock: Arc::new(SystemClock),
        }
    }

    /// Writes `sub` and `sid` as they are rather than as fingerprints.
    /// Default `false`: they identify a person, and audit logs travel far.
    #[must_use]
    pub fn with_identifiers_in_clear(mut self, clear: bool) -> Self {
        self.clear = clear;
        self
    }

    /// The clock of the events' `at`. Default: the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The name of this instance in events.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The keyed fingerprint of `value` (32 hexadecimal digits).
    pub fn fingerprint(&self, value: &str) -> String {
        let tag = hmac::sign(&self.key, value.as_bytes());
        hex(tag.as_ref().get(..16).unwrap_or_default())
    }

    fn identifier(&self, value: Option<&str>) -> Option<String> {
        value.map(|v| {
            if self.clear {
                v.to_string()
            } else {
                self.fingerprint(v)
            }
        })
    }

    /// Writes the audit event of one sign-out, and counts it:
    /// `idweb_sign_outs_total{path, outcome}` and, for what it removed,
    /// `idweb_sign_out_sessions_removed_total{path}` and
    /// `idweb_sign_out_entries_removed_total{path}`.
    pub fn record(&self, r: &AuditRecord<'_>) {
        let path = r.path.as_str();
        metrics::counter!(names::SIGN_OUTS, "path" => path, "outcome" => r.outcome.as_str())
            .increment(1);
        if r.sessions_removed > 0 {
            metrics::counter!(names::SESSIONS_REMOVED, "path" => path)
                .increment(u64::try_from(r.sessions_removed).unwrap_or(u64::MAX));
        }
        if r.entries_removed > 0 {
            metrics::counter!(names::ENTRIES_REMOVED, "path" => path).increment(r.entries_removed);
        }
        // The fingerprints are two HMACs: computed only for a subscriber
        // that writes the event.
        if !tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
            return;
        }
        let sub = self.identifier(r.sub);
        let sid = self.identifier(r.sid);
        let at = self.clock.unix_now();
        tracing::info!(
            target: AUDIT_TARGET,
            event = "sign_out",
            at,
            path,
            iss = r.iss,
            sub = sub.as_deref(),
            sid = sid.as_deref(),
            sessions_removed = r.sessions_removed,
            entries_removed = r.entries_removed,
            outcome = r.outcome.as_str(),
            instance = &*self.instance,
            "sign-out"
        );
    }
}

/// A name for this instance: `$HOSTNAME` (the pod's name under
/// Kubernetes) when it is a short plain name, else a random one.
pub(crate) fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 64
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        })
        .unwrap_or_else(|| format!("idweb-{}", hex(&random_bytes::<4>())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_stable_and_not_the_value() {
        let a = SignOutAudit::new(b"key one", "i");
        let b = SignOutAudit::new(b"key two", "i");
        assert_eq!(a.fingerprint("alice"), a.fingerprint("alice"));
        assert_ne!(a.fingerprint("alice"), a.fingerprint("bob"));
        assert_ne!(a.fingerprint("alice"), b.fingerprint("alice"));
        assert!(!a.fingerprint("alice").contains("alice"));
        assert_eq!(a.identifier(Some("alice")), Some(a.fingerprint("alice")));
        let clear = a.clone().with_identifiers_in_clear(true);
        assert_eq!(clear.identifier(Some("alice")).as_deref(), Some("alice"));
        assert!(!format!("{a:?}").contains("key one"));
    }

    #[test]
    fn backend_labels_are_a_fixed_set() {
        assert_eq!(store_backend_label("rediss"), "redis");
        assert_eq!(store_backend_label("postgresql"), "postgres");
        assert_eq!(store_backend_label("https://evil/secret"), "other");
    }
}
