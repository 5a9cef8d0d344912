//! What the conformance suite cannot see: files, reopening, several handles
//! on one file, purging, data at rest.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use idweb::{
    Clock, ManualClock, PartitionKey, PartitionWrite, SessionId, SessionLookup, Store, StoreError,
    StoredEntry, Tombstone,
};
use idweb_store_conformance::{clock, sample_session};
use idweb_store_sqlite::SqliteStore;
use rusqlite::Connection;
use tokio::sync::Barrier;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", SessionId::generate().fingerprint())
}

fn entry(key: &str, sealed: &[u8]) -> StoredEntry {
    StoredEntry::new(key, "RefreshToken", Some(1_900_000_000), sealed.to_vec())
}

/// A plain connection to the file, to look at rows the store would not show.
fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("raw connection");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

fn count(conn: &Connection, table: &'static str, column: &'static str, value: &str) -> i64 {
    let statement = format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?1");
    conn.query_row(&statement, [value], |r| r.get(0))
        .expect("count")
}

fn rows(conn: &Connection, table: &'static str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// The bytes of the database file and its write-ahead log.
fn file_bytes(path: &Path) -> Vec<u8> {
    common::db_files(path)
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .flatten()
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sessions_partitions_tombstones_and_jtis_survive_reopening() {
    let path = common::db_path("reopen");
    let clock = clock();
    let now = clock.unix_now();
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let s = sample_session(&iss, &sub, Some(&sid), now);
    store.put_session(&s).await.expect("put");
    let key = PartitionKey::Session(s.id.clone());
    store
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", b"sealed-rt"), entry("at", b"sealed-at")]),
        )
        .await
        .expect("write");
    let app = PartitionKey::App {
        client_id: "client".into(),
        tenant: "tenant".into(),
        audience: "api://todo".into(),
    };
    store
        .write_partition(
            &app,
            PartitionWrite::upsert(vec![entry("app", b"sealed-app")]),
        )
        .await
        .expect("write app");
    let gone_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: unique("sid"),
    };
    store
        .put_tombstone(&Tombstone::new(gone_sid.clone(), now, now + 7200))
        .await
        .expect("tombstone");
    assert!(
        store
            .record_jti(&iss, "jti-1", now + 300)
            .await
            .expect("jti")
    );
    let partition = store.get_partition(&key).await.expect("get").expect("some");
    let app_partition = store.get_partition(&app).await.expect("get").expect("some");
    store.close().await;
    assert!(matches!(
        store.get_session(&s.id).await,
        Err(StoreError::Unavailable(_))
    ));

    let reopened = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("reopen");
    assert_eq!(
        reopened.get_session(&s.id).await.expect("get"),
        Some(s.clone())
    );
    let mut again = reopened
        .get_partition(&key)
        .await
        .expect("get")
        .expect("some");
    let mut before = partition.clone();
    again.entries.sort_by(|a, b| a.cache_key.cmp(&b.cache_key));
    before.entries.sort_by(|a, b| a.cache_key.cmp(&b.cache_key));
    assert_eq!(again, before);
    assert_eq!(
        reopened.get_partition(&app).await.expect("get"),
        Some(app_partition)
    );
    assert_eq!(
        reopened
            .find_sessions(&SessionLookup::ByProviderSession {
                iss: iss.clone(),
                sid
            })
            .await
            .expect("find"),
        vec![s.id.clone()]
    );
    assert!(
        reopened
            .get_tombstone(&gone_sid)
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        !reopened
            .record_jti(&iss, "jti-1", now + 300)
            .await
            .expect("jti"),
        "a replay is still a replay after a restart"
    );
    // The version goes on from where it was.
    let v = reopened
        .write_partition(
            &key,
            PartitionWrite::upsert(vec![entry("rt", b"sealed-rt-2")]).if_version(partition.version),
        )
        .await
        .expect("write");
    assert_eq!(v, partition.version + 1);
    reopened.close().await;
    common::remove_db(&path);
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let path = common::db_path("migrate");
    let first = SqliteStore::open(&path).await.expect("open");
    let s = sample_session("https://iss", &unique("sub"), None, 2_000_000_000);
    first.put_session(&s).await.expect("put");
    first.close().await;
    // Opened again, and twice at the same time, on the same file.
    let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
    let (a, b) = (a.expect("open a"), b.expect("open b"));
    assert_eq!(a.get_session(&s.id).await.expect("get"), Some(s.clone()));
    assert_eq!(b.get_session(&s.id).await.expect("get"), Some(s));
    a.close().await;
    b.close().await;
    let conn = raw(&path);
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("versions");
    assert_eq!(versions, vec![1, 2, 3], "each migration recorded once");
    drop(conn);
    common::remove_db(&path);
}

