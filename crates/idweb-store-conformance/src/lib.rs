//! The conformance suite every idweb [`Store`] must pass.
//!
//! A store crate runs it with one line in its tests:
//!
//! ```no_run
//! idweb_store_conformance::store_conformance_tests!(|clock| async move {
//!     std::sync::Arc::new(idweb::MemoryStore::with_clock(clock)) as std::sync::Arc<dyn idweb::Store>
//! });
//! ```
//!
//! The factory gets a [`ManualClock`] and must return a store that uses it to
//! decide expiry, and that starts empty of the sessions the tests create
//! (tests use fresh random ids and subjects, so a shared backend is fine).
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idweb::{
    Clock, ManualClock, PartitionKey, PartitionWrite, Secret, Session, SessionId, SessionLookup,
    Store, StoreError, StoredEntry, Tombstone,
};

#[doc(hidden)]
pub use tokio;

/// Unique text for this test run, so tests sharing a backend do not collide.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", SessionId::generate().fingerprint())
}

/// A session for tests, expiring one hour after `now`.
pub fn sample_session(iss: &str, sub: &str, sid: Option<&str>, now: i64) -> Session {
    let mut s = Session::new(
        iss,
        sub,
        sid.map(str::to_string),
        Secret::new("header.payload.sig"),
        now,
        now + 3600,
    );
    s.name = Some("Test User".into());
    s
}

/// Builds the store under test from the test's clock: any closure
/// `Fn(Arc<ManualClock>) -> impl Future<Output = Arc<dyn Store>>`.
pub trait StoreFactory {
    /// A store that decides expiry by `clock`.
    fn make(&self, clock: Arc<ManualClock>) -> impl Future<Output = Arc<dyn Store>>;
}

impl<F, Fut> StoreFactory for F
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    fn make(&self, clock: Arc<ManualClock>) -> impl Future<Output = Arc<dyn Store>> {
        self(clock)
    }
}

/// Fixes a closure's type as a [`StoreFactory`] (so that its argument type
/// is inferred).
pub fn factory<F, Fut>(f: F) -> F
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    f
}

/// A fresh clock standing at a fixed time.
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_unix(1_800_000_000))
}

async fn store_with(factory: &impl StoreFactory) -> (Arc<dyn Store>, Arc<ManualClock>) {
    let clock = clock();
    (factory.make(clock.clone()).await, clock)
}

fn sorted(mut ids: Vec<SessionId>) -> Vec<String> {
    let mut v: Vec<String> = ids.drain(..).map(|i| i.secret().to_string()).collect();
    v.sort();
    v
}

/// A stored session reads back equal; an unknown id reads as `None`.
pub async fn put_then_get(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let s = sample_session(
        &unique("https://iss"),
        &unique("sub"),
        Some(&unique("sid")),
        clock.unix_now(),
    );
    store.put_session(&s).await.expect("put");
    assert_eq!(
        store.get_session(&s.id).await.expect("get"),
        Some(s.clone())
    );
    assert_eq!(
        store
            .get_session(&SessionId::generate())
            .await
            .expect("get"),
        None
    );
}

/// Replacing a session moves its index entries.
pub async fn put_replaces_and_reindexes(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let iss = unique("https://iss");
    let (sid1, sid2) = (unique("sid"), unique("sid"));
    let mut s = sample_session(&iss, &unique("sub"), Some(&sid1), clock.unix_now());
    store.put_session(&s).await.expect("put");
    s.sid = Some(sid2.clone());
    store.put_session(&s).await.expect("replace");
    let by = |sid: &str| SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid.to_string(),
    };
    assert!(
        store
            .find_sessions(&by(&sid1))
            .await
            .expect("find")
            .is_empty()
    );
    assert_eq!(
        sorted(store.find_sessions(&by(&sid2)).await.expect("find")),
        sorted(vec![s.id.clone()])
    );
    assert_eq!(
        store
            .get_session(&s.id)
            .await
            .expect("get")
            .and_then(|g| g.sid),
        Some(sid2)
    );
}

