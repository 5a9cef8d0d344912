//! idweb on PostgreSQL; what is measured and the latest figures are in
//! `docs/PERFORMANCE.md` ("PostgreSQL").
//!
//! - `pg_roundtrip/select_1/N`: one prepared `SELECT 1` on a plain
//!   connection, the floor of a round trip, measured before each pass.
//! - `pg_hit/postgres/N`: `RelyingParty::token_for_user` answered from the
//!   token cache through `PostgresStore` (the partition read every time).
//! - `pg_evict/evict/N`: `SignOut::evict` of one user
//!   (`SignOutSelector::Subject`) with two sessions of three entries each.
//! - `pg_hit/l1/N`: the same through `CachingStore` (the in-process cache
//!   over `LISTEN/NOTIFY`), warm.
//! - `pg_evict/evict_l1/N`: `SignOut::evict` through `CachingStore`, with
//!   its acknowledgement step (this process is the only instance).
//! - `pg_evict/sign_out_fn/N`: the same eviction with `Store::sign_out`
//!   called directly (on PostgreSQL: jti, tombstone and removals in one
//!   transaction, one statement).
//!
//! Before the timed passes the round trips of each operation are counted
//! through a relay (`CountingProxy`), and the bytes per session on disk are
//! `pg_total_relation_size` of the store's tables (with indexes and TOAST)
//! after the fill, minus before, divided by the sessions stored.
//!
//! Sizes: 1 000, and under `cargo bench` `IDWEB_BENCH_POSTGRES_SESSIONS`
//! (default 1 000 000). The fill writes two sessions as sign-in does (the
//! one the hit reads, and a template), then copies the template on the
//! server in one transaction (`INSERT ... SELECT generate_series`): rows of
//! the same shape and size, written in seconds rather than minutes. Each
//! size lives in a schema of a database created for the run
//! (`idweb_bench_…`), dropped at the end. PostgreSQL is at
//! `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `IDWEB_BENCH_POSTGRES` names another server URL. Run as a test
//! (`cargo test --benches`): 1 000 sessions only, each benchmark once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use idweb::{
    Clock, JtiRecord, RelyingParty, SessionLookup, SignOut, SignOutOutcome, SignOutRequest,
    SignOutSelector, SignOutTarget, Store, SystemClock,
};
use idweb_bench::redis_fixture::{CountingProxy, add_session};
use idweb_bench::{
    HIT_SCOPE, access_token, new_session, register_client, relying_party_with, start_idp,
};
use idweb_store_postgres::{CachingStore, PostgresConfig, PostgresStore};
use tokio::runtime::Runtime;

const SMALL: usize = 1_000;
const IN_FLIGHT: usize = 32;
const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(12 * 3600 + 300 + 3600);

