//! The conformance suite every idweb [`Store`] must pass.
//!
//! A store crate runs it with one line in its tests:
//!
//! ```ignore
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

use idweb::{Clock, ManualClock, Secret, Session, SessionId, SessionLookup, Store};

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

/// A fresh clock standing at a fixed time.
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_unix(1_800_000_000))
}

async fn store_with<F, Fut>(factory: &F) -> (Arc<dyn Store>, Arc<ManualClock>)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let clock = clock();
    (factory(clock.clone()).await, clock)
}

fn sorted(mut ids: Vec<SessionId>) -> Vec<String> {
    let mut v: Vec<String> = ids.drain(..).map(|i| i.secret().to_string()).collect();
    v.sort();
    v
}

/// A stored session reads back equal; an unknown id reads as `None`.
pub async fn put_then_get<F, Fut>(factory: &F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
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
pub async fn put_replaces_and_reindexes<F, Fut>(factory: &F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
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
pub async fn remove_clears_session_and_indexes<F, Fut>(factory: &F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
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
pub async fn lookups_select_exactly<F, Fut>(factory: &F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
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
pub async fn expired_sessions_are_invisible<F, Fut>(factory: &F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
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
pub async fn concurrent_writers<F, Fut>(factory: &F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
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
pub async fn count_follows_changes<F, Fut>(factory: &F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
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
        );
    };
    (@tests $factory:expr; $($name:ident,)*) => {
        $(
            #[$crate::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::$name(&$factory).await;
            }
        )*
    };
}
