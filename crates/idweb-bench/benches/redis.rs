//! idweb on Redis; what is measured and the latest figures are in
//! `docs/PERFORMANCE.md` ("Redis").
//!
//! - `redis_baseline`: `MemoryStore::get_session` with 1 000 sessions, the
//!   `baseline` of `benches/sessions.rs`, measured first and again last
//!   (`redis_baseline_end`); every other figure is reported as a multiple of
//!   the first.
//! - `redis_roundtrip/ping/{small_pass,large_pass}`: one `PING`, the floor
//!   of a Redis round trip, measured before each pass of the benchmarks
//!   below; after each pass the bench prints how busy Redis was meanwhile
//!   (CPU, commands, by all its clients).
//! - `redis_hit/{l1,redis}/N`: `RelyingParty::token_for_user` answered from
//!   the token cache, through `CachingStore` with its in-process cache warm
//!   (`l1`) and through `RedisStore` alone (`redis`).
//! - `redis_evict/{redis,l1}/N`: `SignOut::evict` of one user
//!   (`SignOutSelector::Subject`) with two sessions, each with a three-entry
//!   partition, through `RedisStore` and through `CachingStore`. The user is
//!   added before each eviction, outside the timed part.
//!
//! Before the timed benchmarks of each size, the Redis round trips and
//! commands of each operation are counted through a relay
//! (`CountingProxy`), and the in-process cache's hit counters are checked.
//!
//! Under `cargo bench` the stores hold 1 000 and 1 000 000 sessions (fewer
//! if filling the large one reaches its time or memory limit: the bench says
//! so). After the large store is filled, each benchmark runs on it and then,
//! right after, on the 1 000-session store again (`1000_again`), so that
//! each large/small ratio compares figures measured seconds apart. Run as a
//! test (`cargo test --benches`): 1 000 sessions only, each benchmark once,
//! and without a Redis the bench only says so.
//!
//! Redis is at `127.0.0.1:6379` unless `IDWEB_BENCH_REDIS` names another
//! `HOST:PORT`; `IDWEB_BENCH_REDIS_SESSIONS` changes the large size. Every
//! key is under a prefix drawn for the run, and deleted at the end (also
//! after a panic) with `SCAN` and `UNLINK`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use idweb::{BoxError, SessionId, SignOutSelector, Store, SystemClock};
use idweb_bench::redis_fixture::{
    CountingProxy, IN_FLIGHT, Limits, RedisAdmin, RedisFixture, Traffic, mib,
};
use idweb_bench::{
    Backend, Fixture, HIT_SCOPE, ScratchDir, register_client, relying_party_with, start_idp,
};
use idweb_store_redis::{CacheOptions, CachingStore, RedisStore};
use tokio::runtime::Runtime;

/// Sizes of the store under `cargo bench`.
const SIZES: [usize; 2] = [1_000, 1_000_000];

/// The size of the baseline (as in `benches/sessions.rs`).
const BASELINE_SIZE: usize = 1_000;

/// Limits of one fill: the large store gets the sessions that fit.
const LIMITS: Limits = Limits {
    time: Duration::from_secs(6 * 60),
    memory: 12 * 1024 * 1024 * 1024,
};