#[tokio::test]
async fn a_new_file_is_migrated_once_by_concurrent_openers() {
    let path = common::db_path("fresh");
    let opens = (0..4).map(|_| SqliteStore::open(path.clone()));
    let stores: Vec<SqliteStore> = futures_join_all(opens).await;
    for store in &stores {
        assert_eq!(store.session_count().await.expect("count"), 0);
        store.close().await;
    }
    let pool = raw(&path);
    assert_eq!(
        rows(&pool, "schema_version"),
        3,
        "each migration recorded once"
    );
    drop(pool);
    common::remove_db(&path);
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<SqliteStore>
where
    F: std::future::Future<Output = Result<SqliteStore, StoreError>> + Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.expect("task").expect("open"));
    }
    stores
}

#[tokio::test]
async fn the_store_adds_no_plaintext_and_signed_out_tokens_leave_the_file() {
    let path = common::db_path("at-rest");
    let clock = clock();
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let s = sample_session("https://iss", &unique("sub"), None, clock.unix_now());
    store.put_session(&s).await.expect("put");
    // What the token cache would have sealed; the store never sees it.
    let plaintext = b"refresh-token-in-clear-5f1e";
    let sealed: Vec<u8> = b"\x01key-7\x00"
        .iter()
        .copied()
        .chain((0..200u16).map(|i| (i.wrapping_mul(151) % 251) as u8))
        .collect();
    let key = PartitionKey::Session(s.id.clone());
    store
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", &sealed)]))
        .await
        .expect("write");
    store.close().await;
    let bytes = file_bytes(&path);
    assert!(
        contains(&bytes, &sealed),
        "sealed bytes are stored verbatim"
    );
    assert!(!contains(&bytes, plaintext));

    // Signed out: the sealed entry is gone from the file, not just unlinked
    // from its table.
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("reopen");
    store.remove_session(&s.id).await.expect("remove");
    store.close().await;
    let bytes = file_bytes(&path);
    assert!(
        !contains(&bytes, &sealed),
        "a removed session's tokens must not linger in free pages"
    );
    assert!(!contains(&bytes, s.id.secret().as_bytes()));
    common::remove_db(&path);
}

#[cfg(unix)]
#[tokio::test]
async fn new_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let path = common::db_path("private");
    let store = SqliteStore::open(&path).await.expect("open");
    let s = sample_session("https://iss", &unique("sub"), None, 2_000_000_000);
    store.put_session(&s).await.expect("put");
    for p in common::db_files(&path) {
        if let Ok(meta) = std::fs::metadata(&p) {
            assert_eq!(meta.permissions().mode() & 0o077, 0, "{}", p.display());
        }
    }
    store.close().await;
    common::remove_db(&path);
}

#[tokio::test]
async fn from_url_opens_the_named_file() {
    let path = common::db_path("url");
    let absolute = std::path::absolute(&path).expect("absolute");
    let url = format!("sqlite://{}", absolute.display());
    let store = SqliteStore::from_url(&url).await.expect("open");
    let s = sample_session("https://iss", &unique("sub"), None, 2_000_000_000);
    store.put_session(&s).await.expect("put");
    store.close().await;
    let again = SqliteStore::from_url(&format!("sqlite:{}", absolute.display()))
        .await
        .expect("open");
    assert_eq!(again.get_session(&s.id).await.expect("get"), Some(s));
    again.close().await;
    common::remove_db(&path);
    assert!(matches!(
        SqliteStore::from_url("postgres://localhost/idweb").await,
        Err(StoreError::Unavailable(_))
    ));
}

