//! Scenarios run against a standalone server and against a cluster.

use std::sync::Arc;

use idweb::{
    Clock, PartitionKey, PartitionWrite, Secret, Session, SessionId, SessionLookup, Store,
    StoreError, StoredEntry, SystemClock, Tombstone,
};
use idweb_store_redis::{CachingStore, RedisStore};
use tokio::sync::Barrier;

pub fn session(iss: &str, sub: &str, sid: Option<&str>, now: i64) -> Session {
    Session::new(
        iss,
        sub,
        sid.map(str::to_string),
        Secret::new("header.payload.sig"),
        now,
        now + 3600,
    )
}

pub fn entry(key: &str, payload: &[u8]) -> StoredEntry {
    StoredEntry::new(key, "RefreshToken", Some(4_000_000_000), payload.to_vec())
}

pub fn unique(what: &str) -> String {
    format!("{what}-{}", SessionId::generate().fingerprint())
}

pub fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Delays by `n` round trips to Redis: shifts one side of a race by units
/// of the time its steps take.
pub async fn round_trips(store: &RedisStore, n: u32) {
    for _ in 0..n {
        let _ = store.session_count().await;
    }
}

/// Hash tags of the sessions, and of the partitions (or versions), whose
/// keys exist under `prefix` on the servers at `urls`.
fn session_and_partition_tags(urls: &[String], prefix: &str) -> (Vec<String>, Vec<String>) {
    let (mut sessions, mut parts) = (Vec::new(), Vec::new());
    for key in urls.iter().flat_map(|u| super::keys_under(u, prefix)) {
        let Some(rest) = key.strip_prefix(&format!("{prefix}:{{s:")) else {
            continue;
        };
        let Some((tag, kind)) = rest.split_once("}:") else {
            continue;
        };
        match kind {
            "session" => sessions.push(tag.to_string()),
            "part" | "ver" => parts.push(tag.to_string()),
            _ => {}
        }
    }
    (sessions, parts)
}

/// The anti-resurrection rule under a real race: a refresh writing tokens
/// through `writer` while sign-out removes the session through `remover`
/// (two connections), `rounds` times. Whatever the interleaving, no
/// partition (nor version) outlives its session, and every write either
/// landed before the removal or was refused. `urls` are the servers to
/// inspect afterwards.
pub async fn partition_write_races_sign_out(
    writer: &RedisStore,
    remover: &RedisStore,
    rounds: u32,
    urls: &[String],
) {
    let (mut landed, mut refused) = (0u32, 0u32);
    for round in 0..rounds {
        let now = clock().unix_now();
        let s = session(&unique("https://iss"), &unique("sub"), None, now);
        writer.put_session(&s).await.expect("put");
        let key = PartitionKey::Session(s.id.clone());
        let v = writer
            .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"0")]))
            .await
            .expect("first write");
        let barrier = Arc::new(Barrier::new(2));
        let write = {
            let (writer, key, barrier) = (writer.clone(), key.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                round_trips(&writer, round % 3).await;
                let mut outcomes = Vec::new();
                // A refresh: conditional on the version it read, then more.
                let mut expected = Some(v);
                for i in 0..4u8 {
                    let mut w = PartitionWrite::upsert(vec![entry("rt", &[i + 1])]);
                    w.expected_version = expected.take();
                    let r = writer.write_partition(&key, w).await;
                    let stop = r.is_err();
                    outcomes.push(r);
                    if stop {
                        break;
                    }
                }
                outcomes
            })
        };
        let remove = {
            let (remover, id, barrier) = (remover.clone(), s.id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                round_trips(&remover, (round / 3) % 4).await;
                remover.remove_session(&id).await
            })
        };
        let outcomes = write.await.expect("writer task");
        let removed = remove.await.expect("remover task").expect("remove");
        assert!(removed.is_some(), "round {round}: the session was there");
        for r in outcomes {
            match r {
                Ok(_) => landed += 1,
                Err(StoreError::SignedOut) => refused += 1,
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        assert_eq!(remover.get_partition(&key).await.expect("get"), None);
        assert_eq!(writer.get_session(&s.id).await.expect("get"), None);
        let late = writer
            .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"late")]))
            .await;
        assert!(matches!(late, Err(StoreError::SignedOut)), "{late:?}");
    }
    let (sessions, parts) = session_and_partition_tags(urls, writer.prefix());
    assert!(sessions.is_empty(), "sessions left: {sessions:?}");
    assert!(
        parts.is_empty(),
        "partitions left without a session: {parts:?}"
    );
    assert_eq!(writer.session_count().await.expect("count"), 0);
    println!("writes landed before the removal: {landed}, refused after it: {refused}");
    // Both orders must have happened: writes that landed before the removal
    // and writes refused after it. (How many of each depends on the machine's
    // load, so only their presence is asserted; the safety checks above hold
    // for every round.)
    assert!(
        refused > 0 && landed > 0,
        "the race did not try both orders (landed {landed}, refused {refused})"
    );
}

