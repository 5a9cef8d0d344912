//! A sign-out on one instance is acknowledged across instances: once it has
//! returned, no instance sharing the store answers a request from the
//! session, even instances whose link to Redis is slow.

mod common;

#[path = "../../idweb-test-support/src/relay.rs"]
mod relay;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::scenarios::{clock, session, unique};
use idweb::{SignOut, SignOutSelector, Store};
use idweb_store_redis::{CachingStore, RedisStore};
use relay::DelayRelay;
use tokio::task::JoinSet;

/// How late the slow instances hear from Redis.
const DELAY: Duration = Duration::from_millis(40);

/// Sign-outs in all, and how many run at once (each with its own session
/// and its own clients).
const ROUNDS: usize = 500;
const AT_ONCE: usize = 10;

/// How long the clients go on after the sign-out returned: past the delay,
/// so that a slow instance that would serve from a stale cache is caught.
const AFTER: Duration = Duration::from_millis(70);

/// Deletes the prefix's keys when the test ends, however it ends.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        common::delete_keys(&common::redis_url(), &self.0);
    }
}

async fn instance(url: &str, prefix: &str) -> Arc<CachingStore> {
    let redis = RedisStore::open_with_prefix(url, prefix, clock())
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {url}: {e}"));
    let store = CachingStore::new(redis).expect("cache");
    assert!(
        store.wait_until_active(Duration::from_secs(5)).await,
        "the invalidation subscription did not come up"
    );
    Arc::new(store)
}

/// What one round saw.
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
/// session) through `c`, then the clients go on for [`AFTER`].
async fn round(c: Arc<CachingStore>, a: Arc<CachingStore>, b: Arc<CachingStore>) -> Round {
    let (iss, sid) = (unique("https://iss"), unique("sid"));
    let s = session(&iss, &unique("sub"), Some(&sid), clock().unix_now());
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
    tokio::time::sleep(AFTER).await;
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

/// Three instances with their caches on; two reach Redis through a relay
/// that delays what Redis sends them by 40 ms. Over 500 sign-outs through
/// the third, while clients keep asking the slow two for the session: no
/// request that started after the sign-out returned is answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_serves_a_session_once_its_sign_out_returned() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(prefix.clone());
    let direct = common::redis_url();
    let upstream = direct
        .strip_prefix("redis://")
        .expect("a redis:// URL")
        .trim_end_matches('/')
        .to_string();
    let relay_a = DelayRelay::start(&upstream, DELAY).await.expect("relay");
    let relay_b = DelayRelay::start(&upstream, DELAY).await.expect("relay");
    let c = instance(&direct, &prefix).await;
    let a = instance(&format!("redis://{}", relay_a.addr()), &prefix).await;
    let b = instance(&format!("redis://{}", relay_b.addr()), &prefix).await;

    let started = Instant::now();
    let mut rounds = Vec::with_capacity(ROUNDS);
    while rounds.len() < ROUNDS {
        let mut wave = JoinSet::new();
        for _ in 0..AT_ONCE.min(ROUNDS - rounds.len()) {
            wave.spawn(round(c.clone(), a.clone(), b.clone()));
        }
        while let Some(r) = wave.join_next().await {
            rounds.push(r.expect("round"));
        }
    }
    let after: usize = rounds.iter().map(|r| r.after).sum();
    let served_after: usize = rounds.iter().map(|r| r.served_after).sum();
    let served_before: usize = rounds.iter().map(|r| r.served_before).sum();
    let mut sign_outs: Vec<Duration> = rounds.iter().map(|r| r.sign_out).collect();
    sign_outs.sort();
    let pct = |p: usize| sign_outs[(sign_outs.len() - 1) * p / 100];
    println!(
        "{ROUNDS} sign-outs in {:?}: {served_after} of {after} requests started after a sign-out returned were answered with the session; {served_before} answered with it before; sign-out took {:?} (median), {:?} (p99), {:?} (max)",
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
        after >= ROUNDS,
        "too few requests after the sign-outs: {after}"
    );
    assert_eq!(
        served_after, 0,
        "{served_after} of {after} requests that started after a sign-out returned were answered with the session"
    );
}

/// What acknowledgement costs a sign-out when every instance is healthy:
/// three instances on a direct link, 200 back-channel sign-outs through
/// one of them, timed with the acknowledgement step (`CachingStore`) and
/// without any cache (`RedisStore`). Prints the figures; asserts only that
/// each sign-out removed its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_acknowledgement_costs_a_sign_out_on_a_direct_link() {
    const SIGN_OUTS: usize = 200;
    let prefix = common::unique_prefix();
    let _sweep = Sweep(prefix.clone());
    let url = common::redis_url();
    let c = instance(&url, &prefix).await;
    let _others = [instance(&url, &prefix).await, instance(&url, &prefix).await];
    // Let every instance hear the others' heartbeats for a whole lease.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let plain: Arc<dyn Store> = Arc::new(c.inner().clone());
    let cached: Arc<dyn Store> = c.clone();
    for (name, store) in [("CachingStore", cached), ("RedisStore", plain)] {
        let signout = SignOut::new(store.clone(), clock(), Duration::from_secs(3600));
        let mut took = Vec::with_capacity(SIGN_OUTS);
        for _ in 0..SIGN_OUTS {
            let (iss, sid) = (unique("https://iss"), unique("sid"));
            let s = session(&iss, &unique("sub"), Some(&sid), clock().unix_now());
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
        println!(
            "{name}: back-channel sign-out of one session, 3 instances: {:?} (median), {:?} (p99)",
            took[SIGN_OUTS / 2],
            took[SIGN_OUTS * 99 / 100]
        );
    }
}