/// Two handles on one file, as two processes would have: a sign-out removes
/// the session while a token refresh writes its partition. Either the write
/// is refused, or it committed before the removal and went with it; the
/// partition never outlives the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_session_and_write_partition_race_never_leaves_a_partition() {
    let path = common::db_path("race");
    let clock = clock();
    let refresher = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let signer_out = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let pool = raw(&path);
    let (mut refused, mut before_removal) = (0, 0);
    for round in 0..200 {
        let s = sample_session("https://iss", &unique("sub"), None, clock.unix_now());
        refresher.put_session(&s).await.expect("put");
        let key = PartitionKey::Session(s.id.clone());
        let v = refresher
            .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"old")]))
            .await
            .expect("first write");
        let barrier = Arc::new(Barrier::new(2));
        let remove = tokio::spawn({
            let (store, id, barrier) = (signer_out.clone(), s.id.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                store.remove_session(&id).await
            }
        });
        let write = tokio::spawn({
            let (store, key, barrier) = (refresher.clone(), key.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                let mut w = PartitionWrite::upsert(vec![entry("rt", b"new"), entry("at", b"at")]);
                if round % 2 == 0 {
                    w = w.if_version(v);
                }
                store.write_partition(&key, w).await
            }
        });
        let removed = remove.await.expect("task").expect("remove");
        assert_eq!(
            removed.as_ref().map(|r| &r.id),
            Some(&s.id),
            "round {round}"
        );
        match write.await.expect("task") {
            Ok(_) => before_removal += 1,
            Err(StoreError::SignedOut) => refused += 1,
            Err(e) => panic!("round {round}: unexpected {e:?}"),
        }
        let pkey = key.storage_key();
        assert_eq!(count(&pool, "sessions", "id", s.id.secret()), 0);
        assert_eq!(
            count(&pool, "partitions", "pkey", &pkey),
            0,
            "round {round}"
        );
        assert_eq!(count(&pool, "entries", "pkey", &pkey), 0, "round {round}");
        assert_eq!(refresher.get_partition(&key).await.expect("get"), None);
    }
    assert_eq!(refused + before_removal, 200);
    eprintln!("writes refused: {refused}, writes before the removal: {before_removal}");
    drop(pool);
    refresher.close().await;
    signer_out.close().await;
    common::remove_db(&path);
}

/// A sign-in finishing while a back-channel sign-out of the same provider
/// session runs on another handle: the session is refused, or stored and then
/// found and removed. It never survives the sign-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_and_tombstoned_sign_out_race_never_leaves_a_session() {
    let path = common::db_path("tombstone-race");
    let clock = clock();
    let signer_in = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let signer_out = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    for round in 0..100 {
        let now = clock.unix_now();
        let (iss, sid) = ("https://iss".to_string(), unique("sid"));
        let s = sample_session(&iss, &unique("sub"), Some(&sid), now);
        let lookup = SessionLookup::ByProviderSession {
            iss: iss.clone(),
            sid: sid.clone(),
        };
        let barrier = Arc::new(Barrier::new(2));
        let sign_in = tokio::spawn({
            let (store, s, barrier) = (signer_in.clone(), s.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                store.put_session(&s).await
            }
        });
        let sign_out = tokio::spawn({
            let (store, lookup, barrier) = (signer_out.clone(), lookup.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                store
                    .put_tombstone(&Tombstone::new(lookup.clone(), now, now + 7200))
                    .await?;
                for id in store.find_sessions(&lookup).await? {
                    store.remove_session(&id).await?;
                }
                Ok::<_, StoreError>(())
            }
        });
        sign_out.await.expect("task").expect("sign-out");
        match sign_in.await.expect("task") {
            Ok(()) | Err(StoreError::SignedOut) => {}
            Err(e) => panic!("round {round}: unexpected {e:?}"),
        }
        assert_eq!(
            signer_in.get_session(&s.id).await.expect("get"),
            None,
            "round {round}"
        );
        assert!(
            signer_in
                .find_sessions(&lookup)
                .await
                .expect("find")
                .is_empty()
        );
    }
    signer_in.close().await;
    signer_out.close().await;
    common::remove_db(&path);
}

