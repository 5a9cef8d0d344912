//! Behaviour beyond the conformance suite, on the real server: races
//! between sign-out and late writes across two pools, migrations (from empty,
//! from version 1, concurrent openers, a newer schema), the purge, the
//! atomic sign-out, and connections killed or refused mid-run.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{DropSchema, TestDatabase, unique_name};
use idweb::{
    Clock, JtiRecord, ManualClock, PartitionKey, PartitionWrite, Secret, Session, SessionId,
    SessionLookup, SignOutOutcome, SignOutRequest, SignOutTarget, Store, StoreError, StoredEntry,
    SystemClock, Tombstone,
};
use idweb_store_postgres::{PostgresConfig, PostgresError, PostgresStore, latest_version};
use tokio::sync::Barrier;

fn session(iss: &str, sub: &str, sid: Option<&str>, now: i64) -> Session {
    Session::new(
        iss,
        sub,
        sid.map(str::to_string),
        Secret::new("header.payload.sig"),
        now,
        now + 3600,
    )
}

fn entry(key: &str, payload: &[u8]) -> StoredEntry {
    StoredEntry::new(key, "RefreshToken", Some(4_000_000_000), payload.to_vec())
}

fn unique(what: &str) -> String {
    format!("{what}-{}", SessionId::generate().fingerprint())
}

/// The sorted ids a sign-out removed (panics on a replay).
fn removed_ids(outcome: SignOutOutcome) -> Vec<String> {
    let SignOutOutcome::SignedOut { removed, .. } = outcome else {
        panic!("not signed out: {outcome:?}");
    };
    let mut ids: Vec<String> = removed.iter().map(|i| i.secret().to_string()).collect();
    ids.sort();
    ids
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Delays by `n` round trips: shifts one side of a race by units of the
/// time its steps take.
async fn round_trips(store: &PostgresStore, n: u32) {
    for _ in 0..n {
        let _ = store
            .get_tombstone(&SessionLookup::BySubject {
                iss: String::new(),
                sub: String::new(),
            })
            .await;
    }
}

/// Rows of a table in a schema, by the test's own connection.
async fn rows(schema: &str, table: &str) -> i64 {
    common::admin()
        .await
        .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// The anti-resurrection rule under a real race, 200 rounds, on two pools:
/// a refresh writing tokens through `writer` while sign-out removes the
/// session through `remover`. Whatever the interleaving, no partition (nor
/// entry) outlives its session, and every write either landed before the
/// removal or was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_write_racing_sign_out_never_outlives_the_session() {
    let schema = unique_name("race");
    let _drop = DropSchema(schema.clone());
    let writer = common::open(&schema, clock()).await;
    let remover = common::open(&schema, clock()).await;
    let (mut landed, mut refused) = (0u32, 0u32);
    for round in 0..200u32 {
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
    for table in ["sessions", "partitions", "entries"] {
        assert_eq!(rows(&schema, table).await, 0, "{table} left behind");
    }
    println!("writes landed before the removal: {landed}, refused after it: {refused}");
    assert!(
        refused > 0 && landed > 0,
        "the race did not try both orders (landed {landed}, refused {refused})"
    );
}

/// Sign-out's order (tombstone, then find, then remove) on one pool against
/// a sign-in for the same provider session on another, 200 rounds: the
/// sign-in is either refused or found and removed; it never survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_racing_a_sign_out_never_survives_it() {
    let schema = unique_name("signin");
    let _drop = DropSchema(schema.clone());
    let signin = common::open(&schema, clock()).await;
    let signout = common::open(&schema, clock()).await;
    let (mut refused, mut evicted) = (0u32, 0u32);
    for round in 0..200u32 {
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
                .is_empty()
        );
    }
    println!("sign-ins refused by the tombstone: {refused}, found and evicted: {evicted}");
    assert!(
        refused > 0 && evicted > 0,
        "the race did not try both orders (refused {refused}, evicted {evicted})"
    );
}