/// Removal returns the session and clears both indexes; removing again is not an error.
pub async fn remove_clears_session_and_indexes(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let s = sample_session(&iss, &sub, Some(&sid), clock.unix_now());
    store.put_session(&s).await.expect("put");
    let removed = store.remove_session(&s.id).await.expect("remove");
    assert_eq!(removed, Some(s.clone()));
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid,
    };
    let by_sub = SessionLookup::BySubject { iss, sub };
    assert!(store.find_sessions(&by_sid).await.expect("find").is_empty());
    assert!(store.find_sessions(&by_sub).await.expect("find").is_empty());
    assert_eq!(
        store.remove_session(&s.id).await.expect("remove again"),
        None
    );
}

/// Lookups by `(iss, sid)` and `(iss, sub)` find exactly the matching sessions,
/// and issuers are kept apart.
pub async fn lookups_select_exactly(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, other_iss, sub) = (
        unique("https://iss"),
        unique("https://other"),
        unique("sub"),
    );
    let (sid_a, sid_b) = (unique("sid"), unique("sid"));
    let a = sample_session(&iss, &sub, Some(&sid_a), now);
    let b = sample_session(&iss, &sub, Some(&sid_b), now);
    let no_sid = sample_session(&iss, &sub, None, now);
    let foreign = sample_session(&other_iss, &sub, Some(&sid_a), now);
    for s in [&a, &b, &no_sid, &foreign] {
        store.put_session(s).await.expect("put");
    }
    let found = store
        .find_sessions(&SessionLookup::ByProviderSession {
            iss: iss.clone(),
            sid: sid_a.clone(),
        })
        .await
        .expect("find");
    assert_eq!(sorted(found), sorted(vec![a.id.clone()]));
    let found = store
        .find_sessions(&SessionLookup::BySubject {
            iss: iss.clone(),
            sub: sub.clone(),
        })
        .await
        .expect("find");
    assert_eq!(
        sorted(found),
        sorted(vec![a.id.clone(), b.id.clone(), no_sid.id.clone()])
    );
    let found = store
        .find_sessions(&SessionLookup::BySubject {
            iss: other_iss,
            sub,
        })
        .await
        .expect("find");
    assert_eq!(sorted(found), sorted(vec![foreign.id.clone()]));
}

/// Expired sessions are neither returned nor found, nor counted.
pub async fn expired_sessions_are_invisible(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let s = sample_session(&iss, &sub, Some(&sid), clock.unix_now());
    store.put_session(&s).await.expect("put");
    let before = store.session_count().await.expect("count");
    clock.advance(Duration::from_secs(3599));
    assert!(
        store.get_session(&s.id).await.expect("get").is_some(),
        "alive one second before expiry"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid,
    };
    assert!(store.find_sessions(&by_sid).await.expect("find").is_empty());
    assert!(
        store
            .find_sessions(&SessionLookup::BySubject { iss, sub })
            .await
            .expect("find")
            .is_empty()
    );
    assert!(store.session_count().await.expect("count") < before);
}