/// Sign-out's order (tombstone, then find, then remove) through `signout`
/// against a sign-in for the same provider session through `signin`,
/// `rounds` times: the sign-in is either refused or found and removed; it
/// never survives.
pub async fn sign_in_races_sign_out(signin: &RedisStore, signout: &RedisStore, rounds: u32) {
    let (mut refused, mut evicted) = (0u32, 0u32);
    for round in 0..rounds {
        let now = clock().unix_now();
        let (iss, sid) = (unique("https://iss"), unique("sid"));
        let s = session(&iss, &unique("sub"), Some(&sid), now);
        let lookup = SessionLookup::ByProviderSession { iss, sid };
        let barrier = Arc::new(Barrier::new(2));
        let put = {
            let (store, s, barrier) = (signin.clone(), s.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                round_trips(&store, round % 3).await;
                store.put_session(&s).await
            })
        };
        let evict = {
            let (store, lookup, barrier) = (signout.clone(), lookup.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                round_trips(&store, (round / 3) % 5).await;
                store
                    .put_tombstone(&Tombstone::new(lookup.clone(), now, now + 7200))
                    .await?;
                let mut removed = 0;
                for id in store.find_sessions(&lookup).await? {
                    if store.remove_session(&id).await?.is_some() {
                        removed += 1;
                    }
                }
                Ok::<_, StoreError>(removed)
            })
        };
        let put = put.await.expect("sign-in task");
        let removed = evict.await.expect("sign-out task").expect("evict");
        match put {
            Err(StoreError::SignedOut) => refused += 1,
            Ok(()) => {
                assert_eq!(removed, 1, "round {round}: a stored sign-in must be found");
                evicted += 1;
            }
            Err(e) => panic!("round {round}: unexpected {e:?}"),
        }
        assert_eq!(signin.get_session(&s.id).await.expect("get"), None);
        assert!(
            signin
                .find_sessions(&lookup)
                .await
                .expect("find")
                .is_empty(),
            "round {round}"
        );
    }
    println!("sign-ins refused by the tombstone: {refused}, found and evicted: {evicted}");
    assert!(
        refused > 0 && evicted > 0,
        "the race did not try both orders (refused {refused}, evicted {evicted})"
    );
}

/// A cache in front of `redis`, once its subscription is live.
pub async fn caching(redis: RedisStore) -> Arc<CachingStore> {
    idweb_store_conformance::multi_instance::caching(redis).await
}

/// Instance `a` caches a session and its tokens; instance `b` signs the
/// user out; `a` stops serving them (the scenario shared by every store
/// with an invalidation bus).
pub async fn sign_out_empties_another_instance_cache(a: &CachingStore, b: &CachingStore) {
    idweb_store_conformance::multi_instance::sign_out_empties_another_instance_cache(a, b).await;
}