/// The atomic sign-out: jti, tombstone and removals in one call; a replay
/// does nothing; a later sign-in of the same provider session is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_records_jti_tombstone_and_removals_together() {
    let schema = unique_name("signout");
    let _drop = DropSchema(schema.clone());
    let store = common::open(&schema, clock()).await;
    let now = clock().unix_now();
    let (iss, sub, sid) = (unique("https://iss"), unique("sub"), unique("sid"));
    let a = session(&iss, &sub, Some(&sid), now);
    let b = session(&iss, &sub, Some(&unique("sid")), now);
    for s in [&a, &b] {
        store.put_session(s).await.expect("put");
        store
            .write_partition(
                &PartitionKey::Session(s.id.clone()),
                PartitionWrite::upsert(vec![entry("rt", b"x"), entry("at", b"y")]),
            )
            .await
            .expect("write");
    }
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: sub.clone(),
    };
    let request = SignOutRequest::new(SignOutTarget::Lookup(by_sub.clone()), now, now + 7200)
        .with_jti(JtiRecord::new(iss.clone(), "jti-1", now + 300));
    let out = store.sign_out(&request).await.expect("sign out");
    let mut expected = vec![a.id.secret().to_string(), b.id.secret().to_string()];
    expected.sort();
    assert_eq!(removed_ids(out), expected);
    for table in ["sessions", "partitions", "entries"] {
        assert_eq!(rows(&schema, table).await, 0, "{table}");
    }
    assert!(store.get_tombstone(&by_sub).await.expect("get").is_some());
    assert!(store.is_jti_recorded(&iss, "jti-1").await.expect("jti"));
    assert_eq!(rows(&schema, "jtis").await, 1);
    assert_eq!(
        store.sign_out(&request).await.expect("replay"),
        SignOutOutcome::Replayed
    );
    let late = store.put_session(&session(&iss, &sub, None, now)).await;
    assert!(matches!(late, Err(StoreError::SignedOut)), "{late:?}");
}

/// All or nothing: a sign-out whose removal fails (a trigger refuses the
/// delete) leaves no replay record and no tombstone, for either kind of
/// target; once the fault is gone, the retry of the same request does it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_failing_midway_writes_nothing() {
    let schema = unique_name("signfail");
    let _drop = DropSchema(schema.clone());
    let store = common::open(&schema, clock()).await;
    let now = clock().unix_now();
    let (iss, sid) = (unique("https://iss"), unique("sid"));
    let a = session(&iss, &unique("sub"), Some(&sid), now);
    let b = session(&iss, &unique("sub"), Some(&unique("sid")), now);
    for s in [&a, &b] {
        store.put_session(s).await.expect("put");
    }
    let admin = common::admin().await;
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'removal refused'; END $$;
             CREATE TRIGGER refuse BEFORE DELETE ON {schema}.sessions
                 FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();"
        ))
        .await
        .expect("trigger");
    let by_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid.clone(),
    };
    let by_lookup = SignOutRequest::new(SignOutTarget::Lookup(by_sid.clone()), now, now + 600)
        .with_jti(JtiRecord::new(iss.clone(), "jti-a", now + 300));
    let by_id = SignOutRequest::new(SignOutTarget::Session(b.id.clone()), now, now + 600)
        .with_jti(JtiRecord::new(iss.clone(), "jti-b", now + 300));
    for request in [&by_lookup, &by_id] {
        let r = store.sign_out(request).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }
    assert_eq!(rows(&schema, "jtis").await, 0);
    assert_eq!(rows(&schema, "tombstones").await, 0);
    for s in [&a, &b] {
        assert_eq!(
            store.get_session(&s.id).await.expect("get"),
            Some(s.clone())
        );
    }

    admin
        .batch_execute(&format!("DROP TRIGGER refuse ON {schema}.sessions"))
        .await
        .expect("drop trigger");
    let out = store.sign_out(&by_lookup).await.expect("retry");
    assert_eq!(removed_ids(out), vec![a.id.secret().to_string()]);
    let out = store.sign_out(&by_id).await.expect("retry");
    assert_eq!(removed_ids(out), vec![b.id.secret().to_string()]);
    assert_eq!(rows(&schema, "jtis").await, 2);
    let b_sid = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: b.sid.clone().expect("sid"),
    };
    for selector in [&by_sid, &b_sid] {
        assert!(store.get_tombstone(selector).await.expect("get").is_some());
    }
}