fn server_url() -> String {
    std::env::var("IDWEB_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, db: &str) -> String {
    let (head, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{head}/{db}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("no PostgreSQL at {url} (set IDWEB_BENCH_POSTGRES): {e}"));
    tokio::spawn(conn);
    client
}

/// Bytes of every table of `schema` with its indexes and TOAST.
async fn schema_bytes(admin: &tokio_postgres::Client, schema: &str) -> i64 {
    admin
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await
        .expect("sizes")
        .get(0)
}

struct PgFixture {
    sessions: usize,
    store: PostgresStore,
    rp: Arc<RelyingParty>,
    /// The same store behind the in-process cache (LISTEN/NOTIFY).
    cached: Arc<CachingStore>,
    rp_l1: Arc<RelyingParty>,
    hit: idweb::Session,
    iss: String,
    schema: String,
    next_user: AtomicU64,
}

impl PgFixture {
    async fn build(
        db_url: &str,
        admin: &tokio_postgres::Client,
        settings: &idweb::Settings,
        iss: &str,
        target: usize,
    ) -> Self {
        let schema = format!("size_{target}");
        let store = PostgresConfig::parse(db_url)
            .unwrap()
            .with_schema(&schema)
            .unwrap()
            .with_pool_size(IN_FLIGHT)
            .open(Arc::new(SystemClock))
            .await
            .expect("open the store");
        let rp = Arc::new(
            relying_party_with(settings.clone(), Arc::new(store.clone()))
                .await
                .expect("relying party"),
        );
        let before = schema_bytes(admin, &schema).await;
        let started = Instant::now();
        let now = rp.clock().unix_now();
        let hit = new_session(iss, "hit-user", now);
        store.put_session(&hit).await.unwrap();
        rp.token_cache()
            .write(
                &idweb::PartitionKey::Session(hit.id.clone()),
                &[access_token(&rp, &hit, now)],
                &[],
                None,
            )
            .await
            .unwrap();
        // The rest: one template session written as sign-in writes it,
        // then copied on the server (ids, subjects and sids made unique;
        // the same entries, sealed for the template, never read), in one
        // transaction: row by row would take about 11 minutes per million.
        let template = add_session(&rp, iss, "fill-template")
            .await
            .expect("template");
        let copies = i64::try_from(target.saturating_sub(2)).unwrap_or(0);
        let fill = format!(
            "BEGIN;
             INSERT INTO {schema}.sessions (id, iss, sub, sid, created_at, expires_at, data)
               SELECT t.id || '-' || g, t.iss, 'fill-' || g,
                      CASE WHEN t.sid IS NULL THEN NULL ELSE t.sid || '-' || g END,
                      t.created_at, t.expires_at, replace(t.data, t.id, t.id || '-' || g)
               FROM {schema}.sessions t, generate_series(1, {copies}) g
               WHERE t.sub = 'fill-template';
             INSERT INTO {schema}.partitions (pkey, session_id, version)
               SELECT 's.' || s.id, s.id, 1 FROM {schema}.sessions s WHERE s.sub ^@ 'fill-' AND s.sub <> 'fill-template';
             INSERT INTO {schema}.entries (part, cache_key, kind, expires_at, sealed)
               SELECT p.id, e.cache_key, e.kind, e.expires_at, e.sealed
               FROM {schema}.partitions p
               JOIN {schema}.sessions s ON s.id = p.session_id AND s.sub ^@ 'fill-' AND s.sub <> 'fill-template'
               CROSS JOIN (SELECT e.* FROM {schema}.entries e JOIN {schema}.partitions tp ON tp.id = e.part
                           WHERE tp.pkey = 's.' || $TEMPLATE$) e;
             COMMIT;"
        )
        .replace("$TEMPLATE$", &format!("'{}'", template.id.secret()));
        admin.batch_execute(&fill).await.expect("fill");
        let added = usize::try_from(copies).unwrap_or(0) + 2;
        let took = started.elapsed();
        admin
            .batch_execute(&format!(
                "VACUUM ANALYZE {schema}.sessions, {schema}.partitions, {schema}.entries"
            ))
            .await
            .expect("vacuum");
        let after = schema_bytes(admin, &schema).await;
        eprintln!(
            "filled {added} of {target} sessions in {:.1} s ({:.0}/s, copied on the server)",
            took.as_secs_f64(),
            added as f64 / took.as_secs_f64(),
        );
        eprintln!(
            "on disk: {:.1} MiB -> {:.1} MiB, {:.0} bytes per session (tables, indexes, TOAST)",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after - before) as f64 / added as f64
        );
        assert_eq!(store.session_count().await.unwrap(), added as u64);
        let cached = Arc::new(CachingStore::new(store.clone()).expect("cache"));
        assert!(cached.wait_until_active(Duration::from_secs(5)).await);
        let rp_l1 = Arc::new(
            relying_party_with(settings.clone(), cached.clone())
                .await
                .expect("relying party"),
        );
        Self {
            sessions: added,
            store,
            rp,
            cached,
            rp_l1,
            hit,
            iss: iss.to_string(),
            schema,
            next_user: AtomicU64::new(0),
        }
    }

    async fn add_user_with_two_sessions(&self) -> SignOutSelector {
        let k = self.next_user.fetch_add(1, Ordering::Relaxed);
        let sub = format!("evict-{k:07}");
        for _ in 0..2 {
            add_session(&self.rp, &self.iss, &sub).await.expect("add");
        }
        SignOutSelector::Subject {
            iss: self.iss.clone(),
            sub,
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    let full = std::env::args().any(|a| a == "--bench");
    let large = std::env::var("IDWEB_BENCH_POSTGRES_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = server_url();
    let db = format!("idweb_bench_{}", idweb::SessionId::generate().fingerprint());
    let db_url = with_database(&server, &db);
    let root = rt.block_on(connect(&server));
    rt.block_on(root.batch_execute(&format!("CREATE DATABASE {db}")))
        .expect("create the bench database");
    eprintln!("PostgreSQL database of this run: {db}");
    let admin = rt.block_on(connect(&db_url));
    let idp = rt.block_on(start_idp()).expect("identity provider");
    let settings = register_client(&idp).expect("settings");
    let iss = idp.issuer().to_string();

    let small = rt.block_on(PgFixture::build(&db_url, &admin, &settings, &iss, SMALL));
    count_round_trips(&rt, &db_url, &settings, &small);
    benches(&mut c, &rt, &admin, &[(&small, small.sessions.to_string())]);
    if full {
        let big = rt.block_on(PgFixture::build(&db_url, &admin, &settings, &iss, large));
        count_round_trips(&rt, &db_url, &settings, &big);
        benches(
            &mut c,
            &rt,
            &admin,
            &[
                (&big, big.sessions.to_string()),
                (&small, format!("{}_again", small.sessions)),
            ],
        );
    }
    assert_eq!(
        idp.stats().refresh_token,
        0,
        "a cache hit reached the provider"
    );
    drop(small);
    drop(admin);
    rt.block_on(root.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
        .expect("drop the bench database");
    rt.block_on(idp.shutdown());
    c.final_summary();
}

fn benches(
    c: &mut Criterion,
    rt: &Runtime,
    admin: &tokio_postgres::Client,
    fixtures: &[(&PgFixture, String)],
) {
    let ping = rt.block_on(admin.prepare("SELECT 1")).expect("prepare");
    let mut g = c.benchmark_group("pg_roundtrip");
    g.bench_function(BenchmarkId::new("select_1", &fixtures[0].1), |b| {
        b.to_async(rt)
            .iter(|| async { black_box(admin.query_one(&ping, &[]).await.expect("SELECT 1")) })
    });
    g.finish();

    let mut g = c.benchmark_group("pg_hit");
    for (f, size) in fixtures {
        for (name, rp) in [("postgres", &f.rp), ("l1", &f.rp_l1)] {
            let hit = &f.hit;
            // Warm: the first read fills L1.
            rt.block_on(rp.token_for_user(hit, &[HIT_SCOPE]))
                .expect("cache hit");
            g.bench_function(BenchmarkId::new(name, size), |b| {
                b.to_async(rt).iter(|| async move {
                    black_box(
                        rp.token_for_user(hit, &[HIT_SCOPE])
                            .await
                            .expect("cache hit"),
                    )
                })
            });
        }
        assert!(f.cached.l1_hits() > 0, "the L1 bench never hit L1");
    }
    g.finish();

    let mut g = c.benchmark_group("pg_evict");
    g.sample_size(20);
    for (f, size) in fixtures {
        let sign_out = SignOut::new(
            Arc::new(f.store.clone()),
            Arc::new(SystemClock),
            TOMBSTONE_LIFETIME,
        );
        let (f, sign_out) = (*f, &sign_out);
        g.bench_function(BenchmarkId::new("evict", size), |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let selector = f.add_user_with_two_sessions().await;
                    let started = Instant::now();
                    let e = sign_out.evict(&selector).await.expect("evict");
                    timed += started.elapsed();
                    assert_eq!(e.sessions_removed, 2);
                }
                timed
            })
        });
        let sign_out_l1 = SignOut::new(f.cached.clone(), Arc::new(SystemClock), TOMBSTONE_LIFETIME);
        let sign_out_l1 = &sign_out_l1;
        g.bench_function(BenchmarkId::new("evict_l1", size), |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let selector = f.add_user_with_two_sessions().await;
                    let started = Instant::now();
                    let e = sign_out_l1.evict(&selector).await.expect("evict");
                    timed += started.elapsed();
                    assert_eq!(e.sessions_removed, 2);
                }
                timed
            })
        });
        g.bench_function(BenchmarkId::new("sign_out_fn", size), |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let SignOutSelector::Subject { iss, sub } =
                        f.add_user_with_two_sessions().await
                    else {
                        unreachable!()
                    };
                    let now = SystemClock.unix_now();
                    let started = Instant::now();
                    let out = f
                        .store
                        .sign_out(&by_subject(iss, sub, now, now + 3600))
                        .await
                        .expect("sign out");
                    timed += started.elapsed();
                    assert_eq!(removed_count(&out), 2);
                }
                timed
            })
        });
    }
    g.finish();
}

