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
    Clock, JtiRecord, ManualClock, PartitionKey, PartitionWrite, Secret, Session, SessionId,
    SessionLookup, SignOutOutcome, SignOutRequest, SignOutTarget, Store, StoreError, StoredEntry,
    Tombstone,
};

#[doc(hidden)]
pub use tokio;

pub mod multi_instance;

/// Unique text for this test run, so tests sharing a backend do not collide.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", SessionId::generate().fingerprint())
}

/// Second `secs` in microseconds, the unit of `created_at` and `logged_out_at`.
pub fn us(secs: i64) -> i64 {
    secs * idweb::MICROS_PER_SEC
}

/// A session for tests, created at the start of second `now` and expiring
/// one hour after it.
pub fn sample_session(iss: &str, sub: &str, sid: Option<&str>, now: i64) -> Session {
    let mut s = Session::new(
        iss,
        sub,
        sid.map(str::to_string),
        Secret::new("header.payload.sig"),
        us(now),
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

/// `get_session_and_partition_version` answers what `get_session` and
/// `partition_version` answer (a store may leave the version unread): the
/// same session, the partition's version once it has entries, none after
/// its entries are gone; nothing for a signed-out or ended session.
pub async fn session_and_partition_version_read_together(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let iss = unique("https://iss");
    let s = sample_session(&iss, &unique("sub"), Some(&unique("sid")), clock.unix_now());
    store.put_session(&s).await.expect("put");
    let key = PartitionKey::Session(s.id.clone());
    let read = |store: Arc<dyn Store>, id: SessionId| async move {
        store
            .get_session_and_partition_version(&id)
            .await
            .expect("read")
    };
    // Each read: the session as `get_session` returns it, and a version
    // that is `partition_version`'s when the store read it.
    let check = |got: Option<(Session, Option<Option<u64>>)>, want: Option<u64>| {
        let (session, version) = got.expect("the session");
        assert_eq!(session, s);
        if let Some(v) = version {
            assert_eq!(v, want, "the version read with the session");
        }
    };
    check(read(store.clone(), s.id.clone()).await, None);
    assert_eq!(store.partition_version(&key).await.expect("v"), None);
    let v1 = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("at", "AccessToken", b"1")]),
        )
        .await
        .expect("write");
    check(read(store.clone(), s.id.clone()).await, Some(v1));
    let v2 = store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("at", "AccessToken", b"2")]),
        )
        .await
        .expect("write");
    assert!(v2 > v1);
    assert_eq!(store.partition_version(&key).await.expect("v"), Some(v2));
    check(read(store.clone(), s.id.clone()).await, Some(v2));
    let mut w = PartitionWrite::upsert(Vec::new());
    w.remove = vec!["at".into()];
    store.write_partition(&key, w).await.expect("write");
    assert_eq!(store.partition_version(&key).await.expect("v"), None);
    check(read(store.clone(), s.id.clone()).await, None);

    // Signed out (a tombstone of its provider session): nothing.
    let t = Tombstone::new(
        SessionLookup::ByProviderSession {
            iss: iss.clone(),
            sid: s.sid.clone().expect("sid"),
        },
        us(clock.unix_now()) + 1,
        clock.unix_now() + 600,
    );
    store.put_tombstone(&t).await.expect("tombstone");
    assert!(read(store.clone(), s.id.clone()).await.is_none());

    // Ended: nothing.
    let ended = sample_session(&iss, &unique("sub"), None, clock.unix_now());
    store.put_session(&ended).await.expect("put");
    assert!(read(store.clone(), ended.id.clone()).await.is_some());
    clock.advance(Duration::from_secs(3601));
    assert!(read(store.clone(), ended.id.clone()).await.is_none());
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
        .put_tombstone(&Tombstone::new(by_sid.clone(), us(now), now + 7200))
        .await
        .expect("tombstone");
    assert_eq!(
        store
            .get_tombstone(&by_sid)
            .await
            .expect("get")
            .map(|t| t.logged_out_at),
        Some(us(now))
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
        .put_tombstone(&Tombstone::new(by_sub, us(now + 10), now + 7200))
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

/// A session stored with a one-entry partition.
async fn stored_with_tokens(store: &Arc<dyn Store>, s: &Session) {
    store.put_session(s).await.expect("put");
    store
        .write_partition(
            &PartitionKey::Session(s.id.clone()),
            PartitionWrite::upsert(vec![entry("rt", "RefreshToken", b"secret")]),
        )
        .await
        .expect("write");
}

/// Whether nothing of `s` is left: no session, no partition, not found
/// by either lookup.
async fn gone(store: &Arc<dyn Store>, s: &Session) -> bool {
    let by_sub = SessionLookup::BySubject {
        iss: s.iss.clone(),
        sub: s.sub.clone(),
    };
    let mut lookups = vec![by_sub];
    if let Some(sid) = &s.sid {
        lookups.push(SessionLookup::ByProviderSession {
            iss: s.iss.clone(),
            sid: sid.clone(),
        });
    }
    for l in &lookups {
        if store.find_sessions(l).await.expect("find").contains(&s.id) {
            return false;
        }
    }
    store.get_session(&s.id).await.expect("get").is_none()
        && store
            .get_partition(&PartitionKey::Session(s.id.clone()))
            .await
            .expect("partition")
            .is_none()
        && store.remove_session(&s.id).await.expect("remove").is_none()
}

fn removed(outcome: SignOutOutcome) -> Vec<String> {
    match outcome {
        SignOutOutcome::SignedOut { removed, .. } => sorted(removed),
        other => panic!("expected a sign-out, got {other:?}"),
    }
}

fn request(clock: &ManualClock, target: SignOutTarget) -> SignOutRequest {
    let now = clock.unix_now();
    SignOutRequest::new(target, clock.unix_micros(), now + 7200)
}

/// `sign_out` of a lookup removes every selected session with its partition
/// and index entries, tombstones the selector, returns the removed ids, and
/// leaves other users alone.
pub async fn sign_out_removes_the_selection(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, sub) = (unique("https://iss"), unique("sub"));
    let (sid_a, sid_b) = (unique("sid"), unique("sid"));
    let a = sample_session(&iss, &sub, Some(&sid_a), now);
    let b = sample_session(&iss, &sub, Some(&sid_b), now);
    let c = sample_session(&iss, &sub, None, now);
    let other = sample_session(&iss, &unique("sub"), Some(&unique("sid")), now);
    for s in [&a, &b, &c, &other] {
        stored_with_tokens(&store, s).await;
    }
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid_a.clone(),
    };
    let out = store
        .sign_out(&request(&clock, SignOutTarget::Lookup(by_sid.clone())))
        .await
        .expect("sign out by sid");
    assert_eq!(removed(out), sorted(vec![a.id.clone()]));
    assert!(
        gone(&store, &a).await,
        "the session and its tokens are gone"
    );
    assert!(store.get_tombstone(&by_sid).await.expect("get").is_some());
    assert!(store.get_session(&b.id).await.expect("get").is_some());

    clock.advance(Duration::from_secs(1));
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: sub.clone(),
    };
    let out = store
        .sign_out(&request(&clock, SignOutTarget::Lookup(by_sub.clone())))
        .await
        .expect("sign out by subject");
    assert_eq!(removed(out), sorted(vec![b.id.clone(), c.id.clone()]));
    assert!(gone(&store, &b).await && gone(&store, &c).await);
    assert_eq!(
        store
            .get_tombstone(&by_sub)
            .await
            .expect("get")
            .map(|t| t.logged_out_at),
        Some(clock.unix_micros())
    );
    assert_eq!(
        store.get_session(&other.id).await.expect("get"),
        Some(other.clone()),
        "another user is left alone"
    );
    assert!(
        store
            .get_partition(&PartitionKey::Session(other.id.clone()))
            .await
            .expect("partition")
            .is_some()
    );
    let again = store
        .sign_out(&request(&clock, SignOutTarget::Lookup(by_sub)))
        .await
        .expect("again");
    assert_eq!(
        removed(again),
        Vec::<String>::new(),
        "nothing left to remove"
    );
}

