//! What a session costs in Redis, and how sessions are encoded: the memory
//! of a session shaped like the benches' (`MEMORY USAGE` of every key it
//! creates, its share of the shared sets included) within the budget of
//! 5 KB, and sessions written by earlier versions (JSON) still read.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use idweb::msal::{AccessTokenEntry, CacheEntry, IdTokenEntry, RefreshTokenEntry};
use idweb::{
    CacheKeys, PartitionKey, Secret, Session, SessionLookup, Store, SystemClock, TokenCache,
};
use redis::Connection;

const ISS: &str = "http://127.0.0.1:38211";
const ENV: &str = "127.0.0.1";
const CLIENT: &str = "bench-0a1b2c3d4e5f";
const TARGET: &str = "api://todo/todos.read api://todo/todos.write";

fn bench_session(sub: &str, now: i64) -> Session {
    Session::new(
        ISS,
        sub,
        Some(format!(
            "sid-{}",
            idweb::SessionId::generate().fingerprint()
        )),
        Secret::new("i".repeat(900)),
        // Created within second `now`, in microseconds as sign-in stores it.
        now * idweb::MICROS_PER_SEC + 654_321,
        now + 12 * 3600,
    )
}

fn bench_entries(s: &Session, now: i64) -> Vec<CacheEntry> {
    vec![
        CacheEntry::AccessToken(AccessTokenEntry {
            home_account_id: Some(s.account_id.clone()),
            environment: ENV.into(),
            client_id: CLIENT.into(),
            realm: "bench".into(),
            target: TARGET.into(),
            secret: Secret::new("a".repeat(1200)),
            token_type: Some("Bearer".into()),
            cached_at: Some(now),
            expires_on: now + 3600,
            extended_expires_on: Some(now + 3600),
            refresh_on: None,
            key_id: None,
            ext_cache_key: None,
            extra: Default::default(),
        }),
        CacheEntry::RefreshToken(RefreshTokenEntry {
            home_account_id: Some(s.account_id.clone()),
            environment: ENV.into(),
            client_id: CLIENT.into(),
            secret: Secret::new("r".repeat(400)),
            target: Some(format!("{TARGET} offline_access openid profile")),
            last_modification_time: Some(now),
            family_id: None,
            extra: Default::default(),
        }),
        CacheEntry::IdToken(IdTokenEntry {
            home_account_id: Some(s.account_id.clone()),
            environment: ENV.into(),
            realm: "bench".into(),
            client_id: CLIENT.into(),
            secret: Secret::new("i".repeat(900)),
            extra: Default::default(),
        }),
    ]
}

/// Sessions written: more than Redis keeps in its compact sorted-set
/// encoding (128), so that the shared sets are measured in the encoding a
/// real store has.
const SESSIONS: usize = 300;

/// The budget: bytes of Redis memory per bench-shaped session.
const BUDGET: u64 = 5 * 1024;

/// Deletes the prefix's keys when the test ends, however it ends.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        common::delete_keys(&common::redis_url(), &self.0);
        if let Ok(mut con) = redis::Client::open(common::redis_url())
            .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(2)))
        {
            let _: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(claim_key(&self.0)).query(&mut con);
        }
    }
}

fn claim_key(prefix: &str) -> String {
    format!("idweb-test-claim:{prefix}")
}

/// A prefix as long as the default one (`idweb`), since every key name
/// holds it and its bytes count: `m` and four hex digits, claimed in Redis
/// (`SET NX` on a key outside the prefix) so that no concurrent run uses it,
/// and holding no key yet.
fn production_length_prefix(con: &mut Connection) -> Sweep {
    loop {
        let prefix = format!("m{}", &idweb::SessionId::generate().fingerprint()[..4]);
        let claimed: Option<String> = redis::cmd("SET")
            .arg(claim_key(&prefix))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(3600)
            .query(con)
            .expect("SET NX");
        if claimed.is_none() {
            continue;
        }
        let sweep = Sweep(prefix);
        if common::keys_under(&common::redis_url(), &sweep.0).is_empty() {
            return sweep;
        }
    }
}

fn connection() -> Connection {
    redis::Client::open(common::redis_url())
        .expect("url")
        .get_connection_with_timeout(std::time::Duration::from_secs(2))
        .expect("these tests need Redis")
}

fn memory_usage(con: &mut Connection, key: &str) -> u64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query::<Option<u64>>(con)
        .expect("MEMORY USAGE")
        .unwrap_or(0)
}

/// Writes a bench-shaped session as sign-in does (the session with its ID
/// token sealed, then its three sealed entries through the token cache).
async fn write_bench_session(cache: &TokenCache, sub: &str) -> Session {
    let now = idweb::unix_seconds(std::time::SystemTime::now());
    let s = bench_session(sub, now);
    cache.put_session(&s).await.expect("put_session");
    cache
        .write(
            &PartitionKey::Session(s.id.clone()),
            &bench_entries(&s, now),
            &[],
            None,
        )
        .await
        .expect("write the partition");
    s
}