/// Calls and evictions counted through the relay, under `cargo bench` and
/// as a test.
const COUNTED_CALLS: (u64, u64) = (1_000, 10);
const COUNTED_EVICTIONS: (u64, u64) = (50, 2);

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(100)
        .configure_from_args();
    // `cargo bench` passes `--bench`; without it this is a test run.
    let full = std::env::args().any(|a| a == "--bench");
    let large = std::env::var("IDWEB_BENCH_REDIS_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SIZES[1]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let addr = std::env::var("IDWEB_BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    // A missing Redis is a failure, never a silent skip.
    let admin = match rt.block_on(RedisAdmin::connect(&addr)) {
        Ok(a) => a,
        Err(e) => panic!("no Redis at {addr} (start one, or set IDWEB_BENCH_REDIS): {e}"),
    };
    eprintln!("Redis keys of this run: {}.*", admin.base_prefix());
    let idp = rt
        .block_on(start_idp())
        .expect("development identity provider");
    let dir = ScratchDir::new().expect("scratch directory");

    let base = rt
        .block_on(Fixture::build(&idp, Backend::Memory, BASELINE_SIZE, &dir))
        .expect("baseline fixture");
    baseline(&mut c, &rt, &base, "redis_baseline");

    let settings = register_client(&idp).expect("client settings");
    let issuer = idp.issuer().to_string();
    let build = |n: usize| {
        let activity = rt.block_on(admin.activity()).expect("Redis INFO");
        let f = rt
            .block_on(RedisFixture::build(
                &admin,
                &settings,
                &issuer,
                &n.to_string(),
                n,
                LIMITS,
            ))
            .expect("Redis fixture");
        let p = &f.population;
        eprintln!(
            "filled a Redis store with {} of {} sessions in {:.1} s ({:.0} sessions/s, {IN_FLIGHT} in flight){}",
            p.stored,
            p.target,
            p.took.as_secs_f64(),
            p.stored as f64 / p.took.as_secs_f64(),
            p.stopped
                .as_ref()
                .map(|why| format!("; stopped early: {why}"))
                .unwrap_or_default()
        );
        eprintln!(
            "Redis memory: used_memory {:.1} -> {:.1} MiB ({:.0} bytes per session), rss {:.1} -> {:.1} MiB, peak {:.1} MiB",
            mib(p.memory_before.used),
            mib(p.memory_after.used),
            p.memory_after.used.saturating_sub(p.memory_before.used) as f64 / p.stored as f64,
            mib(p.memory_before.rss),
            mib(p.memory_after.rss),
            mib(p.memory_after.peak),
        );
        let now = rt.block_on(admin.activity()).expect("Redis INFO");
        eprintln!("filling {n}: {}", now.since(&activity));
        f
    };

    let small = build(SIZES[0]);
    count_round_trips(&rt, &admin, &small, full);
    benches(
        &mut c,
        &rt,
        &admin,
        "small_pass",
        &[(&small, small.sessions.to_string())],
    );

    if full {
        let big = build(large);
        count_round_trips(&rt, &admin, &big, full);
        benches(
            &mut c,
            &rt,
            &admin,
            "large_pass",
            &[
                (&big, big.sessions.to_string()),
                (&small, format!("{}_again", small.sessions)),
            ],
        );
        drop(big);
    }

    // The same measurement again: how far the machine drifted during the run.
    baseline(&mut c, &rt, &base, "redis_baseline_end");

    let stats = idp.stats();
    assert_eq!(
        stats.refresh_token + stats.token_errors,
        0,
        "a cache hit reached the identity provider: {stats:?}"
    );
    drop(small);
    let started = Instant::now();
    match admin.delete_keys() {
        Ok(n) => eprintln!(
            "deleted the run's {n} Redis keys in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("could not delete the run's Redis keys: {e}"),
    }
    if let Ok(m) = rt.block_on(admin.memory()) {
        eprintln!(
            "Redis used_memory after the deletion: {:.1} MiB",
            mib(m.used)
        );
    }
    rt.block_on(base.close());
    rt.block_on(idp.shutdown());
    c.final_summary();
}

/// One `PING` on a connection of the kind the store uses: the floor of one
/// round trip to this Redis, from this process, at the time of `pass`.
fn ping(c: &mut Criterion, rt: &Runtime, admin: &RedisAdmin, pass: &str) {
    let conn = rt
        .block_on(async {
            let client = redis::Client::open(admin.url())?;
            redis::aio::ConnectionManager::new(client).await
        })
        .expect("Redis connection");
    let mut g = c.benchmark_group("redis_roundtrip");
    g.bench_function(BenchmarkId::new("ping", pass), |b| {
        b.to_async(rt).iter(|| {
            let mut conn = conn.clone();
            async move {
                black_box(
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .expect("PING"),
                )
            }
        })
    });
    g.finish();
}

/// `MemoryStore::get_session` of one session among 1 000.
fn baseline(c: &mut Criterion, rt: &Runtime, f: &Fixture, group: &str) {
    let mut g = c.benchmark_group(group);
    let (store, id) = (&f.store, &f.probe.id);
    g.bench_function(BenchmarkId::new("memory_get_session", f.sessions), |b| {
        b.to_async(rt)
            .iter(|| async move { black_box(store.get_session(id).await.expect("get_session")) })
    });
    g.finish();
}

/// The timed benchmarks, each for every fixture in turn, after a `PING`
/// benchmark; reports how busy Redis was meanwhile (other clients included).
fn benches(
    c: &mut Criterion,
    rt: &Runtime,
    admin: &RedisAdmin,
    pass: &str,
    fixtures: &[(&RedisFixture, String)],
) {
    let activity = rt.block_on(admin.activity()).expect("Redis INFO");
    ping(c, rt, admin, pass);
    let mut g = c.benchmark_group("redis_hit");
    for (f, size) in fixtures {
        let (rp, hit) = (&f.rp_cached, &f.hit);
        // Warm: the first call fills the in-process cache.
        assert!(rt.block_on(f.cached.wait_until_active(Duration::from_secs(10))));
        rt.block_on(rp.token_for_user(hit, &[HIT_SCOPE]))
            .expect("cache hit");
        let (hits, misses) = (f.cached.l1_hits(), f.cached.l1_misses());
        g.bench_function(BenchmarkId::new("l1", size), |b| {
            b.to_async(rt).iter(|| async move {
                black_box(
                    rp.token_for_user(hit, &[HIT_SCOPE])
                        .await
                        .expect("cache hit"),
                )
            })
        });
        let (hits, misses) = (f.cached.l1_hits() - hits, f.cached.l1_misses() - misses);
        eprintln!("redis_hit/l1/{size}: {hits} reads answered in process, {misses} from Redis");

        let rp = &f.rp_plain;
        g.bench_function(BenchmarkId::new("redis", size), |b| {
            b.to_async(rt).iter(|| async move {
                black_box(
                    rp.token_for_user(hit, &[HIT_SCOPE])
                        .await
                        .expect("cache hit"),
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("redis_evict");
    // About twice as long per iteration as what is timed (the setup).
    g.sample_size(50);
    for (f, size) in fixtures {
        let plain: Arc<dyn Store> = Arc::new(f.plain.clone());
        let cached: Arc<dyn Store> = f.cached.clone();
        for (name, store) in [("redis", plain), ("l1", cached)] {
            let sign_out = RedisFixture::sign_out(store);
            let (f, sign_out) = (*f, &sign_out);
            g.bench_function(BenchmarkId::new(name, size), |b| {
                b.to_async(rt).iter_custom(|iters| async move {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let selector = f.add_user_with_two_sessions().await.expect("setup");
                        let started = Instant::now();
                        let eviction = sign_out.evict(&selector).await.expect("evict");
                        timed += started.elapsed();
                        assert_eq!(eviction.sessions_removed, 2);
                    }
                    timed
                })
            });
        }
    }
    g.finish();
    let now = rt.block_on(admin.activity()).expect("Redis INFO");
    eprintln!("{pass}: {}", now.since(&activity));
}

/// Counts the Redis round trips of each benchmarked operation through a
/// relay, and checks that the in-process cache answers its hits alone.
fn count_round_trips(rt: &Runtime, admin: &RedisAdmin, f: &RedisFixture, full: bool) {
    let calls = if full {
        COUNTED_CALLS.0
    } else {
        COUNTED_CALLS.1
    };
    let evictions = if full {
        COUNTED_EVICTIONS.0
    } else {
        COUNTED_EVICTIONS.1
    };
    let counted = rt.block_on(async {
        let proxy = CountingProxy::start(admin.addr()).await?;
        let url = format!("redis://{}", proxy.addr());
        let plain = RedisStore::open_with_prefix(&url, &f.prefix, Arc::new(SystemClock)).await?;
        let cached = Arc::new(CachingStore::new(plain.clone())?);
        // Every read misses the in-process cache (it keeps nothing).
        let uncached = Arc::new(CachingStore::with_options(
            plain.clone(),
            CacheOptions::default().max_entries(0),
        )?);
        for c in [&cached, &uncached] {
            if !c.wait_until_active(Duration::from_secs(10)).await {
                return Err::<(), BoxError>("the in-process cache did not become active".into());
            }
        }
        let stores: [(&str, Arc<dyn Store>, Option<&CachingStore>); 3] = [
            ("L1 hit (CachingStore, warm)", cached.clone(), Some(&cached)),
            ("L1 miss (CachingStore)", uncached.clone(), Some(&uncached)),
            ("RedisStore", Arc::new(plain.clone()), None),
        ];
        for (name, store, l1) in &stores {
            let rp = relying_party_with(f.settings().clone(), store.clone()).await?;
            // Loads the scripts if Redis lacks them, and fills the cache.
            rp.token_for_user(&f.hit, &[HIT_SCOPE]).await?;
            let before = proxy.traffic();
            let l1_before = l1.map(|c| (c.l1_hits(), c.l1_misses()));
            for _ in 0..calls {
                black_box(rp.token_for_user(&f.hit, &[HIT_SCOPE]).await?);
            }
            let t = proxy.traffic().since(&before);
            eprintln!(
                "round trips, {} sessions, token_for_user, {name}: per call {}",
                f.sessions,
                t.per(calls)
            );
            if let (Some(c), Some((h, m))) = (l1, l1_before) {
                let (hits, misses) = (c.l1_hits() - h, c.l1_misses() - m);
                eprintln!("  in-process cache: {hits} hits, {misses} misses");
                if c.l1_len() > 0 {
                    // The warm cache: every call answered in process.
                    assert_eq!((hits, misses, t.round_trips), (calls, 0, 0), "{name}");
                } else {
                    assert_eq!((hits, misses), (0, calls), "{name}");
                }
            }
        }
        for (name, store) in [("RedisStore", &stores[2].1), ("CachingStore", &stores[0].1)] {
            let sign_out = RedisFixture::sign_out(store.clone());
            let mut t = Traffic::default();
            for _ in 0..evictions {
                let selector = f.add_user_with_two_sessions().await?;
                let before = proxy.traffic();
                let e = sign_out.evict(&selector).await?;
                t.add(&proxy.traffic().since(&before));
                assert_eq!(e.sessions_removed, 2);
            }
            eprintln!(
                "round trips, {} sessions, evict 1 user of 2 sessions, {name}: per eviction {}",
                f.sessions,
                t.per(evictions)
            );
            // A provider session this app does not know (what most
            // back-channel logouts from a provider serving many apps name).
            let mut t = Traffic::default();
            for i in 0..evictions {
                let selector = SignOutSelector::ProviderSession {
                    iss: f.iss.clone(),
                    sid: format!("unknown-{}-{i}", SessionId::generate().fingerprint()),
                };
                let before = proxy.traffic();
                let e = sign_out.evict(&selector).await?;
                t.add(&proxy.traffic().since(&before));
                assert_eq!(e.sessions_removed, 0);
            }
            eprintln!(
                "round trips, {} sessions, sign out an unknown provider session, {name}: per eviction {}",
                f.sessions,
                t.per(evictions)
            );
        }
        Ok(())
    });
    counted.expect("counting round trips");
}