/// The same logout token delivered many times at once, on two pools: it is
/// carried out exactly once, every other delivery is a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_logout_token_sign_out_once() {
    let schema = unique_name("signrace");
    let _drop = DropSchema(schema.clone());
    let stores = [
        common::open(&schema, clock()).await,
        common::open(&schema, clock()).await,
    ];
    let now = clock().unix_now();
    for round in 0..20 {
        let (iss, sub) = (unique("https://iss"), unique("sub"));
        let s = session(&iss, &sub, Some(&unique("sid")), now);
        stores[0].put_session(&s).await.expect("put");
        let request = SignOutRequest::new(
            SignOutTarget::Lookup(SessionLookup::BySubject {
                iss: iss.clone(),
                sub,
            }),
            now,
            now + 600,
        )
        .with_jti(JtiRecord::new(iss, unique("jti"), now + 300));
        let barrier = Arc::new(Barrier::new(6));
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let (store, request, barrier) =
                    (stores[i % 2].clone(), request.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.sign_out(&request).await.expect("sign out")
                })
            })
            .collect();
        let mut signed_out = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                SignOutOutcome::Replayed => {}
                other => signed_out.push(removed_ids(other)),
            }
        }
        assert_eq!(
            signed_out,
            vec![vec![s.id.secret().to_string()]],
            "round {round}"
        );
    }
}

/// From empty: the schema is created at the latest version; opening again
/// changes nothing; a schema of a newer version is refused.
#[tokio::test]
async fn migrations_from_empty_and_newer_schemas_refused() {
    let schema = unique_name("mig");
    let _drop = DropSchema(schema.clone());
    let store = common::open(&schema, clock()).await;
    assert_eq!(store.schema_version(), latest_version());
    assert_eq!(latest_version(), 4);
    let admin = common::admin().await;
    let versions: Vec<i64> = admin
        .query(
            &format!("SELECT version FROM {schema}.schema_version ORDER BY 1"),
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    let again = common::open(&schema, clock()).await;
    assert_eq!(again.schema_version(), 4);
    assert_eq!(rows(&schema, "schema_version").await, 4);

    admin
        .execute(
            &format!("INSERT INTO {schema}.schema_version VALUES (99, 'future', 0)"),
            &[],
        )
        .await
        .expect("a future version");
    let r = PostgresConfig::parse(&common::server_url())
        .expect("url")
        .with_schema(&schema)
        .expect("schema")
        .open(clock())
        .await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
}

/// From the previous version: a store at version 1 holds sessions and
/// tokens; opening with this build migrates to version 2 in place, keeps
/// the data, and the new version's function works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_from_version_1_keeps_the_data() {
    let db = TestDatabase::create().await;
    let v1 = PostgresConfig::parse(&db.url())
        .expect("url")
        .with_max_schema_version(1)
        .open(clock())
        .await
        .expect("open at version 1");
    assert_eq!(v1.schema_version(), 1);
    let now = clock().unix_now();
    let (iss, sid) = (unique("https://iss"), unique("sid"));
    let s = session(&iss, &unique("sub"), Some(&sid), now);
    v1.put_session(&s).await.expect("put");
    let key = PartitionKey::Session(s.id.clone());
    let v = v1
        .write_partition(&key, PartitionWrite::upsert(vec![entry("rt", b"kept")]))
        .await
        .expect("write");
    let lookup = SessionLookup::ByProviderSession {
        iss: iss.clone(),
        sid: sid.clone(),
    };
    // Version 1 has no `sign_out` function: the order-based sign-out.
    let other = session(&iss, &unique("sub"), Some(&unique("sid")), now);
    v1.put_session(&other).await.expect("put");
    let out = v1
        .sign_out(&SignOutRequest::new(
            SignOutTarget::Session(other.id.clone()),
            now,
            now + 60,
        ))
        .await
        .expect("sign out at version 1");
    assert_eq!(removed_ids(out), vec![other.id.secret().to_string()]);
    drop(v1);

    let v2 = PostgresStore::open(&db.url()).await.expect("migrate");
    assert_eq!(v2.schema_version(), latest_version());
    // Version 3 keeps `created_at` in microseconds (see the test below).
    let mut read = s.clone();
    read.created_at *= idweb::MICROS_PER_SEC;
    assert_eq!(v2.get_session(&s.id).await.expect("get"), Some(read));
    let p = v2
        .get_partition(&key)
        .await
        .expect("get")
        .expect("partition");
    assert_eq!(
        (p.version, p.entries[0].sealed.as_slice()),
        (v, &b"kept"[..])
    );
    let out = v2
        .sign_out(&SignOutRequest::new(
            SignOutTarget::Lookup(lookup),
            now,
            now + 60,
        ))
        .await
        .expect("sign out");
    assert_eq!(removed_ids(out), vec![s.id.secret().to_string()]);
    assert_eq!(v2.get_partition(&key).await.expect("get"), None);
}