/// Redis memory per bench-shaped session: every key under the store's
/// prefix, summed, divided by the sessions. Printed with where it goes; at
/// most [`BUDGET`]. The session record must cost less than the JSON earlier
/// versions wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_per_bench_shaped_session() {
    let mut con = connection();
    let sweep = production_length_prefix(&mut con);
    let prefix = sweep.0.clone();
    let store: Arc<dyn Store> = Arc::new(common::open(&prefix, Arc::new(SystemClock)).await);
    let cache = TokenCache::new(store.clone(), Arc::new(CacheKeys::generate()));
    let mut last = None;
    for i in 0..SESSIONS {
        last = Some(write_bench_session(&cache, &format!("user-{i:07}")).await);
    }
    let last = last.expect("a session");

    let mut by_kind: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for key in common::keys_under(&common::redis_url(), &prefix) {
        let kind = key.rsplit(':').next().unwrap_or_default().to_string();
        let slot = by_kind.entry(kind).or_default();
        slot.0 += 1;
        slot.1 += memory_usage(&mut con, &key);
    }
    let n = SESSIONS as u64;
    let total: u64 = by_kind.values().map(|(_, bytes)| bytes).sum::<u64>() / n;
    let sealed: u64 = store
        .get_partition(&PartitionKey::Session(last.id.clone()))
        .await
        .expect("partition")
        .expect("entries")
        .entries
        .iter()
        .map(|e| (e.cache_key.len() + e.sealed.len()) as u64)
        .sum();
    eprintln!(
        "Redis memory per bench-shaped session ({SESSIONS} sessions, MEMORY USAGE of every key): {total} bytes"
    );
    for (kind, (keys, bytes)) in &by_kind {
        eprintln!("  {kind}: {keys} keys, {} bytes per session", bytes / n);
    }
    eprintln!(
        "  of which sealed entries and their cache keys, as the token cache hands them over: {sealed} bytes; the ID token: {} bytes, held once (sealed, in the session)",
        last.id_token.secret().len()
    );

    // The record against the JSON earlier versions wrote, for one session.
    let key = session_key(&prefix, &last);
    let compact = memory_usage(&mut con, &key);
    let stored = store
        .get_session(&last.id)
        .await
        .expect("get")
        .expect("stored");
    let json = serde_json::to_vec(&stored).expect("json");
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("data")
        .arg(&json)
        .query(&mut con)
        .expect("HSET");
    let as_json = memory_usage(&mut con, &key);
    eprintln!("  one session hash: {compact} bytes (compact record), {as_json} bytes (JSON)");
    assert!(compact < as_json, "{compact} >= {as_json}");
    assert!(total > sealed, "every key was counted");
    // The partition still reads as sign-in wrote it, the ID token included.
    let read = cache
        .read(&PartitionKey::Session(last.id.clone()))
        .await
        .expect("read");
    assert_eq!(read.unreadable, 0);
    assert_eq!(read.entries.len(), 3);
    assert!(
        read.entries
            .iter()
            .any(|e| e.kind().as_str() == "IdToken" && e.secret() == Some(last.id_token.secret())),
        "the IdToken entry gets the session's ID token back"
    );
    assert!(
        total <= BUDGET,
        "{total} bytes per bench-shaped session, over the budget of {BUDGET}"
    );
}

/// The name of the session hash of `s` (see the key layout).
fn session_key(prefix: &str, s: &Session) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    use base64::Engine;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(digest(&SHA256, s.id.secret().as_bytes()).as_ref());
    format!("{prefix}:{{s:{tag}}}:session")
}

/// A session written by an earlier version (JSON in the hash) is read,
/// listed, found and removed as before; rewritten, it takes the compact form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_written_as_json_are_still_read_and_removed() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(prefix.clone());
    let store: Arc<dyn Store> = Arc::new(common::open(&prefix, Arc::new(SystemClock)).await);
    let now = idweb::unix_seconds(std::time::SystemTime::now());
    let mut s = bench_session("legacy-user", now);
    s.name = Some("Legacy".into());
    store.put_session(&s).await.expect("put_session");
    let key = session_key(&prefix, &s);
    let mut con = connection();
    // Earlier versions kept `created_at` in whole seconds; it reads back as
    // the first microsecond of that second.
    let mut then = s.clone();
    then.created_at = s.created_at.div_euclid(idweb::MICROS_PER_SEC);
    let json = serde_json::to_vec(&then).expect("json");
    s.created_at = then.created_at * idweb::MICROS_PER_SEC;
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("data")
        .arg(&json)
        .query(&mut con)
        .expect("HSET");

    assert_eq!(
        store.get_session(&s.id).await.expect("get"),
        Some(s.clone())
    );
    assert_eq!(
        store.list_sessions(None, 10).await.expect("list"),
        vec![s.clone()]
    );
    let lookup = SessionLookup::BySubject {
        iss: ISS.into(),
        sub: "legacy-user".into(),
    };
    assert_eq!(
        store.find_sessions(&lookup).await.expect("find"),
        vec![s.id.clone()]
    );
    store.put_session(&s).await.expect("rewrite");
    let data: Vec<u8> = redis::cmd("HGET")
        .arg(&key)
        .arg("data")
        .query(&mut con)
        .expect("HGET");
    assert_ne!(data.first(), Some(&b'{'), "rewritten in the compact form");
    assert!(data.len() < json.len());

    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("data")
        .arg(&json)
        .query(&mut con)
        .expect("HSET");
    assert_eq!(
        store.remove_session(&s.id).await.expect("remove"),
        Some(s.clone())
    );
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
    assert!(store.find_sessions(&lookup).await.expect("find").is_empty());
}

