//! Scenarios of several instances sharing one store, each with the
//! in-process cache of `idweb-l1` in front: the same scenarios run on every
//! backend with an invalidation bus (Redis pub/sub, PostgreSQL
//! `LISTEN/NOTIFY`). They need the real server and real time (the lease,
//! the bus), so they use the system clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idweb::{
    Clock, PartitionKey, PartitionWrite, Secret, Session, SessionId, SignOut, SignOutSelector,
    Store, StoredEntry, SystemClock,
};
use idweb_l1::{CachingStore, L1Backend};
use tokio::task::JoinSet;

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn unique(what: &str) -> String {
    format!("{what}-{}", SessionId::generate().fingerprint())
}

fn session(iss: &str, sub: &str, sid: Option<&str>) -> Session {
    let now = clock().unix_now();
    Session::new(
        iss,
        sub,
        sid.map(str::to_string),
        Secret::new("header.payload.sig"),
        now,
        now + 3600,
    )
}

/// A cache in front of `store`, once it listens and holds its lease.
///
/// # Panics
/// When it is not active within 5 s.
pub async fn caching<B: L1Backend>(store: B) -> Arc<CachingStore<B>> {
    let cached = CachingStore::new(store).expect("cache");
    assert!(
        cached.wait_until_active(Duration::from_secs(5)).await,
        "the invalidation listener did not come up"
    );
    Arc::new(cached)
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What one round of [`no_instance_serves_a_session_once_its_sign_out_returned`] saw.
#[derive(Debug, Default)]
struct Round {
    /// Requests that started after the sign-out returned, and those of
    /// them answered with the session.
    after: usize,
    served_after: usize,
    /// Requests answered with the session before the sign-out started.
    served_before: usize,
    sign_out: Duration,
}

/// One round: a session signed in through `c`, read through `a` and `b`
/// (so that their caches hold it), two clients per slow instance asking
/// for it every millisecond, the sign-out (back-channel: by provider
/// session) through `c`, then the clients go on for `after`.
async fn round<B: L1Backend>(
    c: Arc<CachingStore<B>>,
    a: Arc<CachingStore<B>>,
    b: Arc<CachingStore<B>>,
    after: Duration,
) -> Round {
    let (iss, sid) = (unique("https://iss"), unique("sid"));
    let s = session(&iss, &unique("sub"), Some(&sid));
    c.put_session(&s).await.expect("sign-in");
    for x in [&a, &b] {
        assert!(x.get_session(&s.id).await.expect("read").is_some());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let mut clients = JoinSet::new();
    for x in [&a, &a, &b, &b] {
        let (x, id, stop, seen) = (x.clone(), s.id.clone(), stop.clone(), seen.clone());
        clients.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let served = x.get_session(&id).await.expect("read").is_some();
                seen.lock().expect("seen").push((started, served));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let signout = SignOut::new(c.clone(), clock(), Duration::from_secs(3600));
    let began = Instant::now();
    let eviction = signout
        .evict(&SignOutSelector::ProviderSession { iss, sid })
        .await
        .expect("sign-out");
    let returned = Instant::now();
    assert_eq!(eviction.sessions_removed, 1, "{eviction:?}");
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::SeqCst);
    while clients.join_next().await.is_some() {}
    let seen = seen.lock().expect("seen");
    let mut r = Round {
        sign_out: returned - began,
        ..Round::default()
    };
    for (started, served) in seen.iter() {
        if *started > returned {
            r.after += 1;
            r.served_after += usize::from(*served);
        } else if *started < began && *served {
            r.served_before += 1;
        }
    }
    r
}

/// Acknowledged eviction: `rounds` sign-outs through `c` (`at_once` at a
/// time), while clients keep asking `a` and `b` (typically behind a
/// delaying link) for the session: no request that started after the
/// sign-out returned is answered with it. `after` is how long clients go on
/// after each sign-out returned (longer than the slow link's delay).
///
/// # Panics
/// When a request that started after a sign-out returned was answered
/// with the session, or when the slow instances never answered from their
/// caches (the scenario would prove nothing).
pub async fn no_instance_serves_a_session_once_its_sign_out_returned<B: L1Backend>(
    c: Arc<CachingStore<B>>,
    a: Arc<CachingStore<B>>,
    b: Arc<CachingStore<B>>,
    rounds: usize,
    at_once: usize,
    after: Duration,
) {
    let started = Instant::now();
    let mut done = Vec::with_capacity(rounds);
    while done.len() < rounds {
        let mut wave = JoinSet::new();
        for _ in 0..at_once.min(rounds - done.len()) {
            wave.spawn(round(c.clone(), a.clone(), b.clone(), after));
        }
        while let Some(r) = wave.join_next().await {
            done.push(r.expect("round"));
        }
    }
    let after: usize = done.iter().map(|r| r.after).sum();
    let served_after: usize = done.iter().map(|r| r.served_after).sum();
    let served_before: usize = done.iter().map(|r| r.served_before).sum();
    let mut sign_outs: Vec<Duration> = done.iter().map(|r| r.sign_out).collect();
    sign_outs.sort();
    let pct = |p: usize| sign_outs[(sign_outs.len() - 1) * p / 100];
    println!(
        "{rounds} sign-outs in {:?}: {served_after} of {after} requests started after a sign-out returned were answered with the session; {served_before} answered with it before; sign-out took {:?} (median), {:?} (p99), {:?} (max)",
        started.elapsed(),
        pct(50),
        pct(99),
        sign_outs[sign_outs.len() - 1],
    );
    assert!(
        a.l1_hits() > 0 && b.l1_hits() > 0,
        "the slow instances never answered from their caches: the test proves nothing"
    );
    assert!(
        after >= rounds,
        "too few requests after the sign-outs: {after}"
    );
    assert_eq!(
        served_after, 0,
        "{served_after} of {after} requests that started after a sign-out returned were answered with the session"
    );
}

/// Instance `a` caches a session and its tokens; instance `b` signs the
/// user out. `a`'s next reads miss: the invalidation reached it (well
/// before the cache's 60 s safety age).
///
/// # Panics
/// When `a` did not answer from its cache first, or still serves the
/// session 2 s after the sign-out returned.
pub async fn sign_out_empties_another_instance_cache<B: L1Backend>(
    a: &CachingStore<B>,
    b: &CachingStore<B>,
) {
    let s = session(&unique("https://iss"), &unique("sub"), None);
    let key = PartitionKey::Session(s.id.clone());
    a.put_session(&s).await.expect("put");
    a.write_partition(
        &key,
        PartitionWrite::upsert(vec![StoredEntry::new(
            "rt",
            "RefreshToken",
            Some(4_000_000_000),
            b"secret".to_vec(),
        )]),
    )
    .await
    .expect("write");

    // Cache both on A: the second reads are hits.
    assert!(a.get_session(&s.id).await.expect("get").is_some());
    assert!(a.get_partition(&key).await.expect("get").is_some());
    let hits = a.l1_hits();
    assert!(a.get_session(&s.id).await.expect("get").is_some());
    assert!(a.get_partition(&key).await.expect("get").is_some());
    assert_eq!(a.l1_hits(), hits + 2, "A answers from its cache");

    let signed_out = Instant::now();
    assert!(b.remove_session(&s.id).await.expect("remove").is_some());
    let gone = eventually(Duration::from_secs(2), || async {
        a.get_session(&s.id).await.expect("get").is_none()
            && a.get_partition(&key).await.expect("get").is_none()
    })
    .await;
    assert!(gone, "A still serves the signed-out session after 2 s");
    println!(
        "A stopped serving the session {:?} after B's sign-out returned",
        signed_out.elapsed()
    );
    assert!(a.l1_active());
}

/// The request path asks only for a partition's version while its decoded
/// view is current. Once the cached partition has aged out of L1, that
/// version read must bring it back: with `max_age` 300 ms, after the entry
/// aged out, one version read misses (and reads the store) and the next
/// ones are hits again, as fresh as before (a write by the same instance
/// is seen at once).
///
/// # Panics
/// When a version read after the age-out does not refill L1, or reports a
/// stale version.
pub async fn version_reads_refill_an_aged_out_partition<B: L1Backend>(store: B) {
    let cached = CachingStore::with_options(
        store,
        idweb_l1::CacheOptions::default().max_age(Duration::from_millis(300)),
    )
    .expect("cache");
    assert!(cached.wait_until_active(Duration::from_secs(5)).await);
    let s = session(&unique("https://iss"), &unique("sub"), None);
    let key = PartitionKey::Session(s.id.clone());
    cached.put_session(&s).await.expect("put");
    let rt = |v: &[u8]| StoredEntry::new("rt", "RefreshToken", Some(4_000_000_000), v.to_vec());
    let v1 = cached
        .write_partition(&key, PartitionWrite::upsert(vec![rt(b"one")]))
        .await
        .expect("write");
    assert!(cached.get_partition(&key).await.expect("get").is_some());
    let hits = cached.l1_hits();
    assert_eq!(cached.partition_version(&key).await.expect("v"), Some(v1));
    assert_eq!(cached.l1_hits(), hits + 1, "warm: a hit");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let (hits, misses) = (cached.l1_hits(), cached.l1_misses());
    assert_eq!(cached.partition_version(&key).await.expect("v"), Some(v1));
    assert_eq!(
        (cached.l1_hits(), cached.l1_misses()),
        (hits, misses + 1),
        "aged out: one miss"
    );
    for _ in 0..3 {
        assert_eq!(cached.partition_version(&key).await.expect("v"), Some(v1));
    }
    assert_eq!(
        (cached.l1_hits(), cached.l1_misses()),
        (hits + 3, misses + 1),
        "the miss refilled L1: the next version reads are hits"
    );
    let v2 = cached
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![rt(b"two")]).if_version(v1),
        )
        .await
        .expect("write");
    assert_eq!(cached.partition_version(&key).await.expect("v"), Some(v2));
}