/// Writes `n` entries to the partition of `s` (one write), then removes
/// the first of them (another write), leaving `n - 1`.
async fn with_entries(store: &Arc<dyn Store>, s: &Session, n: usize) {
    let key = PartitionKey::Session(s.id.clone());
    let entries = (0..n)
        .map(|i| entry(&format!("k{i}"), "AccessToken", b"sealed"))
        .collect();
    store
        .write_partition(&key, PartitionWrite::upsert(entries))
        .await
        .expect("write");
    let mut remove = PartitionWrite::default();
    remove.remove.push("k0".into());
    store
        .write_partition(&key, remove)
        .await
        .expect("remove one");
}

fn entries_removed(outcome: &SignOutOutcome) -> u64 {
    match outcome {
        SignOutOutcome::SignedOut {
            entries_removed, ..
        } => *entries_removed,
        other => panic!("expected a sign-out, got {other:?}"),
    }
}

/// A sign-out counts the cache entries that leave with the sessions it
/// removes (what is left in their partitions, not what was ever written),
/// and only those: not another user's, not an app partition's, nothing for
/// a session without tokens, an unknown target or a replay. The
/// order-based sign-out ([`idweb::sign_out_in_order`]) counts the same.
pub async fn sign_out_counts_the_entries_removed(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let iss = unique("https://iss");
    let app = PartitionKey::App {
        client_id: unique("client"),
        tenant: "t".into(),
        audience: "api://todo".into(),
    };
    store
        .write_partition(
            &app,
            PartitionWrite::upsert(vec![entry("at", "AccessToken", b"app")]),
        )
        .await
        .expect("app partition");
    for atomic in [true, false] {
        let sub = unique("sub");
        let a = sample_session(&iss, &sub, Some(&unique("sid")), now);
        let b = sample_session(&iss, &sub, None, now);
        let bare = sample_session(&iss, &sub, Some(&unique("sid")), now);
        let other = sample_session(&iss, &unique("sub"), None, now);
        for s in [&a, &b, &bare, &other] {
            store.put_session(s).await.expect("put");
        }
        with_entries(&store, &a, 4).await;
        with_entries(&store, &b, 2).await;
        with_entries(&store, &other, 5).await;
        let run = |target| {
            let (store, req) = (store.clone(), request(&clock, target));
            async move {
                if atomic {
                    store.sign_out(&req).await
                } else {
                    idweb::sign_out_in_order(&*store, &req).await
                }
                .expect("sign out")
            }
        };

        let out = run(SignOutTarget::Session(bare.id.clone())).await;
        assert_eq!(
            (removed(out.clone()), entries_removed(&out)),
            (sorted(vec![bare.id.clone()]), 0),
            "a session without tokens (atomic: {atomic})"
        );
        let by_sub = SignOutTarget::Lookup(SessionLookup::BySubject {
            iss: iss.clone(),
            sub: sub.clone(),
        });
        let req = request(&clock, by_sub.clone()).with_jti(JtiRecord::new(
            iss.clone(),
            unique("jti"),
            now + 600,
        ));
        let out = if atomic {
            store.sign_out(&req).await
        } else {
            idweb::sign_out_in_order(&*store, &req).await
        }
        .expect("sign out by subject");
        assert_eq!(
            (removed(out.clone()), entries_removed(&out)),
            (sorted(vec![a.id.clone(), b.id.clone()]), 3 + 1),
            "the user's two sessions with their entries (atomic: {atomic})"
        );
        let replay = store.sign_out(&req).await.expect("replay");
        assert_eq!(replay, SignOutOutcome::Replayed);
        let again = run(by_sub).await;
        assert_eq!(
            entries_removed(&again),
            0,
            "nothing left (atomic: {atomic})"
        );
        let unknown = run(SignOutTarget::Session(SessionId::generate())).await;
        assert_eq!(entries_removed(&unknown), 0);
        let p = store
            .get_partition(&PartitionKey::Session(other.id.clone()))
            .await
            .expect("get")
            .expect("another user's partition stays");
        assert_eq!(p.entries.len(), 4);
    }
    let p = store.get_partition(&app).await.expect("get");
    assert_eq!(
        p.map(|p| p.entries.len()),
        Some(1),
        "the app partition stays"
    );
}

