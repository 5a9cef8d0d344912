//! idweb's benchmarks; what they measure and the latest figures are in
//! `docs/PERFORMANCE.md`.
//!
//! - `baseline`: `MemoryStore::get_session` with 1 000 sessions in the store,
//!   measured first and again last; every other figure is reported as a
//!   multiple of the first.
//! - `for_user_hit`: `RelyingParty::token_for_user` served from the session's
//!   cache partition (no network), per store and number of sessions.
//! - `store_ops`: single [`Store`] operations, per store and number of sessions.
//!
//! Every store of one size is filled once and shared by the benchmarks of
//! that size. Under `cargo bench` the sizes are 1 000 and 100 000 sessions;
//! run as a test (`cargo test --benches`), only 1 000 and each benchmark once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion};
use idweb::{PartitionKey, Store};
use idweb_bench::{Backend, Fixture, HIT_SCOPE, ScratchDir, start_idp};
use tokio::runtime::Runtime;

/// Sizes of the store under `cargo bench`.
const SIZES: [usize; 2] = [1_000, 100_000];

/// The size of the baseline.
const BASELINE_SIZE: usize = 1_000;

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(100)
        .configure_from_args();
    // `cargo bench` passes `--bench`; without it this is a test run.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &SIZES } else { &SIZES[..1] };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let idp = rt
        .block_on(start_idp())
        .expect("development identity provider");
    let dir = ScratchDir::new().expect("scratch directory");
    eprintln!(
        "database files in a {} temporary directory",
        if dir.in_ram() { "RAM-backed" } else { "disk" }
    );

    let base = build(&rt, &idp, Backend::Memory, BASELINE_SIZE, &dir);
    baseline(&mut c, &rt, &base, "baseline");

    for &n in sizes {
        let fixtures: Vec<Fixture> = Backend::ALL
            .iter()
            .map(|&b| build(&rt, &idp, b, n, &dir))
            .collect();
        for_user_hit(&mut c, &rt, &fixtures);
        store_ops(&mut c, &rt, &fixtures);
        for f in fixtures {
            rt.block_on(f.close());
        }
    }

    // The same measurement again: how far the machine drifted during the run.
    baseline(&mut c, &rt, &base, "baseline_end");

    let stats = idp.stats();
    assert_eq!(
        stats.refresh_token + stats.token_errors,
        0,
        "a cache hit reached the identity provider: {stats:?}"
    );
    rt.block_on(base.close());
    rt.block_on(idp.shutdown());
    c.final_summary();
}

fn build(
    rt: &Runtime,
    idp: &idweb_devidp::DevIdp,
    backend: Backend,
    n: usize,
    dir: &ScratchDir,
) -> Fixture {
    let f = rt
        .block_on(Fixture::build(idp, backend, n, dir))
        .expect("benchmark fixture");
    eprintln!(
        "filled the {} store with {n} sessions in {:.1} s{}",
        backend.name(),
        f.populated_in.as_secs_f64(),
        match f.db_bytes() {
            0 => String::new(),
            bytes => format!(" (database and log: {} MB)", bytes / 1_000_000),
        }
    );
    f
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

/// `token_for_user` answered from the cache.
fn for_user_hit(c: &mut Criterion, rt: &Runtime, fixtures: &[Fixture]) {
    let mut g = c.benchmark_group("for_user_hit");
    for f in fixtures {
        let (rp, session) = (&f.rp, &f.hit);
        g.bench_function(BenchmarkId::new(f.backend.name(), f.sessions), |b| {
            b.to_async(rt).iter(|| async move {
                black_box(
                    rp.token_for_user(session, &[HIT_SCOPE])
                        .await
                        .expect("cache hit"),
                )
            })
        });
    }
    g.finish();
}

/// One [`Store`] operation at a time.
fn store_ops(c: &mut Criterion, rt: &Runtime, fixtures: &[Fixture]) {
    let mut g = c.benchmark_group("store_ops");
    for f in fixtures {
        let store: &dyn Store = f.store.as_ref();
        let id = |op: &str| BenchmarkId::new(format!("{op}/{}", f.backend.name()), f.sessions);

        let probe = &f.probe.id;
        g.bench_function(id("get_session"), |b| {
            b.to_async(rt).iter(|| async move {
                black_box(store.get_session(probe).await.expect("get_session"))
            })
        });

        let partition = PartitionKey::Session(f.probe.id.clone());
        let partition = &partition;
        g.bench_function(id("get_partition"), |b| {
            b.to_async(rt).iter(|| async move {
                black_box(store.get_partition(partition).await.expect("get_partition"))
            })
        });

        let lookup = &f.probe_lookup;
        g.bench_function(id("find_sessions_by_subject"), |b| {
            b.to_async(rt).iter(|| async move {
                black_box(store.find_sessions(lookup).await.expect("find_sessions"))
            })
        });

        g.bench_function(id("write_partition"), |b| {
            b.to_async(rt).iter_batched(
                || f.one_upsert(),
                |write| async move {
                    black_box(
                        store
                            .write_partition(&f.writer, write)
                            .await
                            .expect("write_partition"),
                    )
                },
                BatchSize::SmallInput,
            )
        });

        g.bench_function(id("put_remove_session"), |b| {
            b.to_async(rt).iter_batched(
                || f.fresh_session(),
                |session| async move {
                    store.put_session(&session).await.expect("put_session");
                    black_box(
                        store
                            .remove_session(&session.id)
                            .await
                            .expect("remove_session"),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}
