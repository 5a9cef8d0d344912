//! Behaviour beyond the conformance suite: races between sign-out and late
//! writes on separate connections, invalidation of the in-process cache
//! across instances, and the fail-closed rule when Redis goes away.

mod common;

use std::time::{Duration, Instant};

use common::scenarios::{
    caching, clock, entry, partition_write_races_sign_out, session, sign_in_races_sign_out,
    sign_out_empties_another_instance_cache, unique,
};
use idweb::{
    PartitionKey, PartitionWrite, SessionLookup, SignOutOutcome, SignOutRequest, SignOutTarget,
    Store, StoreError, Tombstone,
};
use idweb_store_conformance::multi_instance::eventually;
use idweb_store_redis::{CachingStore, RedisStore};

/// Deletes the prefix's keys when the test ends, however it ends.
struct Sweep(String, String);

impl Drop for Sweep {
    fn drop(&mut self) {
        common::delete_keys(&self.0, &self.1);
    }
}

/// The anti-resurrection rule under a real race, 200 times, on two
/// connections (see the scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_write_racing_sign_out_never_outlives_the_session() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(common::redis_url(), prefix.clone());
    let writer = common::open(&prefix, clock()).await;
    let remover = common::open(&prefix, clock()).await;
    partition_write_races_sign_out(&writer, &remover, 200, &[common::redis_url()]).await;
}

/// Sign-out's order against a sign-in for the same provider session, 200
/// times, on two connections (see the scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_racing_a_sign_out_never_survives_it() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(common::redis_url(), prefix.clone());
    let signin = common::open(&prefix, clock()).await;
    let signout = common::open(&prefix, clock()).await;
    sign_in_races_sign_out(&signin, &signout, 200).await;
}

/// Instance A caches a session and its tokens; instance B signs the user
/// out; A stops serving them within 2 s (in practice, milliseconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_empties_the_cache_of_another() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(common::redis_url(), prefix.clone());
    let a = caching(common::open(&prefix, clock()).await).await;
    let b = caching(common::open(&prefix, clock()).await).await;
    sign_out_empties_another_instance_cache(&a, &b).await;
}

/// A version read refills L1 once the cached partition aged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reads_refill_an_aged_out_partition() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(common::redis_url(), prefix.clone());
    idweb_store_conformance::multi_instance::version_reads_refill_an_aged_out_partition(
        common::open(&prefix, clock()).await,
    )
    .await;
}

/// Updates travel too: B's token refresh replaces what A cached, and a
/// tombstone written by B drops A's cached sessions it covers (which Redis
/// then refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_tombstones_of_one_instance_reach_the_cache_of_another() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(common::redis_url(), prefix.clone());
    let a = caching(common::open(&prefix, clock()).await).await;
    let b = caching(common::open(&prefix, clock()).await).await;
    let (iss, sid) = (unique("https://iss"), unique("sid"));
    let s = session(&iss, &unique("sub"), Some(&sid), clock().unix_now());
    let key = PartitionKey::Session(s.id.clone());
    a.put_session(&s).await.expect("put");
    let v1 = a
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"one")]))
        .await
        .expect("write");
    assert_eq!(
        a.get_partition(&key).await.expect("get").map(|p| p.version),
        Some(v1)
    );
    let v2 = b
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", b"two")]).if_version(v1),
        )
        .await
        .expect("refresh on B");
    let updated = eventually(Duration::from_secs(2), || async {
        a.get_partition(&key).await.expect("get").map(|p| p.version) == Some(v2)
    })
    .await;
    assert!(updated, "A still serves version {v1} after B wrote {v2}");

    assert!(a.get_session(&s.id).await.expect("get").is_some());
    let misses = a.l1_misses();
    assert!(a.get_session(&s.id).await.expect("get").is_some());
    assert_eq!(a.l1_misses(), misses, "cached");
    let now = clock().unix_now();
    b.put_tombstone(&Tombstone::new(
        SessionLookup::ByProviderSession { iss, sid },
        now,
        now + 7200,
    ))
    .await
    .expect("tombstone");
    // Dropped from A's cache, A asks Redis, which refuses the session
    // the tombstone covers (its rows are still stored).
    let dropped = eventually(Duration::from_secs(2), || async {
        let before = a.l1_misses();
        a.get_session(&s.id).await.expect("get").is_none() && a.l1_misses() == before + 1
    })
    .await;
    assert!(
        dropped,
        "A kept the session the tombstone names in its cache"
    );
}