#[tokio::test]
async fn purge_expired_removes_expired_rows_and_keeps_live_ones() {
    let path = common::db_path("purge");
    let clock = clock();
    let now = clock.unix_now();
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let iss = unique("https://iss");
    let mut short = sample_session(&iss, &unique("sub"), Some(&unique("sid")), now);
    short.expires_at = now + 60;
    let long = sample_session(&iss, &unique("sub"), None, now);
    for s in [&short, &long] {
        store.put_session(s).await.expect("put");
        store
            .write_partition(
                &PartitionKey::Session(s.id.clone()),
                PartitionWrite::upsert(vec![entry("rt", b"r"), entry("at", b"a")]),
            )
            .await
            .expect("write");
    }
    let app = PartitionKey::App {
        client_id: "c".into(),
        tenant: "t".into(),
        audience: "a".into(),
    };
    store
        .write_partition(&app, PartitionWrite::upsert(vec![entry("at", b"app")]))
        .await
        .expect("write app");
    let old_stone = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: unique("sub"),
    };
    let live_stone = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: unique("sub"),
    };
    store
        .put_tombstone(&Tombstone::new(old_stone.clone(), now, now + 60))
        .await
        .expect("tombstone");
    store
        .put_tombstone(&Tombstone::new(live_stone.clone(), now, now + 7200))
        .await
        .expect("tombstone");
    assert!(store.record_jti(&iss, "old", now + 60).await.expect("jti"));
    assert!(
        store
            .record_jti(&iss, "live", now + 7200)
            .await
            .expect("jti")
    );

    assert_eq!(
        store.purge_expired().await.expect("purge"),
        0,
        "nothing expired yet"
    );
    clock.advance(Duration::from_secs(60));
    // 1 session + 1 partition + 2 entries + 1 tombstone + 1 jti.
    assert_eq!(store.purge_expired().await.expect("purge"), 6);
    assert_eq!(store.purge_expired().await.expect("purge"), 0);

    let pool = raw(&path);
    assert_eq!(count(&pool, "sessions", "id", short.id.secret()), 0);
    let short_key = PartitionKey::Session(short.id.clone()).storage_key();
    assert_eq!(count(&pool, "partitions", "pkey", &short_key), 0);
    assert_eq!(count(&pool, "entries", "pkey", &short_key), 0);
    assert_eq!(rows(&pool, "tombstones"), 1);
    assert_eq!(rows(&pool, "jtis"), 1);
    drop(pool);

    assert_eq!(
        store.get_session(&long.id).await.expect("get"),
        Some(long.clone())
    );
    let p = store
        .get_partition(&PartitionKey::Session(long.id.clone()))
        .await
        .expect("get")
        .expect("live partition kept");
    assert_eq!(p.entries.len(), 2);
    assert!(store.get_partition(&app).await.expect("get").is_some());
    assert!(
        store
            .get_tombstone(&live_stone)
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        !store
            .record_jti(&iss, "live", now + 7200)
            .await
            .expect("jti")
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (
            stats.sessions,
            stats.partitions,
            stats.entries,
            stats.tombstones
        ),
        (1, 2, 3, 1)
    );
    store.close().await;
    common::remove_db(&path);
}

#[tokio::test]
async fn purge_works_through_many_batches() {
    let clock = clock();
    let store = SqliteStore::open_in_memory_with_clock(clock.clone())
        .await
        .expect("open");
    let now = clock.unix_now();
    let n = 1234;
    for i in 0..n {
        let s = sample_session("https://iss", &format!("sub-{i}"), None, now);
        store.put_session(&s).await.expect("put");
        store
            .put_tombstone(&Tombstone::new(
                SessionLookup::BySubject {
                    iss: "https://iss".into(),
                    sub: format!("gone-{i}"),
                },
                now,
                now + 10,
            ))
            .await
            .expect("tombstone");
    }
    clock.advance(Duration::from_secs(3600));
    assert_eq!(store.purge_expired().await.expect("purge"), 2 * n);
    assert_eq!(store.stats().await.expect("stats"), Default::default());
}