/// From version 2, which kept `created_at` and `logged_out_at` in whole
/// seconds: opening with this build migrates to version 3, where a session
/// reads back created at the first microsecond of its second and a
/// tombstone signed out at the last microsecond of its, so each tombstone
/// covers exactly what it covered; new sign-outs are sub-second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_from_version_2_keeps_times_and_what_tombstones_cover() {
    const MICROS: i64 = idweb::MICROS_PER_SEC;
    let db = TestDatabase::create().await;
    let v2 = PostgresConfig::parse(&db.url())
        .expect("url")
        .with_max_schema_version(2)
        .open(clock())
        .await
        .expect("open at version 2");
    assert_eq!(v2.schema_version(), 2);
    let now = clock().unix_now();
    let iss = unique("https://iss");
    // As version 2 wrote them: seconds.
    let kept = session(&iss, &unique("sub"), Some(&unique("sid")), now - 10);
    v2.put_session(&kept).await.expect("put");
    let sub = unique("sub");
    let by_sub = SessionLookup::BySubject {
        iss: iss.clone(),
        sub: sub.clone(),
    };
    v2.put_tombstone(&Tombstone::new(by_sub.clone(), now - 5, now + 600))
        .await
        .expect("tombstone");
    drop(v2);

    let v3 = PostgresStore::open(&db.url()).await.expect("migrate");
    assert_eq!(v3.schema_version(), latest_version());
    let mut read = kept.clone();
    read.created_at = kept.created_at * MICROS;
    assert_eq!(v3.get_session(&kept.id).await.expect("get"), Some(read));
    assert_eq!(
        v3.get_tombstone(&by_sub).await.expect("get"),
        Some(Tombstone::new(
            by_sub.clone(),
            (now - 5) * MICROS + 999_999,
            now + 600
        ))
    );
    let mut last = session(&iss, &sub, None, now);
    last.created_at = (now - 5) * MICROS + 999_999;
    assert!(matches!(
        v3.put_session(&last).await,
        Err(StoreError::SignedOut)
    ));
    let mut next = session(&iss, &sub, None, now);
    next.created_at = (now - 4) * MICROS;
    v3.put_session(&next)
        .await
        .expect("a session of the next second is not covered");
    assert_eq!(
        v3.get_session(&next.id).await.expect("get"),
        Some(next.clone())
    );
}

/// From version 3, whose `sign_out` did not count entries: opening with
/// this build migrates to version 4, whose `sign_out` reports the entries
/// the removed sessions held; an instance still running version 3's call
/// (`SELECT replayed, removed FROM sign_out(..)`) keeps working on the new
/// schema (a rolling upgrade), and a store held at version 3 signs out in
/// order and counts the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_from_version_3_counts_entries_and_keeps_old_callers_working() {
    let db = TestDatabase::create().await;
    let v3 = PostgresConfig::parse(&db.url())
        .expect("url")
        .with_max_schema_version(3)
        .open(clock())
        .await
        .expect("open at version 3");
    assert_eq!(v3.schema_version(), 3);
    let now = clock().unix_now();
    let iss = unique("https://iss");
    let stored = |n: usize| {
        let (store, iss) = (&v3, iss.clone());
        async move {
            let s = session(&iss, &unique("sub"), Some(&unique("sid")), now);
            store.put_session(&s).await.expect("put");
            let entries = (0..n).map(|i| entry(&format!("e{i}"), b"x")).collect();
            store
                .write_partition(
                    &PartitionKey::Session(s.id.clone()),
                    PartitionWrite::upsert(entries),
                )
                .await
                .expect("write");
            s
        }
    };
    let (old_call, new_call, held) = (stored(2).await, stored(3).await, stored(4).await);

    let v4 = PostgresStore::open(&db.url()).await.expect("migrate");
    assert_eq!(v4.schema_version(), latest_version());
    // As the store's connections do: the functions name their tables unqualified.
    let admin = common::admin_at(&db.url()).await;
    admin
        .batch_execute("SET search_path TO idweb")
        .await
        .expect("search path");
    let row = admin
        .query_one(
            "SELECT replayed, removed FROM sign_out('id', NULL, $1, $2, $3, false, NULL, NULL, NULL, $4)",
            &[&old_call.id.secret(), &(now * 1_000_000), &(now + 60), &now],
        )
        .await
        .expect("version 3's call on the version 4 schema");
    let (replayed, removed): (bool, Vec<String>) = (row.get(0), row.get(1));
    assert!(!replayed);
    assert_eq!(removed, vec![old_call.id.secret().to_string()]);

    let by_id = |s: &Session| {
        SignOutRequest::new(
            SignOutTarget::Session(s.id.clone()),
            now * 1_000_000,
            now + 60,
        )
    };
    let out = v4.sign_out(&by_id(&new_call)).await.expect("sign out");
    assert_eq!(
        out,
        SignOutOutcome::SignedOut {
            removed: vec![new_call.id.clone()],
            entries_removed: 3,
        }
    );
    let out = v3.sign_out(&by_id(&held)).await.expect("held at version 3");
    assert_eq!(
        out,
        SignOutOutcome::SignedOut {
            removed: vec![held.id.clone()],
            entries_removed: 4,
        }
    );
    for s in [&old_call, &new_call, &held] {
        let key = PartitionKey::Session(s.id.clone());
        assert_eq!(v4.get_partition(&key).await.expect("get"), None);
    }
}