/// `partition_version` reports what `get_partition` would (`None` with no
/// entries or no live session), on Redis alone; through the cache it is
/// answered from a warm L1 (a hit, no miss) and follows other instances'
/// writes and sign-outs as the cached partition does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_versions_come_from_a_warm_l1_and_stay_as_coherent_as_it() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(common::redis_url(), prefix.clone());
    let plain = common::open(&prefix, clock()).await;
    let a = caching(common::open(&prefix, clock()).await).await;
    let b = caching(common::open(&prefix, clock()).await).await;
    let s = session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock().unix_now(),
    );
    let key = PartitionKey::Session(s.id.clone());
    let version = |p: Option<idweb::StoredPartition>| p.map(|p| p.version);

    assert_eq!(plain.partition_version(&key).await.expect("version"), None);
    a.put_session(&s).await.expect("put");
    assert_eq!(plain.partition_version(&key).await.expect("version"), None);
    let v1 = a
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"one")]))
        .await
        .expect("write");
    assert_eq!(
        plain.partition_version(&key).await.expect("version"),
        Some(v1)
    );
    assert_eq!(
        version(plain.get_partition(&key).await.expect("get")),
        Some(v1)
    );

    // Warm: answered in process.
    assert_eq!(version(a.get_partition(&key).await.expect("get")), Some(v1));
    let (hits, misses) = (a.l1_hits(), a.l1_misses());
    for _ in 0..3 {
        assert_eq!(a.partition_version(&key).await.expect("version"), Some(v1));
    }
    assert_eq!((a.l1_hits(), a.l1_misses()), (hits + 3, misses));

    // Another instance's write, then its sign-out, reach it.
    let v2 = b
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", b"two")]).if_version(v1),
        )
        .await
        .expect("write on B");
    let followed = eventually(Duration::from_secs(2), || async {
        a.partition_version(&key).await.expect("version") == Some(v2)
    })
    .await;
    assert!(followed, "A still reports version {v1} after B wrote {v2}");
    assert_eq!(version(a.get_partition(&key).await.expect("get")), Some(v2));
    b.remove_session(&s.id).await.expect("sign-out on B");
    let gone = eventually(Duration::from_secs(2), || async {
        a.partition_version(&key).await.expect("version").is_none()
    })
    .await;
    assert!(
        gone,
        "A still reports a version after B signed the user out"
    );
    assert_eq!(plain.partition_version(&key).await.expect("version"), None);

    // Emptied by removals: no entries, no version (as get_partition).
    let t = session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock().unix_now(),
    );
    let tkey = PartitionKey::Session(t.id.clone());
    plain.put_session(&t).await.expect("put");
    let v = plain
        .write_partition(&tkey, PartitionWrite::upsert(vec![entry("rt", b"x")]))
        .await
        .expect("write");
    let mut empty = PartitionWrite::default();
    empty.remove = vec!["rt".into()];
    plain
        .write_partition(&tkey, empty.if_version(v))
        .await
        .expect("empty it");
    assert_eq!(plain.get_partition(&tkey).await.expect("get"), None);
    assert_eq!(plain.partition_version(&tkey).await.expect("version"), None);
}