#[tokio::test]
async fn reading_an_expired_session_deletes_it_and_its_tokens() {
    let path = common::db_path("expired-read");
    let clock = clock();
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let s = sample_session("https://iss", &unique("sub"), None, clock.unix_now());
    store.put_session(&s).await.expect("put");
    let key = PartitionKey::Session(s.id.clone());
    store
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"r")]))
        .await
        .expect("write");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
    let pool = raw(&path);
    assert_eq!(count(&pool, "sessions", "id", s.id.secret()), 0);
    assert_eq!(count(&pool, "entries", "pkey", &key.storage_key()), 0);
    drop(pool);
    // Stored again under the same id, it starts without the old tokens.
    let mut again = s.clone();
    again.created_at = clock.unix_now();
    again.expires_at = clock.unix_now() + 3600;
    store.put_session(&again).await.expect("put");
    assert_eq!(store.get_partition(&key).await.expect("get"), None);
    store.close().await;
    common::remove_db(&path);
}

#[tokio::test]
async fn damaged_rows_are_corrupt_and_can_still_be_removed() {
    let path = common::db_path("corrupt");
    let clock: Arc<ManualClock> = clock();
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let s = sample_session("https://iss", &unique("sub"), None, clock.unix_now());
    store.put_session(&s).await.expect("put");
    raw(&path)
        .execute(
            "UPDATE sessions SET data = '{not json' WHERE id = ?1",
            [s.id.secret()],
        )
        .expect("damage");
    assert!(matches!(
        store.get_session(&s.id).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.remove_session(&s.id).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        store.get_session(&s.id).await.expect("get"),
        None,
        "removed anyway"
    );
    store.close().await;
    common::remove_db(&path);
}

#[tokio::test]
async fn a_missing_directory_is_unavailable_not_a_panic() {
    let path = common::db_path("no-such-dir").join("idweb.db");
    let r = SqliteStore::open(&path).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn a_later_tombstone_replaces_an_earlier_one_and_live_ones_never_shrink() {
    let clock = clock();
    let store = SqliteStore::open_in_memory_with_clock(clock.clone())
        .await
        .expect("open");
    let now = clock.unix_now();
    let selector = SessionLookup::BySubject {
        iss: "https://iss".into(),
        sub: unique("sub"),
    };
    let get = || async {
        store
            .get_tombstone(&selector)
            .await
            .expect("get")
            .map(|t| (t.logged_out_at, t.expires_at))
    };
    let put = |logged_out_at: i64, expires_at: i64| {
        let t = Tombstone::new(selector.clone(), logged_out_at, expires_at);
        let store = store.clone();
        async move { store.put_tombstone(&t).await.expect("put") }
    };
    put(now, now + 100).await;
    put(now - 10, now + 500).await;
    assert_eq!(
        get().await,
        Some((now, now + 100)),
        "an earlier sign-out does not replace"
    );
    put(now + 5, now + 50).await;
    assert_eq!(
        get().await,
        Some((now + 5, now + 100)),
        "a later sign-out replaces, without shortening the live one"
    );
    clock.advance(Duration::from_secs(100));
    assert_eq!(get().await, None, "expired");
    put(now - 20, now + 300).await;
    assert_eq!(
        get().await,
        Some((now - 20, now + 300)),
        "an expired one is replaced"
    );
}

/// A copy of `tests/fixtures/sqlx-0.1.db`, written by the first (sqlx)
/// version of this store, is opened and served as that version served it.
#[tokio::test]
async fn a_database_written_by_the_sqlx_version_is_served() {
    use common::fixture::{self as f, ISS_A, ISS_B};

    let path = common::db_path("sqlx-fixture");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sqlx-0.1.db"),
        &path,
    )
    .expect("copy the fixture");
    let clock = Arc::new(ManualClock::at_unix(f::READ_AT as u64));
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");

    // Migration 3: `created_at` in microseconds, from the first microsecond
    // of the second the sqlx version stored.
    for mut s in [f::alice_1(), f::alice_2(), f::bob()] {
        s.created_at *= idweb::MICROS_PER_SEC;
        assert_eq!(store.get_session(&s.id).await.expect("get"), Some(s));
    }
    assert_eq!(store.get_session(&f::ended().id).await.expect("get"), None);
    let find = |lookup: SessionLookup| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .find_sessions(&lookup)
                .await
                .expect("find")
                .iter()
                .map(|id| id.secret().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        find(SessionLookup::BySubject {
            iss: ISS_A.into(),
            sub: "alice".into()
        })
        .await,
        vec![
            f::alice_1().id.secret().to_string(),
            f::alice_2().id.secret().to_string()
        ]
    );
    assert_eq!(
        find(SessionLookup::ByProviderSession {
            iss: ISS_A.into(),
            sid: "sid-a2".into()
        })
        .await,
        vec![f::alice_2().id.secret().to_string()]
    );
    assert_eq!(
        find(SessionLookup::BySubject {
            iss: ISS_B.into(),
            sub: "bob".into()
        })
        .await,
        vec![f::bob().id.secret().to_string()]
    );

    let alice = PartitionKey::Session(f::alice_1().id);
    let mut p = store
        .get_partition(&alice)
        .await
        .expect("get")
        .expect("alice's partition");
    p.entries.sort_by(|a, b| a.cache_key.cmp(&b.cache_key));
    let (version, entries) = f::alice_1_partition();
    assert_eq!((p.version, p.entries), (version, entries));
    assert_eq!(
        store.partition_version(&alice).await.expect("version"),
        Some(version)
    );
    let app = store
        .get_partition(&f::app_key())
        .await
        .expect("get")
        .expect("app partition");
    assert_eq!((app.version, app.entries), (1, f::app_entries()));
    let ended = PartitionKey::Session(f::ended().id);
    assert_eq!(store.get_partition(&ended).await.expect("get"), None);
    assert_eq!(
        store.partition_version(&ended).await.expect("version"),
        None
    );

    // ... and `logged_out_at` at the last microsecond of its second, so each
    // tombstone covers what it covered.
    for (selector, logged_out_at, expires_at) in [f::sid_tombstone(), f::sub_tombstone()] {
        let micros = logged_out_at * idweb::MICROS_PER_SEC + 999_999;
        assert_eq!(
            store.get_tombstone(&selector).await.expect("get"),
            Some(Tombstone::new(selector, micros, expires_at))
        );
    }
    assert_eq!(
        store
            .get_tombstone(&f::expired_tombstone().0)
            .await
            .expect("get"),
        None
    );
    // The tombstones still refuse the sessions they cover.
    let mut gone = sample_session(ISS_A, "mallory", Some("sid-gone"), f::READ_AT);
    gone.created_at = f::WRITTEN_AT;
    assert!(matches!(
        store.put_session(&gone).await,
        Err(StoreError::SignedOut)
    ));
    let carol = sample_session(ISS_B, "carol", None, f::WRITTEN_AT - 60);
    assert!(matches!(
        store.put_session(&carol).await,
        Err(StoreError::SignedOut)
    ));
    // The migrated `sub` tombstone covers its whole second, not the next one.
    let (sub_selector, sub_logged_out_at, _) = f::sub_tombstone();
    let idweb::SessionLookup::BySubject { iss, sub } = sub_selector else {
        panic!("the fixture's sub tombstone is by subject");
    };
    let mut last = sample_session(&iss, &sub, None, f::READ_AT);
    last.created_at = sub_logged_out_at * idweb::MICROS_PER_SEC + 999_999;
    assert!(matches!(
        store.put_session(&last).await,
        Err(StoreError::SignedOut)
    ));
    let mut next = sample_session(&iss, &sub, None, f::READ_AT);
    next.created_at = (sub_logged_out_at + 1) * idweb::MICROS_PER_SEC;
    store
        .put_session(&next)
        .await
        .expect("a session of the next second is not covered");
    store.remove_session(&next.id).await.expect("remove");

    let (iss, jti, exp) = f::live_jti();
    assert!(
        !store.record_jti(iss, jti, exp).await.expect("jti"),
        "replay"
    );
    let (iss, jti, _) = f::expired_jti();
    assert!(
        store
            .record_jti(iss, jti, f::READ_AT + 300)
            .await
            .expect("jti"),
        "expired"
    );
    let (name, ttl) = f::held_lock();
    assert!(store.try_lock(name, ttl).await.expect("lock").is_none());
    let (name, ttl) = f::expired_lock();
    assert!(store.try_lock(name, ttl).await.expect("lock").is_some());

    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (
            stats.sessions,
            stats.partitions,
            stats.entries,
            stats.tombstones
        ),
        (3, 2, 4, 2)
    );
    // Writes go on from the stored versions.
    let v = store
        .write_partition(
            &alice,
            PartitionWrite::upsert(vec![f::entry("at", "AccessToken", Some(f::READ_AT + 3600))])
                .if_version(version),
        )
        .await
        .expect("write");
    assert_eq!(v, version + 1);
    store.close().await;

    // Migrated once, to version 3.
    let conn = raw(&path);
    assert_eq!(rows(&conn, "schema_version"), 3);
    drop(conn);
    let reopened = SqliteStore::open_with_clock(&path, clock)
        .await
        .expect("reopen");
    assert_eq!(
        reopened.partition_version(&alice).await.expect("version"),
        Some(version + 1)
    );
    reopened.close().await;
    common::remove_db(&path);
}