/// `sign_out` of one session removes it and tombstones its provider
/// session, so that the provider session cannot come back; a session
/// without `sid` gets no tombstone; an unknown id removes nothing.
pub async fn sign_out_of_one_session(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let s = sample_session(&iss, &sub, Some(&sid), now);
    let sibling = sample_session(&iss, &sub, Some(&unique("sid")), now);
    stored_with_tokens(&store, &s).await;
    stored_with_tokens(&store, &sibling).await;
    let out = store
        .sign_out(&request(&clock, SignOutTarget::Session(s.id.clone())))
        .await
        .expect("sign out");
    assert_eq!(removed(out), sorted(vec![s.id.clone()]));
    assert!(gone(&store, &s).await);
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid.clone(),
    };
    assert!(store.get_tombstone(&by_sid).await.expect("get").is_some());
    let late = store
        .put_session(&sample_session(&iss, &sub, Some(&sid), now))
        .await;
    assert!(matches!(late, Err(StoreError::SignedOut)), "{late:?}");
    assert!(
        store.get_session(&sibling.id).await.expect("get").is_some(),
        "the user's other session stays"
    );

    let plain = sample_session(&iss, &unique("sub"), None, now);
    stored_with_tokens(&store, &plain).await;
    let out = store
        .sign_out(&request(&clock, SignOutTarget::Session(plain.id.clone())))
        .await
        .expect("sign out");
    assert_eq!(removed(out), sorted(vec![plain.id.clone()]));
    assert!(gone(&store, &plain).await);
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: plain.sub.clone(),
    };
    assert_eq!(store.get_tombstone(&by_sub).await.expect("get"), None);

    let out = store
        .sign_out(&request(
            &clock,
            SignOutTarget::Session(SessionId::generate()),
        ))
        .await
        .expect("unknown");
    assert_eq!(removed(out), Vec::<String>::new());
}