/// The fail-closed rule, on a private server that the test kills and
/// starts again: once Redis is gone, reads answer `Unavailable` instead of
/// cached values, writes too, promptly; once it is back, the same store
/// works again and re-enables its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_fails_closed_while_redis_is_away_and_recovers() {
    let mut server = common::RedisProcess::start(common::free_port(), &[]);
    let prefix = common::unique_prefix();
    let redis = RedisStore::open_with_prefix(&server.url(), &prefix, clock())
        .await
        .expect("open");
    let store = CachingStore::new(redis.clone()).expect("cache");
    assert!(store.wait_until_active(Duration::from_secs(5)).await);

    let s = session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock().unix_now(),
    );
    let key = PartitionKey::Session(s.id.clone());
    store.put_session(&s).await.expect("put");
    store
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"x")]))
        .await
        .expect("write");
    for _ in 0..2 {
        assert!(store.get_session(&s.id).await.expect("get").is_some());
        assert!(store.get_partition(&key).await.expect("get").is_some());
    }
    assert!(store.l1_hits() >= 2 && store.l1_len() == 2, "L1 holds both");
    let hits = store.l1_hits();
    assert!(
        store
            .partition_version(&key)
            .await
            .expect("version")
            .is_some()
    );
    assert_eq!(store.l1_hits(), hits + 1, "the version came from L1");

    server.kill();
    assert!(
        eventually(Duration::from_secs(2), || async { !store.l1_active() }).await,
        "L1 still active 2 s after Redis died"
    );
    assert_eq!(store.l1_len(), 0, "L1 was emptied");
    let hits = store.l1_hits();
    let started = Instant::now();
    let read = store.get_session(&s.id).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let source = read
        .as_ref()
        .err()
        .and_then(std::error::Error::source)
        .map(|e| e.is::<redis::RedisError>());
    assert_eq!(source, Some(true), "the Redis error is kept as the source");
    let read = store.get_partition(&key).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let read = store.partition_version(&key).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let s2 = session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock().unix_now(),
    );
    let write = store.put_session(&s2).await;
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );
    let raw = redis.session_count().await;
    assert!(matches!(raw, Err(StoreError::Unavailable(_))), "{raw:?}");
    assert_eq!(store.l1_hits(), hits, "nothing was answered from L1");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "five calls took {:?} while Redis was down",
        started.elapsed()
    );
    println!(
        "five calls failed in {:?} while Redis was down",
        started.elapsed()
    );
    assert!(!store.l1_active());

    // Back (empty: it keeps nothing on disk).
    server.restart();
    let back = Instant::now();
    let recovered = eventually(Duration::from_secs(5), || async {
        store.put_session(&s2).await.is_ok()
    })
    .await;
    println!(
        "writes succeeded again {:?} after the restart",
        back.elapsed()
    );
    assert!(recovered, "writes still fail 5 s after Redis came back");
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
    assert!(store.get_session(&s2.id).await.expect("get").is_some());
    assert!(
        store.wait_until_active(Duration::from_secs(5)).await,
        "L1 not re-enabled 5 s after Redis came back"
    );
    println!("L1 active again {:?} after the restart", back.elapsed());
    let hits = store.l1_hits();
    assert!(store.get_session(&s2.id).await.expect("get").is_some());
    assert!(store.get_session(&s2.id).await.expect("get").is_some());
    assert!(store.l1_hits() > hits, "L1 serves again");
    server.kill();
}

/// Opening a store where nothing listens fails at once with `Unavailable`.
#[tokio::test]
async fn opening_fails_promptly_when_nothing_listens() {
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let started = Instant::now();
    let r = RedisStore::open(&url).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
    for bad in [
        "127.0.0.1:6379",
        "http://127.0.0.1:6379",
        "redis+cluster://",
    ] {
        assert!(matches!(
            RedisStore::open(bad).await,
            Err(StoreError::Unavailable(_))
        ));
    }
    let r = RedisStore::open_with_prefix(&common::redis_url(), "a{b}", clock()).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

/// `rediss://` takes the TLS path: against a server that speaks plain
/// Redis, the handshake fails and `open` answers `Unavailable` (no panic
/// for want of a TLS crypto provider, no hang).
#[tokio::test]
async fn a_tls_url_speaks_tls() {
    let server = common::RedisProcess::start(common::free_port(), &[]);
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let started = Instant::now();
    let r = RedisStore::open(&url).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// Sessions, tombstones, replay records and locks get Redis expiries that
/// follow their own: nothing a store writes stays forever.
#[tokio::test]
async fn keys_expire_with_what_they_hold() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(common::redis_url(), prefix.clone());
    let store = common::open(&prefix, clock()).await;
    let now = clock().unix_now();
    let (iss, sid) = (unique("https://iss"), unique("sid"));
    let s = session(&iss, &unique("sub"), Some(&sid), now);
    store.put_session(&s).await.expect("put");
    store
        .write_partition(
            &PartitionKey::Session(s.id.clone()),
            PartitionWrite::upsert(vec![entry("rt", b"x")]),
        )
        .await
        .expect("write");
    store
        .put_tombstone(&Tombstone::new(
            SessionLookup::ByProviderSession { iss, sid },
            now,
            now + 7200,
        ))
        .await
        .expect("tombstone");
    assert!(
        store
            .record_jti("iss", "jti", now + 300)
            .await
            .expect("jti")
    );
    let _lock = store
        .try_lock("refresh", Duration::from_secs(30))
        .await
        .expect("lock")
        .expect("free");
    let client = redis::Client::open(common::redis_url()).expect("url");
    let mut con = client.get_connection().expect("connect");
    let keys = common::keys_under(&common::redis_url(), &prefix);
    assert!(keys.len() >= 10, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut con).expect("ttl");
        let bound = if key.contains("tombstone") {
            7200
        } else {
            3600
        };
        assert!(ttl > 0 && ttl <= bound, "{key}: TTL {ttl}");
    }
}