/// Two stores on one file, as two processes have: each sees the other's
/// committed writes on its next read, including partition versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_see_each_others_writes() {
    let path = common::db_path("two-handles");
    let clock = clock();
    let now = clock.unix_now();
    let a = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open a");
    let b = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open b");
    let s = sample_session("https://iss", &unique("sub"), Some(&unique("sid")), now);
    let key = PartitionKey::Session(s.id.clone());
    for round in 0..20u8 {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        if round == 0 {
            writer.put_session(&s).await.expect("put");
            assert_eq!(
                reader.get_session(&s.id).await.expect("get"),
                Some(s.clone())
            );
        }
        let before = reader.partition_version(&key).await.expect("version");
        let v = writer
            .write_partition(
                &key,
                PartitionWrite::upsert(vec![entry("at", &[round])]).if_version(before.unwrap_or(0)),
            )
            .await
            .expect("write");
        assert_eq!(
            reader.partition_version(&key).await.expect("version"),
            Some(v),
            "round {round}"
        );
        let p = reader
            .get_partition(&key)
            .await
            .expect("get")
            .expect("some");
        assert_eq!((p.version, p.entries[0].sealed.clone()), (v, vec![round]));
    }
    // A removal through one is seen by the other at once.
    b.remove_session(&s.id).await.expect("remove");
    assert_eq!(a.get_session(&s.id).await.expect("get"), None);
    assert_eq!(a.partition_version(&key).await.expect("version"), None);
    assert!(
        a.find_sessions(&SessionLookup::BySubject {
            iss: s.iss.clone(),
            sub: s.sub.clone()
        })
        .await
        .expect("find")
        .is_empty()
    );
    a.close().await;
    b.close().await;
    common::remove_db(&path);
}