/// A sign-out whose `jti` is recorded already is a replay: nothing changes
/// (no tombstone moved, no session removed), whatever it selects.
pub async fn replayed_jti_changes_nothing(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let (iss, sub) = (unique("https://iss"), unique("sub"));
    let jti = JtiRecord::new(iss.clone(), unique("jti"), clock.unix_now() + 600);
    let first = sample_session(&iss, &sub, None, clock.unix_now());
    stored_with_tokens(&store, &first).await;
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: sub.clone(),
    };
    assert!(!store.is_jti_recorded(&iss, &jti.jti).await.expect("seen"));
    let out = store
        .sign_out(&request(&clock, SignOutTarget::Lookup(by_sub.clone())).with_jti(jti.clone()))
        .await
        .expect("sign out");
    assert_eq!(removed(out), sorted(vec![first.id.clone()]));
    assert!(store.is_jti_recorded(&iss, &jti.jti).await.expect("seen"));
    let logged_out_at = clock.unix_micros();

    // The user signs in again later; the same token comes back.
    clock.advance(Duration::from_secs(10));
    let later = sample_session(&iss, &sub, None, clock.unix_now());
    stored_with_tokens(&store, &later).await;
    let replay = store
        .sign_out(&request(&clock, SignOutTarget::Lookup(by_sub.clone())).with_jti(jti.clone()))
        .await
        .expect("replay");
    assert_eq!(replay, SignOutOutcome::Replayed);
    assert_eq!(
        store.get_session(&later.id).await.expect("get"),
        Some(later.clone()),
        "a replay signs no one out"
    );
    assert!(
        store
            .get_partition(&PartitionKey::Session(later.id.clone()))
            .await
            .expect("partition")
            .is_some()
    );
    assert_eq!(
        store
            .get_tombstone(&by_sub)
            .await
            .expect("get")
            .map(|t| t.logged_out_at),
        Some(logged_out_at),
        "a replay does not move the tombstone"
    );
    let other_target = store
        .sign_out(&request(&clock, SignOutTarget::Session(later.id.clone())).with_jti(jti))
        .await
        .expect("replay");
    assert_eq!(other_target, SignOutOutcome::Replayed);
    assert!(store.get_session(&later.id).await.expect("get").is_some());
}