/// A sign-out by `(iss, sid)` takes the session out of every index it was
/// in — the `(iss, sub)` one too, which the script learns from the session
/// itself — and out of the count sets: no entry is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_leaves_no_index_entry_behind() {
    let prefix = common::unique_prefix();
    let url = common::redis_url();
    let _sweep = Sweep(url.clone(), prefix.clone());
    let store = common::open(&prefix, clock()).await;
    let now = clock().unix_now();
    let (iss, sub) = (unique("https://iss"), unique("sub"));
    let gone = session(&iss, &sub, Some(&unique("sid")), now);
    let stays = session(&iss, &sub, Some(&unique("sid")), now);
    for s in [&gone, &stays] {
        store.put_session(s).await.expect("put");
    }
    let request = SignOutRequest::new(
        SignOutTarget::Lookup(SessionLookup::ByProviderSession {
            iss: iss.clone(),
            sid: gone.sid.clone().expect("sid"),
        }),
        now,
        now + 7200,
    );
    let outcome = store.sign_out(&request).await.expect("sign out");
    assert_eq!(
        outcome,
        SignOutOutcome::SignedOut {
            removed: vec![gone.id.clone()],
            entries_removed: 0,
        }
    );
    let con = &mut redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connect");
    let mut members = Vec::new();
    for key in common::keys_under(&url, &prefix) {
        let kind: String = redis::cmd("TYPE").arg(&key).query(con).expect("type");
        if kind == "zset" {
            let m: Vec<String> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(con)
                .expect("zrange");
            members.extend(m.into_iter().map(|m| (key.clone(), m)));
        }
    }
    assert!(
        !members.iter().any(|(_, m)| m == gone.id.secret()),
        "an index or count entry of the removed session is left: {:?}",
        members.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let of_stays = members
        .iter()
        .filter(|(_, m)| m == stays.id.secret())
        .count();
    assert_eq!(
        of_stays, 4,
        "the other session keeps its 2 index and 2 count entries"
    );
}

/// Scripts are sent by hash: a server that does not know one (restarted,
/// or after `SCRIPT FLUSH`) is given it and the call runs — the session
/// read, the sign-out and the write after it all still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_the_server_forgot_are_loaded_again() {
    let server = common::RedisProcess::start(common::free_port(), &[]);
    let store = RedisStore::open_with_prefix(&server.url(), &common::unique_prefix(), clock())
        .await
        .expect("open");
    let now = clock().unix_now();
    let (iss, sub) = (unique("https://iss"), unique("sub"));
    let s = session(&iss, &sub, Some(&unique("sid")), now);
    store.put_session(&s).await.expect("put");
    let con = &mut redis::Client::open(server.url().as_str())
        .and_then(|c| c.get_connection())
        .expect("connect");
    let scripts = |con: &mut redis::Connection| -> usize {
        let info: String = redis::cmd("INFO").arg("memory").query(con).expect("info");
        info.lines()
            .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("number_of_cached_scripts")
    };
    let flush = |con: &mut redis::Connection| {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(con)
            .expect("script flush");
        assert_eq!(scripts(con), 0);
    };
    flush(con);
    assert_eq!(
        store.get_session(&s.id).await.expect("get"),
        Some(s.clone())
    );
    assert_eq!(scripts(con), 1, "the session read loaded its script");
    flush(con);
    let request = SignOutRequest::new(
        SignOutTarget::Lookup(SessionLookup::ByProviderSession {
            iss: iss.clone(),
            sid: s.sid.clone().expect("sid"),
        }),
        now,
        now + 7200,
    );
    assert_eq!(
        store.sign_out(&request).await.expect("sign out"),
        SignOutOutcome::SignedOut {
            removed: vec![s.id.clone()],
            entries_removed: 0,
        }
    );
    assert!(scripts(con) >= 1, "the sign-out loaded its script");
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
}