/// `partition_version` answers what `get_partition` would: `None` without
/// entries or a live session, the version otherwise.
#[tokio::test]
async fn partition_version_agrees_with_get_partition() {
    let clock = clock();
    let path = common::db_path("version");
    let store = SqliteStore::open_with_clock(&path, clock.clone())
        .await
        .expect("open");
    let check = |key: PartitionKey| {
        let store = store.clone();
        async move {
            let full = store.get_partition(&key).await.expect("get");
            let version = store.partition_version(&key).await.expect("version");
            assert_eq!(version, full.map(|p| p.version), "{key:?}");
            version
        }
    };
    let s = sample_session("https://iss", &unique("sub"), None, clock.unix_now());
    let key = PartitionKey::Session(s.id.clone());
    assert_eq!(check(key.clone()).await, None, "no session");
    store.put_session(&s).await.expect("put");
    assert_eq!(check(key.clone()).await, None, "never written");
    store
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"1")]))
        .await
        .expect("write");
    assert_eq!(check(key.clone()).await, Some(1));
    let mut remove = PartitionWrite::default();
    remove.remove = vec!["rt".into()];
    store.write_partition(&key, remove).await.expect("write");
    assert_eq!(check(key.clone()).await, None, "no entries left");
    store
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"3")]))
        .await
        .expect("write");
    assert_eq!(check(key.clone()).await, Some(3));
    let app = PartitionKey::App {
        client_id: "c".into(),
        tenant: "t".into(),
        audience: unique("a"),
    };
    assert_eq!(check(app.clone()).await, None);
    store
        .write_partition(&app, PartitionWrite::upsert(vec![entry("at", b"a")]))
        .await
        .expect("write");
    assert_eq!(check(app.clone()).await, Some(1));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(check(key.clone()).await, None, "the session expired");
    assert_eq!(
        check(app).await,
        Some(1),
        "app partitions do not expire with sessions"
    );
    store.close().await;
    common::remove_db(&path);
}