/// Instances opening a new schema at the same moment apply each migration
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_openers_migrate_once() {
    let schema = unique_name("openers");
    let _drop = DropSchema(schema.clone());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let schema = schema.clone();
        tasks.push(tokio::spawn(
            async move { common::open(&schema, clock()).await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").schema_version(), latest_version());
    }
    assert_eq!(rows(&schema, "schema_version").await, latest_version());
}

/// Expired rows are never read, and the purge deletes them in batches
/// (more than one batch here), with their partitions and entries, leaving
/// live rows alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_expired_rows_in_batches() {
    let schema = unique_name("purge");
    let _drop = DropSchema(schema.clone());
    let manual = Arc::new(ManualClock::at_unix(1_800_000_000));
    let store = common::open(&schema, manual.clone()).await;
    let now = manual.unix_now();
    let iss = unique("https://iss");
    let mut tasks = Vec::new();
    for i in 0..1_100u32 {
        let store = store.clone();
        let mut s = session(&iss, &format!("sub-{i}"), None, now);
        if i == 0 {
            s.expires_at = now + 100_000;
        }
        tasks.push(tokio::spawn(async move {
            store.put_session(&s).await.expect("put");
            store
                .write_partition(
                    &PartitionKey::Session(s.id.clone()),
                    PartitionWrite::upsert(vec![entry("rt", b"x")]),
                )
                .await
                .expect("write");
            s.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    store
        .put_tombstone(&Tombstone::new(
            SessionLookup::BySubject {
                iss: iss.clone(),
                sub: "gone".into(),
            },
            now,
            now + 10,
        ))
        .await
        .expect("tombstone");
    assert!(store.record_jti(&iss, "j", now + 10).await.expect("jti"));
    manual.advance(Duration::from_secs(3600));
    assert_eq!(store.session_count().await.expect("count"), 1);
    assert_eq!(store.get_session(&ids[1]).await.expect("get"), None);
    assert_eq!(rows(&schema, "sessions").await, 1_100, "not purged yet");
    let purged = store.purge_expired().await.expect("purge");
    assert_eq!(purged, 1_099 + 2);
    assert_eq!(rows(&schema, "sessions").await, 1);
    assert_eq!(rows(&schema, "partitions").await, 1);
    assert_eq!(rows(&schema, "entries").await, 1);
    assert_eq!(rows(&schema, "tombstones").await, 0);
    assert_eq!(rows(&schema, "jtis").await, 0);
    assert!(store.get_session(&ids[0]).await.expect("get").is_some());
    assert_eq!(store.purge_expired().await.expect("purge again"), 0);
}

/// Every connection of the store killed by `pg_terminate_backend`: reads
/// go on working (a read on a dead pooled connection is read again on
/// another); a write meeting a dead connection fails with `Unavailable`
/// (never a panic, never a silent success), at most once per pooled
/// connection; then the same store works again with fresh connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced() {
    let schema = unique_name("kill");
    let _drop = DropSchema(schema.clone());
    let app = unique_name("app");
    let url = format!("{}?application_name={app}", common::server_url());
    let store = common::open_url(&url, &schema, clock()).await;
    let s = session(
        &unique("https://iss"),
        &unique("sub"),
        None,
        clock().unix_now(),
    );
    store.put_session(&s).await.expect("put");
    let kill = || async {
        // Several connections in the pool first.
        let mut reads = Vec::new();
        for _ in 0..8 {
            let (store, id) = (store.clone(), s.id.clone());
            reads.push(tokio::spawn(async move { store.get_session(&id).await }));
        }
        for r in reads {
            assert!(r.await.expect("task").expect("get").is_some());
        }
        let killed: i64 = common::admin()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("terminate")
            .get(0);
        assert!(killed >= 1, "no connection of the store found");
        killed
    };

    let killed = kill().await;
    for _ in 0..20 {
        let read = store.get_session(&s.id).await;
        assert!(
            matches!(read, Ok(Some(_))),
            "a read after the kill: {read:?}"
        );
    }

    let killed_again = kill().await;
    let (mut failed, mut ok) = (0usize, 0usize);
    for i in 0..30 {
        let mut t = session(
            &unique("https://iss"),
            &unique("sub"),
            None,
            clock().unix_now(),
        );
        t.name = Some(format!("{i}"));
        match store.put_session(&t).await {
            Ok(()) => ok += 1,
            Err(StoreError::Unavailable(e)) => {
                failed += 1;
                let e = e
                    .downcast_ref::<PostgresError>()
                    .expect("a PostgreSQL error");
                assert!(e.to_string().contains("PostgreSQL"), "{e}");
                assert_eq!(store.get_session(&t.id).await.expect("get"), None, "{e}");
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    println!(
        "killed {killed} then {killed_again} connections: 20 reads answered, {failed} writes failed, {ok} succeeded"
    );
    assert!(
        failed <= usize::try_from(killed_again).unwrap_or(usize::MAX),
        "{failed} failures"
    );
    assert!(ok >= 20, "the store did not recover");
    assert!(store.get_session(&s.id).await.expect("recovered").is_some());
}

/// The database refuses connections and every connection is killed: calls
/// fail promptly with `Unavailable` (a clear error); once it accepts again,
/// the same store works, and no write was half done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_fails_promptly_and_recovers() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::open(&db.url()).await.expect("open");
    let now = clock().unix_now();
    let s = session(&unique("https://iss"), &unique("sub"), Some("sid"), now);
    store.put_session(&s).await.expect("put");
    let admin = common::admin().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            db.name
        ))
        .await
        .expect("refuse connections");
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .await
        .expect("terminate");
    let started = Instant::now();
    for _ in 0..3 {
        let r = store.get_session(&s.id).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        let shown = format!(
            "{} / {:?}",
            r.as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default(),
            r.as_ref()
                .err()
                .and_then(std::error::Error::source)
                .map(ToString::to_string)
        );
        assert!(
            shown.contains("unavailable") && shown.contains("PostgreSQL"),
            "{shown}"
        );
    }
    let r = store.remove_session(&s.id).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    println!(
        "four calls failed in {:?} while the database refused connections",
        started.elapsed()
    );
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .expect("accept connections");
    assert!(
        store.get_session(&s.id).await.expect("back").is_some(),
        "the failed removal did nothing"
    );
    assert!(store.remove_session(&s.id).await.expect("retry").is_some());
    assert_eq!(store.get_session(&s.id).await.expect("get"), None);
}

/// Opening where nothing listens fails promptly with `Unavailable`, and
/// neither the error nor the store's `Debug` shows the password.
#[tokio::test]
async fn opening_fails_promptly_and_hides_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let started = Instant::now();
    let r = PostgresStore::open(&format!("postgres://u:hunter2@127.0.0.1:{port}/d")).await;
    let e = r.expect_err("nothing listens");
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut chain = format!("{e} {e:?}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!chain.contains("hunter2"), "{chain}");
    let schema = unique_name("debug");
    let _drop = DropSchema(schema.clone());
    let store = common::open(&schema, clock()).await;
    assert!(!format!("{store:?}").contains("hunter2"));
}