/// A partition as the previous version wrote it — its version in a key of
/// its own, every entry sealed MSAL JSON, the ID token inline in the
/// `IdToken` entry — reads whole, serves its version, and takes the current
/// form on the next write (the version carried over, the ID token then
/// held once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_written_by_the_previous_version_still_work() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(prefix.clone());
    let store: Arc<dyn Store> = Arc::new(common::open(&prefix, Arc::new(SystemClock)).await);
    let keys = Arc::new(CacheKeys::generate());
    let cache = TokenCache::new(store.clone(), keys.clone());
    let now = idweb::unix_seconds(std::time::SystemTime::now());
    let s = bench_session("previous-version", now);
    cache.put_session(&s).await.expect("put_session");
    let key = PartitionKey::Session(s.id.clone());
    let entries = bench_entries(&s, now);

    // Written as before: MSAL JSON sealed with the entry's associated data
    // (partition, NUL, cache key), the version in `:ver`.
    let mut con = connection();
    let part = session_key(&prefix, &s).replace(":session", ":part");
    let ver = session_key(&prefix, &s).replace(":session", ":ver");
    for e in &entries {
        let cache_key = e.cache_key();
        let mut aad = key.storage_key().into_bytes();
        aad.push(0);
        aad.extend_from_slice(cache_key.as_bytes());
        let sealed = keys.seal(&aad, e.to_msal_json().to_string().as_bytes());
        let mut value = match e.expires_on() {
            Some(t) if e.kind().as_str() == "AccessToken" => t.to_string().into_bytes(),
            _ => Vec::new(),
        };
        let kind = e.kind().as_str();
        value.extend_from_slice(format!(":{}:{kind}", kind.len()).as_bytes());
        value.extend_from_slice(&sealed);
        let _: i64 = redis::cmd("HSET")
            .arg(&part)
            .arg(&cache_key)
            .arg(value)
            .query(&mut con)
            .expect("HSET");
    }
    let _: () = redis::cmd("SET")
        .arg(&ver)
        .arg(7)
        .query(&mut con)
        .expect("SET");

    assert_eq!(
        store.partition_version(&key).await.expect("version"),
        Some(7)
    );
    let read = cache.read(&key).await.expect("read");
    assert_eq!((read.version, read.unreadable), (7, 0));
    let mut secrets: Vec<(String, Option<String>)> = read
        .entries
        .iter()
        .map(|e| (e.cache_key(), e.secret().map(str::to_owned)))
        .collect();
    let mut expected: Vec<(String, Option<String>)> = entries
        .iter()
        .map(|e| (e.cache_key(), e.secret().map(str::to_owned)))
        .collect();
    secrets.sort();
    expected.sort();
    assert!(secrets == expected, "every entry reads as written");
    let idweb_stats = store.stats().await.expect("stats");
    assert_eq!(idweb_stats.entries, 3);

    // The next write: conditional on the version read, carried over.
    let v = cache
        .write(&key, &entries, &[], Some(7))
        .await
        .expect("write");
    assert_eq!(v, 8);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&ver)
        .query(&mut con)
        .expect("EXISTS");
    assert_eq!(exists, 0, "the version moved into the partition hash");
    assert_eq!(
        store.partition_version(&key).await.expect("version"),
        Some(8)
    );
    let stored = store
        .get_partition(&key)
        .await
        .expect("get")
        .expect("partition");
    assert_eq!(stored.entries.len(), 3, "the version field is not an entry");
    let id_token_entry = stored
        .entries
        .iter()
        .find(|e| e.kind == "IdToken")
        .expect("IdToken entry");
    assert!(
        id_token_entry.sealed.len() < 200,
        "the ID token is no longer held in the partition"
    );
    let again = cache.read(&key).await.expect("read");
    assert_eq!(again.unreadable, 0);
    let mut secrets: Vec<(String, Option<String>)> = again
        .entries
        .iter()
        .map(|e| (e.cache_key(), e.secret().map(str::to_owned)))
        .collect();
    secrets.sort();
    assert!(secrets == expected, "and reads the same after the write");
    assert_eq!(store.stats().await.expect("stats").entries, 3);
    assert!(store.remove_partition(&key).await.expect("remove"));
    assert_eq!(store.partition_version(&key).await.expect("version"), None);
}