/// The states a sign-out done step by step can be left in by a crash —
/// tombstone stored but sessions not removed; tombstone and removals stored
/// but no replay record — are completed by the retry of the same request,
/// and the session is refused meanwhile.
pub async fn sign_out_retry_completes_a_partial_state(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let s = sample_session(&iss, &sub, Some(&sid), now);
    stored_with_tokens(&store, &s).await;
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid.clone(),
    };
    let jti = JtiRecord::new(iss.clone(), unique("jti"), now + 600);
    let req = request(&clock, SignOutTarget::Lookup(by_sid.clone())).with_jti(jti.clone());
    // Crashed after the tombstone.
    store
        .put_tombstone(&Tombstone::new(by_sid.clone(), us(now), now + 7200))
        .await
        .expect("tombstone");
    assert_eq!(
        store.get_session(&s.id).await.expect("get"),
        None,
        "a tombstoned session is refused even with its rows stored"
    );
    assert!(!store.is_jti_recorded(&iss, &jti.jti).await.expect("seen"));
    let out = store.sign_out(&req).await.expect("retry");
    assert_eq!(removed(out), sorted(vec![s.id.clone()]));
    assert!(gone(&store, &s).await);
    assert!(store.is_jti_recorded(&iss, &jti.jti).await.expect("seen"));
    assert_eq!(
        store.sign_out(&req).await.expect("again"),
        SignOutOutcome::Replayed
    );

    // Crashed after the removals, before the replay record.
    let s2 = sample_session(&iss, &unique("sub"), Some(&unique("sid")), now);
    stored_with_tokens(&store, &s2).await;
    let by_sid2 = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: s2.sid.clone().expect("sid"),
    };
    store
        .put_tombstone(&Tombstone::new(by_sid2.clone(), us(now), now + 7200))
        .await
        .expect("tombstone");
    store.remove_session(&s2.id).await.expect("remove");
    let jti2 = JtiRecord::new(iss.clone(), unique("jti"), now + 600);
    let req2 = request(&clock, SignOutTarget::Lookup(by_sid2)).with_jti(jti2.clone());
    let out = store.sign_out(&req2).await.expect("retry");
    assert_eq!(removed(out), Vec::<String>::new());
    assert!(store.is_jti_recorded(&iss, &jti2.jti).await.expect("seen"));
    assert_eq!(
        store.sign_out(&req2).await.expect("again"),
        SignOutOutcome::Replayed
    );
}

/// `get_session` refuses a session that a live tombstone covers, even while
/// its rows are stored: an `(iss, sid)` one always, an `(iss, sub)` one when
/// the sign-out was not before the session's creation; not after the
/// tombstone expires.
pub async fn get_session_refuses_tombstoned_sessions(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let s = sample_session(&iss, &sub, Some(&sid), now);
    store.put_session(&s).await.expect("put");
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid.clone(),
    };
    store
        .put_tombstone(&Tombstone::new(by_sid.clone(), us(now), now + 60))
        .await
        .expect("tombstone");
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
    assert_eq!(
        sorted(store.find_sessions(&by_sid).await.expect("find")),
        sorted(vec![s.id.clone()]),
        "its rows are still stored (a sign-out can find and remove them)"
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        store.get_session(&s.id).await.expect("get"),
        Some(s.clone()),
        "an expired tombstone no longer refuses"
    );

    let now = clock.unix_now();
    let t = sample_session(&iss, &unique("sub"), None, now);
    store.put_session(&t).await.expect("put");
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: t.sub.clone(),
    };
    store
        .put_tombstone(&Tombstone::new(by_sub.clone(), us(now - 5), now + 600))
        .await
        .expect("older sign-out");
    assert_eq!(
        store.get_session(&t.id).await.expect("get"),
        Some(t.clone()),
        "a sign-out before the session's creation does not cover it"
    );
    store
        .put_tombstone(&Tombstone::new(by_sub, us(now), now + 600))
        .await
        .expect("sign-out");
    assert_eq!(store.get_session(&t.id).await.expect("get"), None);
}