/// Many concurrent writers for one user: every session is stored and indexed.
pub async fn concurrent_writers(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let (iss, sub) = (unique("https://iss"), unique("sub"));
    let now = clock.unix_now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        let s = sample_session(&iss, &sub, Some(&unique("sid")), now);
        tasks.push(tokio::spawn(async move {
            store.put_session(&s).await.expect("put");
            s.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    let found = store
        .find_sessions(&SessionLookup::BySubject { iss, sub })
        .await
        .expect("find");
    assert_eq!(sorted(found), sorted(ids));
}

/// The session count follows puts and removals.
pub async fn count_follows_changes(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let before = store.session_count().await.expect("count");
    let s = sample_session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock.unix_now(),
    );
    store.put_session(&s).await.expect("put");
    assert_eq!(store.session_count().await.expect("count"), before + 1);
    store.remove_session(&s.id).await.expect("remove");
    assert_eq!(store.session_count().await.expect("count"), before);
}

fn entry(key: &str, kind: &str, payload: &[u8]) -> StoredEntry {
    StoredEntry::new(key, kind, Some(1_900_000_000), payload.to_vec())
}

fn by_key(p: &idweb::StoredPartition) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = p
        .entries
        .iter()
        .map(|e| (e.cache_key.clone(), e.sealed.clone()))
        .collect();
    v.sort();
    v
}

/// Partition writes insert, replace and remove entries and bump the version;
/// reads return exactly what was written.
pub async fn partition_writes_and_reads(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let s = sample_session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock.unix_now(),
    );
    store.put_session(&s).await.expect("put");
    let key = PartitionKey::Session(s.id.clone());
    assert_eq!(store.get_partition(&key).await.expect("get"), None);
    let v1 = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![
                entry("at-1", "AccessToken", b"one"),
                entry("rt", "RefreshToken", b"r1"),
            ]),
        )
        .await
        .expect("write");
    let mut w = PartitionWrite::upsert(vec![
        entry("at-1", "AccessToken", b"two"),
        entry("at-2", "AccessToken", b"three"),
    ]);
    w.remove = vec!["rt".into()];
    let v2 = store.write_partition(&key, w).await.expect("write");
    assert_eq!(v2, v1 + 1);
    let p = store
        .get_partition(&key)
        .await
        .expect("get")
        .expect("partition");
    assert_eq!(p.version, v2);
    assert_eq!(
        by_key(&p),
        vec![
            ("at-1".into(), b"two".to_vec()),
            ("at-2".into(), b"three".to_vec())
        ]
    );
    let kinds: Vec<&str> = p.entries.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.iter().all(|k| *k == "AccessToken"));
    assert!(
        p.entries
            .iter()
            .all(|e| e.expires_at == Some(1_900_000_000))
    );
}

/// A session partition cannot be written when its session does not exist.
pub async fn partition_write_needs_a_live_session(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let never = PartitionKey::Session(SessionId::generate());
    let r = store
        .write_partition(
            &never,
            PartitionWrite::upsert(vec![entry("k", "AccessToken", b"x")]),
        )
        .await;
    assert!(matches!(r, Err(StoreError::SignedOut)), "{r:?}");
    assert_eq!(store.get_partition(&never).await.expect("get"), None);

    let s = sample_session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock.unix_now(),
    );
    store.put_session(&s).await.expect("put");
    clock.advance(Duration::from_secs(3600));
    let key = PartitionKey::Session(s.id.clone());
    let r = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("k", "AccessToken", b"x")]),
        )
        .await;
    assert!(
        matches!(r, Err(StoreError::SignedOut)),
        "expired session: {r:?}"
    );
}

/// Removing a session removes its partition, and a write that comes after
/// (an in-flight refresh finishing late) is refused: nothing comes back.
pub async fn removed_session_takes_its_partition_and_refuses_late_writes(
    factory: &impl StoreFactory,
) {
    let (store, clock) = store_with(factory).await;
    let s = sample_session(
        &unique("https://iss"),
        &unique("sub"),
        Some(&unique("sid")),
        clock.unix_now(),
    );
    store.put_session(&s).await.expect("put");
    let key = PartitionKey::Session(s.id.clone());
    let v = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", "RefreshToken", b"old")]),
        )
        .await
        .expect("write");
    store.remove_session(&s.id).await.expect("remove");
    assert_eq!(store.get_partition(&key).await.expect("get"), None);
    let late = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", "RefreshToken", b"new")]).if_version(v),
        )
        .await;
    assert!(matches!(late, Err(StoreError::SignedOut)), "{late:?}");
    assert_eq!(store.get_partition(&key).await.expect("get"), None);
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
}

/// Conditional writes: a stale version is refused, and among concurrent
/// writers expecting the same version exactly one succeeds.
pub async fn conditional_writes_are_compare_and_set(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let s = sample_session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock.unix_now(),
    );
    store.put_session(&s).await.expect("put");
    let key = PartitionKey::Session(s.id.clone());
    let v = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", "RefreshToken", b"0")]),
        )
        .await
        .expect("write");
    let stale = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", "RefreshToken", b"x")]).if_version(v + 5),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            store
                .write_partition(
                    &key,
                    PartitionWrite::upsert(vec![entry("rt", "RefreshToken", &[i])]).if_version(v),
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(ok, 1, "exactly one writer wins");
    let p = store
        .get_partition(&key)
        .await
        .expect("get")
        .expect("partition");
    assert_eq!(p.version, v + 1);
}