/// Fail-closed: `a` caches a session; `kill` cuts `a`'s listening
/// connection (and only it). L1 is then bypassed and emptied: `a` reads
/// from the store, and a session removed meanwhile without any
/// announcement is not served from a stale copy once `a` listens again.
/// Then L1 answers again, and hears invalidations again.
///
/// # Panics
/// When L1 stays active after the kill, answers from a cache that should
/// be empty, or does not come back within 10 s.
pub async fn a_lost_listener_bypasses_and_empties_l1_until_back<B, F, Fut>(
    a: &CachingStore<B>,
    b: &CachingStore<B>,
    kill: F,
) where
    B: L1Backend,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let s = session(&unique("https://iss"), &unique("sub"), Some(&unique("sid")));
    // Written through A: its own announcement is not applied to it, so the
    // read below is cached at once (B's would arrive at some point after).
    a.put_session(&s).await.expect("sign-in");
    assert!(a.get_session(&s.id).await.expect("read").is_some());
    let hits = a.l1_hits();
    assert!(a.get_session(&s.id).await.expect("read").is_some());
    assert_eq!(a.l1_hits(), hits + 1, "A answers from its cache first");

    kill().await;
    assert!(
        eventually(Duration::from_secs(5), || async { !a.l1_active() }).await,
        "L1 still active after its listening connection was killed"
    );
    // The session is removed behind every cache's back (no announcement
    // at all): A, whose cache held it, must not serve it — now (L1 is
    // bypassed) nor once it listens again (L1 was emptied).
    assert!(
        b.inner()
            .remove_session(&s.id)
            .await
            .expect("remove")
            .is_some()
    );
    let (misses, hits) = (a.l1_misses(), a.l1_hits());
    assert!(
        a.get_session(&s.id).await.expect("read").is_none(),
        "A served a session from its cache while its listener was down"
    );
    assert_eq!(a.l1_misses(), misses + 1, "read from the store");
    assert_eq!(a.l1_hits(), hits, "no answer from L1 after the kill");
    assert!(
        a.wait_until_active(Duration::from_secs(10)).await,
        "L1 did not come back after the listener reconnected"
    );
    assert!(
        a.get_session(&s.id).await.expect("read").is_none(),
        "A served a session cached before the listener was lost"
    );
    let t = session(&unique("https://iss"), &unique("sub"), None);
    a.put_session(&t).await.expect("sign-in");
    assert!(a.get_session(&t.id).await.expect("read").is_some());
    let hits = a.l1_hits();
    assert!(a.get_session(&t.id).await.expect("read").is_some());
    assert_eq!(a.l1_hits(), hits + 1, "A answers from its cache again");
    // And invalidations reach it again.
    assert!(b.remove_session(&t.id).await.expect("remove").is_some());
    assert!(
        eventually(Duration::from_secs(2), || async {
            a.get_session(&t.id).await.expect("read").is_none()
        })
        .await,
        "A does not hear invalidations after it came back"
    );
}

/// The cost of acknowledgement: `n` back-channel sign-outs of one session
/// each, through `store`; returns the median and the 99th percentile.
///
/// # Panics
/// When a sign-out does not remove its session.
pub async fn time_sign_outs(store: Arc<dyn Store>, n: usize) -> (Duration, Duration) {
    let signout = SignOut::new(store.clone(), clock(), Duration::from_secs(3600));
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let (iss, sid) = (unique("https://iss"), unique("sid"));
        let s = session(&iss, &unique("sub"), Some(&sid));
        store.put_session(&s).await.expect("sign-in");
        let began = Instant::now();
        let e = signout
            .evict(&SignOutSelector::ProviderSession { iss, sid })
            .await
            .expect("sign-out");
        took.push(began.elapsed());
        assert_eq!(e.sessions_removed, 1);
    }
    took.sort();
    (took[n / 2], took[(n * 99 / 100).min(n - 1)])
}