/// Sub-second sign-out (issue 12, row 7): a `(iss, sub)` sign-out covers
/// the sessions created up to its instant — within its own second too —
/// and not a sign-in later in that same second; the session's
/// `created_at` and the tombstone's `logged_out_at` keep their microseconds.
pub async fn sign_out_by_subject_is_sub_second(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let second = us(now);
    let (iss, sub) = (unique("https://iss"), unique("sub"));
    let at = |micros: i64| {
        let mut s = sample_session(&iss, &sub, None, now);
        s.created_at = second + micros;
        s
    };
    let before = at(100_000);
    stored_with_tokens(&store, &before).await;
    assert_eq!(
        store.get_session(&before.id).await.expect("get"),
        Some(before.clone()),
        "created_at keeps its microseconds"
    );
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: sub.clone(),
    };
    let out = store
        .sign_out(&SignOutRequest::new(
            SignOutTarget::Lookup(by_sub.clone()),
            second + 500_000,
            now + 7200,
        ))
        .await
        .expect("sign out by subject");
    assert_eq!(
        removed(out),
        sorted(vec![before.id.clone()]),
        "a session created earlier in the second is signed out"
    );
    assert_eq!(
        store
            .get_tombstone(&by_sub)
            .await
            .expect("get")
            .map(|t| t.logged_out_at),
        Some(second + 500_000),
        "logged_out_at keeps its microseconds"
    );

    let after = at(600_000);
    store
        .put_session(&after)
        .await
        .expect("a sign-in after the sign-out, in the same second, is not covered");
    stored_with_tokens(&store, &after).await;
    assert_eq!(
        store.get_session(&after.id).await.expect("get"),
        Some(after.clone())
    );
    for (micros, what) in [(400_000, "before"), (500_000, "at the instant of")] {
        let late = at(micros);
        let r = store.put_session(&late).await;
        assert!(
            matches!(r, Err(StoreError::SignedOut)),
            "a session created {what} the sign-out is refused: {r:?}"
        );
        assert_eq!(store.get_session(&late.id).await.expect("get"), None);
    }

    // A later sign-out in the same second covers the later session.
    let out = store
        .sign_out(&SignOutRequest::new(
            SignOutTarget::Lookup(by_sub.clone()),
            second + 700_000,
            now + 7200,
        ))
        .await
        .expect("second sign-out");
    assert_eq!(removed(out), sorted(vec![after.id.clone()]));
    assert_eq!(store.get_session(&after.id).await.expect("get"), None);
}

/// With `only_if_found`, a sign-out that matches no live session writes
/// nothing (no tombstone, no replay record); one that matches works as usual.
pub async fn sign_out_only_if_found(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let iss = unique("https://iss");
    let unknown = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: unique("sid"),
    };
    let jti = JtiRecord::new(iss.clone(), unique("jti"), now + 600);
    let out = store
        .sign_out(
            &request(&clock, SignOutTarget::Lookup(unknown.clone()))
                .with_jti(jti.clone())
                .only_if_found(),
        )
        .await
        .expect("sign out");
    assert_eq!(removed(out), Vec::<String>::new());
    assert_eq!(store.get_tombstone(&unknown).await.expect("get"), None);
    assert!(!store.is_jti_recorded(&iss, &jti.jti).await.expect("seen"));

    let sid = unique("sid");
    let s = sample_session(&iss, &unique("sub"), Some(&sid), now);
    stored_with_tokens(&store, &s).await;
    let known = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid,
    };
    let out = store
        .sign_out(&request(&clock, SignOutTarget::Lookup(known.clone())).only_if_found())
        .await
        .expect("sign out");
    assert_eq!(removed(out), sorted(vec![s.id.clone()]));
    assert!(gone(&store, &s).await);
    assert!(store.get_tombstone(&known).await.expect("get").is_some());
}