/// App partitions (client credentials) need no session.
pub async fn app_partitions_stand_alone(factory: &impl StoreFactory) {
    let (store, _clock) = store_with(factory).await;
    let key = PartitionKey::App {
        client_id: unique("client"),
        tenant: "tenant|with.odd-chars".into(),
        audience: "api://todo".into(),
    };
    store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("at", "AccessToken", b"app")]),
        )
        .await
        .expect("write");
    let p = store
        .get_partition(&key)
        .await
        .expect("get")
        .expect("partition");
    assert_eq!(by_key(&p), vec![("at".into(), b"app".to_vec())]);
    assert!(store.remove_partition(&key).await.expect("remove"));
    assert!(!store.remove_partition(&key).await.expect("remove again"));
    assert_eq!(store.get_partition(&key).await.expect("get"), None);
}

/// A `(iss, sid)` tombstone refuses that provider session; a `(iss, sub)`
/// tombstone refuses sessions created up to the sign-out, not later ones.
pub async fn tombstones_refuse_signed_out_sessions(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid.clone(),
    };
    store
        .put_tombstone(&Tombstone::new(by_sid.clone(), now, now + 7200))
        .await
        .expect("tombstone");
    assert_eq!(
        store
            .get_tombstone(&by_sid)
            .await
            .expect("get")
            .map(|t| t.logged_out_at),
        Some(now)
    );
    let r = store
        .put_session(&sample_session(&iss, &sub, Some(&sid), now + 1))
        .await;
    assert!(matches!(r, Err(StoreError::SignedOut)), "{r:?}");
    store
        .put_session(&sample_session(&iss, &sub, Some(&unique("sid")), now + 1))
        .await
        .expect("another provider session is fine");

    let sub2 = unique("sub");
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: sub2.clone(),
    };
    store
        .put_tombstone(&Tombstone::new(by_sub, now + 10, now + 7200))
        .await
        .expect("tombstone");
    let old = sample_session(&iss, &sub2, None, now + 5);
    assert!(matches!(
        store.put_session(&old).await,
        Err(StoreError::SignedOut)
    ));
    store
        .put_session(&sample_session(&iss, &sub2, None, now + 11))
        .await
        .expect("a sign-in after the sign-out is fine");

    clock.advance(Duration::from_secs(7200));
    assert_eq!(
        store.get_tombstone(&by_sid).await.expect("get"),
        None,
        "tombstones expire"
    );
    store
        .put_session(&sample_session(&iss, &sub, Some(&sid), clock.unix_now()))
        .await
        .expect("expired tombstone no longer refuses");
}

/// `record_jti` is test-and-set per `(iss, jti)`, atomic, and forgets at expiry.
pub async fn jti_is_recorded_once(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, jti) = (unique("https://iss"), unique("jti"));
    assert!(
        store
            .record_jti(&iss, &jti, now + 300)
            .await
            .expect("first")
    );
    assert!(
        !store
            .record_jti(&iss, &jti, now + 300)
            .await
            .expect("replay")
    );
    assert!(
        store
            .record_jti(&unique("https://other"), &jti, now + 300)
            .await
            .expect("other issuer")
    );
    let jti2 = unique("jti");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, iss, jti2) = (store.clone(), iss.clone(), jti2.clone());
        tasks.push(tokio::spawn(async move {
            store
                .record_jti(&iss, &jti2, now + 300)
                .await
                .expect("record")
        }));
    }
    let mut firsts = 0;
    for t in tasks {
        if t.await.expect("task") {
            firsts += 1;
        }
    }
    assert_eq!(
        firsts, 1,
        "exactly one concurrent caller sees the jti first"
    );
    clock.advance(Duration::from_secs(301));
    assert!(
        store
            .record_jti(&iss, &jti, clock.unix_now() + 300)
            .await
            .expect("after expiry")
    );
}

