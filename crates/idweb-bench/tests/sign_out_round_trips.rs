//! The Redis round trips of a whole sign-out, counted by a relay between
//! the store and Redis (never timed): on a standalone Redis, a sign-out of a
//! user with 1, 2 or 20 sessions — tombstone, every session with its
//! partition and index entries, the logout token's replay record and, for
//! `CachingStore`, the invalidation message — takes at most 3 round trips.
//!
//! Redis is at `127.0.0.1:6379` unless `IDWEB_BENCH_REDIS` names another
//! `HOST:PORT`; without it the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use idweb::{
    JtiRecord, PartitionKey, PartitionWrite, Secret, Session, SessionId, SessionLookup, SignOut,
    SignOutOutcome, SignOutRequest, SignOutSelector, SignOutTarget, Store, StoredEntry,
    SystemClock, unix_seconds,
};
use idweb_bench::redis_fixture::{CountingProxy, RedisAdmin, Traffic};
use idweb_store_redis::{CachingStore, RedisStore};

const MAX_ROUND_TRIPS: u64 = 3;

fn redis_addr() -> String {
    std::env::var("IDWEB_BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

fn now() -> i64 {
    unix_seconds(std::time::SystemTime::now())
}

fn unique(what: &str) -> String {
    format!("{what}-{}", SessionId::generate().fingerprint())
}

/// A user with `n` sessions, each with its own `sid` and a 3-entry partition.
async fn user(store: &Arc<dyn Store>, iss: &str, n: usize) -> (String, Vec<Session>) {
    let sub = unique("sub");
    let mut sessions = Vec::new();
    for _ in 0..n {
        let s = Session::new(
            iss,
            &sub,
            Some(unique("sid")),
            Secret::new("header.payload.sig"),
            now(),
            now() + 3600,
        );
        store.put_session(&s).await.expect("put");
        let entries = ["AccessToken", "RefreshToken", "IdToken"]
            .iter()
            .map(|kind| StoredEntry::new(unique(kind), *kind, Some(now() + 3600), vec![7; 400]))
            .collect();
        store
            .write_partition(
                &PartitionKey::Session(s.id.clone()),
                PartitionWrite::upsert(entries),
            )
            .await
            .expect("write");
        sessions.push(s);
    }
    (sub, sessions)
}

/// Messages published on `channel` of the real Redis, as a plain subscriber
/// hears them.
fn listen(channel: String) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let url = format!("redis://{}", redis_addr());
    std::thread::spawn(move || {
        let client = redis::Client::open(url).expect("url");
        let mut con = client.get_connection().expect("subscriber connection");
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(&channel).expect("subscribe");
        pubsub
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        loop {
            match pubsub.get_message() {
                Ok(m) => {
                    if tx
                        .send(m.get_payload::<String>().unwrap_or_default())
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.is_timeout() => {
                    if tx.send(String::new()).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the test subscriber did not come up");
    rx
}

/// Whether a non-empty message arrives within a few seconds.
fn heard(rx: &mpsc::Receiver<String>) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(m) = rx.recv_timeout(Duration::from_millis(500))
            && !m.is_empty()
        {
            return true;
        }
    }
    false
}

fn drain(rx: &mpsc::Receiver<String>) {
    while rx.try_recv().is_ok() {}
}

struct Measured {
    label: String,
    traffic: Traffic,
}

async fn measure(
    name: &str,
    store: &Arc<dyn Store>,
    proxy: &CountingProxy,
    announced: Option<&mpsc::Receiver<String>>,
) -> Vec<Measured> {
    let iss = unique("https://idp.example");
    // Loads the scripts into Redis's cache (a first call after a restart
    // of Redis costs one more round trip per script).
    let (sub, _) = user(store, &iss, 1).await;
    let warm = SignOutRequest::new(
        SignOutTarget::Lookup(SessionLookup::BySubject {
            iss: iss.clone(),
            sub,
        }),
        now(),
        now() + 7200,
    );
    store.sign_out(&warm).await.expect("warm-up sign-out");
    let (_, warm_local) = user(store, &iss, 1).await;
    let sign_out = SignOut::new(
        store.clone(),
        Arc::new(SystemClock),
        Duration::from_secs(7200),
    );
    sign_out
        .evict(&SignOutSelector::Session(warm_local[0].id.clone()))
        .await
        .expect("warm-up");
    if let Some(rx) = announced {
        drain(rx);
    }

    let mut out = Vec::new();
    for n in [1usize, 2, 20] {
        // Back-channel form: every session of (iss, sub), with the jti.
        let (sub, sessions) = user(store, &iss, n).await;
        let request = back_channel(
            SessionLookup::BySubject {
                iss: iss.clone(),
                sub: sub.clone(),
            },
            &iss,
        );
        let before = proxy.traffic();
        let outcome = store.sign_out(&request).await.expect("sign out");
        let traffic = proxy.traffic().since(&before);
        let SignOutOutcome::SignedOut { removed, .. } = outcome else {
            panic!("{name}: not signed out: {outcome:?}")
        };
        assert_eq!(removed.len(), n, "{name}: every session removed");
        for s in &sessions {
            assert_eq!(store.get_session(&s.id).await.expect("get"), None);
            assert!(
                store
                    .get_partition(&PartitionKey::Session(s.id.clone()))
                    .await
                    .expect("partition")
                    .is_none()
            );
        }
        if let Some(rx) = announced {
            assert!(heard(rx), "{name}: the sign-out was not announced");
        }
        out.push(Measured {
            label: format!("{name}, user with {n} sessions, by (iss, sub) with jti"),
            traffic,
        });
        assert_eq!(
            store.sign_out(&request).await.expect("replay"),
            SignOutOutcome::Replayed
        );

        // Provider-session form: (iss, sid) of one of a user's sessions.
        let (_, sessions) = user(store, &iss, n).await;
        let sid = sessions[0].sid.clone().expect("sid");
        let before = proxy.traffic();
        let e = sign_out
            .evict(&SignOutSelector::ProviderSession {
                iss: iss.clone(),
                sid,
            })
            .await
            .expect("evict");
        let traffic = proxy.traffic().since(&before);
        assert_eq!(e.sessions_removed, 1);
        out.push(Measured {
            label: format!("{name}, user with {n} sessions, by (iss, sid)"),
            traffic,
        });

        // Local sign-out of one session of a user with n.
        let (_, sessions) = user(store, &iss, n).await;
        let before = proxy.traffic();
        let e = sign_out
            .evict(&SignOutSelector::Session(sessions[0].id.clone()))
            .await
            .expect("evict");
        let traffic = proxy.traffic().since(&before);
        assert_eq!(e.sessions_removed, 1);
        out.push(Measured {
            label: format!("{name}, user with {n} sessions, one session (local)"),
            traffic,
        });
        if let Some(rx) = announced {
            drain(rx);
        }
    }
    // A provider session this app does not know, with the jti (most
    // back-channel logouts a provider serving many apps sends).
    let request = back_channel(
        SessionLookup::ByProviderSession {
            iss: iss.clone(),
            sid: unique("unknown-sid"),
        },
        &iss,
    );
    let before = proxy.traffic();
    let outcome = store.sign_out(&request).await.expect("sign out");
    let traffic = proxy.traffic().since(&before);
    assert!(
        matches!(outcome, SignOutOutcome::SignedOut { ref removed, .. } if removed.is_empty()),
        "{name}: {outcome:?}"
    );
    assert_eq!(
        store.sign_out(&request).await.expect("replay"),
        SignOutOutcome::Replayed,
        "{name}: the jti was recorded"
    );
    out.push(Measured {
        label: format!("{name}, {UNKNOWN}"),
        traffic,
    });
    if let Some(rx) = announced {
        drain(rx);
    }
    out
}

/// A back-channel sign-out of `lookup`: by lookup, with a fresh `jti`.
fn back_channel(lookup: SessionLookup, iss: &str) -> SignOutRequest {
    SignOutRequest::new(SignOutTarget::Lookup(lookup), now(), now() + 7200)
        .with_jti(JtiRecord::new(iss.to_string(), unique("jti"), now() + 600))
}

/// The label of the sign-out of a provider session no session of the app has.
const UNKNOWN: &str = "a provider session this app does not know";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_takes_at_most_three_round_trips_whatever_the_sessions() {
    // Deletes this run's keys when dropped.
    let admin = match RedisAdmin::connect(&redis_addr()).await {
        Ok(a) => a,
        Err(e) => panic!(
            "this test needs Redis at {} (or IDWEB_BENCH_REDIS): {e}",
            redis_addr()
        ),
    };
    let proxy = CountingProxy::start(&redis_addr())
        .await
        .expect("start the relay");
    let url = format!("redis://{}", proxy.addr());
    let redis = RedisStore::open_with_prefix(&url, &admin.prefix("rt"), Arc::new(SystemClock))
        .await
        .expect("open through the relay");
    let channel = redis.invalidation_channel();
    let cached = CachingStore::new(redis.clone()).expect("cache");
    assert!(cached.wait_until_active(Duration::from_secs(5)).await);
    let rx = listen(channel);

    let plain: Arc<dyn Store> = Arc::new(redis);
    let cached: Arc<dyn Store> = Arc::new(cached);
    let mut all = measure("RedisStore", &plain, &proxy, None).await;
    all.extend(measure("CachingStore", &cached, &proxy, Some(&rx)).await);

    let mut worst = 0;
    for m in &all {
        println!("{}: {}", m.label, m.traffic.per(1));
        worst = worst.max(m.traffic.round_trips);
        assert!(
            m.traffic.round_trips <= MAX_ROUND_TRIPS,
            "{}: {} round trips ({:?})",
            m.label,
            m.traffic.round_trips,
            m.traffic.commands
        );
        if m.label.ends_with(UNKNOWN) {
            assert_eq!(
                m.traffic.round_trips, 1,
                "{}: {:?}",
                m.label, m.traffic.commands
            );
        }
        assert!(
            !m.traffic.commands.contains_key("PUBLISH"),
            "{}: the announcement took a command of its own",
            m.label
        );
    }
    println!("most round trips of one sign-out: {worst}");
    drop((plain, cached));
    admin.delete_keys().expect("delete this run's keys");
}