/// `is_jti_recorded` only reads; a record whose expiry has passed does not
/// count (which is what the default `is_jti_recorded` relies on: a record
/// made with an expiry long past only tests).
pub async fn jti_check_does_not_record(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, jti) = (unique("https://iss"), unique("jti"));
    assert!(!store.is_jti_recorded(&iss, &jti).await.expect("check"));
    assert!(
        !store
            .is_jti_recorded(&iss, &jti)
            .await
            .expect("check again")
    );
    assert!(
        store.record_jti(&iss, &jti, i64::MIN).await.expect("probe"),
        "no live record: the probe is first"
    );
    assert!(!store.is_jti_recorded(&iss, &jti).await.expect("check"));
    assert!(
        store
            .record_jti(&iss, &jti, now + 300)
            .await
            .expect("record"),
        "neither the checks nor the expired probe count"
    );
    assert!(store.is_jti_recorded(&iss, &jti).await.expect("check"));
    assert!(
        !store.record_jti(&iss, &jti, i64::MIN).await.expect("probe"),
        "the probe sees the live record"
    );
    assert!(store.is_jti_recorded(&iss, &jti).await.expect("check"));
    clock.advance(Duration::from_secs(300));
    assert!(!store.is_jti_recorded(&iss, &jti).await.expect("expired"));
}

/// Concurrent deliveries of one logout token: the sign-out happens (at
/// least one is told so), every session is removed, and a later delivery
/// is a replay.
pub async fn concurrent_deliveries_of_one_token(factory: &impl StoreFactory) {
    let (store, clock) = store_with(factory).await;
    let now = clock.unix_now();
    let (iss, sub) = (unique("https://iss"), unique("sub"));
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let s = sample_session(&iss, &sub, Some(&unique("sid")), now);
        stored_with_tokens(&store, &s).await;
        sessions.push(s);
    }
    let req = request(
        &clock,
        SignOutTarget::Lookup(SessionLookup::BySubject {
            iss: iss.clone(),
            sub,
        }),
    )
    .with_jti(JtiRecord::new(iss.clone(), unique("jti"), now + 600));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (store, req) = (store.clone(), req.clone());
        tasks.push(tokio::spawn(async move { store.sign_out(&req).await }));
    }
    let mut all_removed = Vec::new();
    let mut done = 0;
    for t in tasks {
        match t.await.expect("task").expect("sign out") {
            SignOutOutcome::SignedOut { removed, .. } => {
                done += 1;
                all_removed.extend(removed);
            }
            SignOutOutcome::Replayed => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(done >= 1, "the sign-out happened");
    all_removed.sort_by(|a, b| a.secret().cmp(b.secret()));
    all_removed.dedup();
    assert_eq!(
        sorted(all_removed),
        sorted(sessions.iter().map(|s| s.id.clone()).collect())
    );
    for s in &sessions {
        assert!(gone(&store, s).await);
    }
    assert_eq!(
        store.sign_out(&req).await.expect("later"),
        SignOutOutcome::Replayed
    );
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
            session_and_partition_version_read_together,
            partition_write_needs_a_live_session,
            removed_session_takes_its_partition_and_refuses_late_writes,
            conditional_writes_are_compare_and_set,
            app_partitions_stand_alone,
            tombstones_refuse_signed_out_sessions,
            jti_is_recorded_once,
            stats_and_listing,
            locks_exclude_and_expire,
            sign_out_removes_the_selection,
            sign_out_of_one_session,
            sign_out_counts_the_entries_removed,
            replayed_jti_changes_nothing,
            sign_out_retry_completes_a_partial_state,
            get_session_refuses_tombstoned_sessions,
            sign_out_by_subject_is_sub_second,
            sign_out_only_if_found,
            jti_check_does_not_record,
            concurrent_deliveries_of_one_token,
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