/// Statistics and listing follow what is stored.
pub async fn stats_and_listing(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let before = store.stats().await.expect("stats");
    let s = sample_session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock.unix_now(),
    );
    store.put_session(&s).await.expect("put");
    store
        .write_partition(
            &PartitionKey::Session(s.id.clone()),
            PartitionWrite::upsert(vec![
                entry("a", "AccessToken", b"1"),
                entry("b", "RefreshToken", b"2"),
            ]),
        )
        .await
        .expect("write");
    let after = store.stats().await.expect("stats");
    assert_eq!(after.sessions, before.sessions + 1);
    assert_eq!(after.partitions, before.partitions + 1);
    assert_eq!(after.entries, before.entries + 2);

    let mut seen = Vec::new();
    let mut cursor: Option<SessionId> = None;
    loop {
        let page = store.list_sessions(cursor.as_ref(), 7).await.expect("list");
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|s| s.id.clone());
        seen.extend(page.into_iter().map(|s| s.id));
    }
    assert!(seen.contains(&s.id), "the new session is listed");
    let mut sorted_ids: Vec<String> = seen.iter().map(|i| i.secret().to_string()).collect();
    let n = sorted_ids.len();
    sorted_ids.dedup();
    assert_eq!(sorted_ids.len(), n, "no session listed twice");
}

/// Locks: one holder at a time, released by its token only, free again at expiry.
pub async fn locks_exclude_and_expire(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let name = unique("refresh");
    let first = store
        .try_lock(&name, Duration::from_secs(30))
        .await
        .expect("lock")
        .expect("free");
    assert!(
        store
            .try_lock(&name, Duration::from_secs(30))
            .await
            .expect("lock")
            .is_none(),
        "held"
    );
    store
        .unlock(&name, &idweb::LockToken::generate())
        .await
        .expect("unlock with a wrong token");
    assert!(
        store
            .try_lock(&name, Duration::from_secs(30))
            .await
            .expect("lock")
            .is_none(),
        "still held"
    );
    store.unlock(&name, &first).await.expect("unlock");
    let second = store
        .try_lock(&name, Duration::from_secs(30))
        .await
        .expect("lock")
        .expect("free again");
    assert_ne!(first, second);
    clock.advance(Duration::from_secs(31));
    let third = store
        .try_lock(&name, Duration::from_secs(30))
        .await
        .expect("lock")
        .expect("expired lock is free");
    store.unlock(&name, &second).await.expect("stale unlock");
    assert!(
        store
            .try_lock(&name, Duration::from_secs(30))
            .await
            .expect("lock")
            .is_none(),
        "a stale unlock does not free the new holder"
    );
    store.unlock(&name, &third).await.expect("unlock");

    let other = unique("refresh");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, other) = (store.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            store
                .try_lock(&other, Duration::from_secs(30))
                .await
                .expect("lock")
                .is_some()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent taker wins");
}

/// Generates one `#[tokio::test]` per conformance test for the store built by
/// `$factory` (a closure `Fn(Arc<ManualClock>) -> impl Future<Output = Arc<dyn Store>>`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@tests $factory;
            put_then_get,
            put_replaces_and_reindexes,
            remove_clears_session_and_indexes,
            lookups_select_exactly,
            expired_sessions_are_invisible,
            concurrent_writers,
            count_follows_changes,
            partition_writes_and_reads,
            partition_write_needs_a_live_session,
            removed_session_takes_its_partition_and_refuses_late_writes,
            conditional_writes_are_compare_and_set,
            app_partitions_stand_alone,
            tombstones_refuse_signed_out_sessions,
            jti_is_recorded_once,
            stats_and_listing,
            locks_exclude_and_expire,
        );
    };
    (@tests $factory:expr; $($name:ident,)*) => {
        $(
            #[$crate::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::$name(&$crate::factory($factory)).await;
            }
        )*
    };
}