/// A sign-out of every session of `(iss, sub)`, without a replay record.
fn by_subject(iss: String, sub: String, now: i64, tombstone_until: i64) -> SignOutRequest {
    SignOutRequest::new(
        SignOutTarget::Lookup(SessionLookup::BySubject { iss, sub }),
        now,
        tombstone_until,
    )
}

/// How many sessions a sign-out removed (none for a replay).
fn removed_count(outcome: &SignOutOutcome) -> usize {
    match outcome {
        SignOutOutcome::SignedOut { removed, .. } => removed.len(),
        _ => 0,
    }
}

/// Counts the round trips of each benchmarked operation through a relay.
fn count_round_trips(rt: &Runtime, db_url: &str, settings: &idweb::Settings, f: &PgFixture) {
    rt.block_on(async {
        let proxy = CountingProxy::start("127.0.0.1:5432").await.expect("relay");
        let url = db_url.replacen("127.0.0.1:5432", &proxy.addr().to_string(), 1);
        let store = PostgresConfig::parse(&url)
            .unwrap()
            .with_schema(&f.schema)
            .unwrap()
            .with_pool_size(1)
            .open(Arc::new(SystemClock))
            .await
            .expect("open through the relay");
        let rp = relying_party_with(settings.clone(), Arc::new(store.clone()))
            .await
            .expect("relying party");
        // Prepares the statements on the relay's connection.
        rp.token_for_user(&f.hit, &[HIT_SCOPE]).await.expect("hit");
        let calls = 100u64;
        let before = proxy.traffic().round_trips;
        for _ in 0..calls {
            black_box(rp.token_for_user(&f.hit, &[HIT_SCOPE]).await.expect("hit"));
        }
        let hit = proxy.traffic().round_trips - before;
        eprintln!(
            "round trips, {} sessions, token_for_user hit: {:.2} per call",
            f.sessions,
            hit as f64 / calls as f64
        );
        // Through the in-process cache, warm: no round trip of its own (the
        // listening connection's heartbeats also cross the relay, so the
        // count is the calls' and whatever heartbeats fell in between).
        let cached = Arc::new(CachingStore::new(store.clone()).expect("cache"));
        assert!(cached.wait_until_active(Duration::from_secs(10)).await);
        let rp_l1 = relying_party_with(settings.clone(), cached.clone())
            .await
            .expect("relying party");
        rp_l1.token_for_user(&f.hit, &[HIT_SCOPE]).await.expect("hit");
        let before = proxy.traffic().round_trips;
        let hits_before = cached.l1_hits();
        for _ in 0..calls {
            black_box(rp_l1.token_for_user(&f.hit, &[HIT_SCOPE]).await.expect("hit"));
        }
        let l1 = proxy.traffic().round_trips - before;
        eprintln!(
            "round trips, {} sessions, token_for_user hit through L1: {:.2} per call ({} of {calls} answered from L1)",
            f.sessions,
            l1 as f64 / calls as f64,
            cached.l1_hits() - hits_before
        );
        drop(rp_l1);
        drop(cached);
        let sign_out = SignOut::new(Arc::new(store.clone()), Arc::new(SystemClock), TOMBSTONE_LIFETIME);
        // Warm the statements of both eviction paths once.
        for fn_path in [false, true] {
            let selector = f.add_user_with_two_sessions().await;
            if fn_path {
                let SignOutSelector::Subject { iss, sub } = selector else { unreachable!() };
                let now = SystemClock.unix_now();
                store.sign_out(&by_subject(iss, sub, now, now + 60)).await.expect("sign out");
            } else {
                sign_out.evict(&selector).await.expect("evict");
            }
        }
        let n = 10u64;
        let (mut evict, mut fn_rt) = (0u64, 0u64);
        for _ in 0..n {
            let selector = f.add_user_with_two_sessions().await;
            let before = proxy.traffic().round_trips;
            assert_eq!(sign_out.evict(&selector).await.expect("evict").sessions_removed, 2);
            evict += proxy.traffic().round_trips - before;
            let SignOutSelector::Subject { iss, sub } = f.add_user_with_two_sessions().await else {
                unreachable!()
            };
            let now = SystemClock.unix_now();
            let before = proxy.traffic().round_trips;
            let request = by_subject(iss, sub, now, now + 60)
                .with_jti(JtiRecord::new(f.iss.clone(), "jti", now + 60));
            let out = store.sign_out(&request).await.expect("sign out");
            fn_rt += proxy.traffic().round_trips - before;
            assert_eq!(removed_count(&out), 2);
            let _ = store.forget_jti(&f.iss, "jti").await;
        }
        eprintln!(
            "round trips, {} sessions, evict 1 user of 2 sessions: SignOut::evict {:.2}, Store::sign_out {:.2}",
            f.sessions,
            evict as f64 / n as f64,
            fn_rt as f64 / n as f64
        );
    });
}
