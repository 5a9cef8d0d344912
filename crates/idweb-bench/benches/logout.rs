//! Back-channel logout in process: where a logout's CPU goes when HTTP is
//! left out. What it measures and the latest figures are in
//! `docs/PERFORMANCE.md` ("Back-channel logout in process").
//!
//! One set of distinct logout tokens (provider sessions no app knows, as in
//! the `http` bench) is signed once. Each round then, for each store, opens
//! a **fresh** store (so the same tokens are new to it: no `jti` is
//! recorded yet), builds a relying party on it and hands every token to
//! `RelyingParty::back_channel_logout`, 64 at a time; and verifies the same
//! tokens with jsonwebtoken and the provider's key (RS256 signature, `iss`,
//! `aud`, `exp`), the baseline of the `http` bench. Figures are CPU time of
//! this process's threads (the store's own threads count) per token, and
//! the ratio verification ÷ logout, medians over the rounds.
//!
//! Options: `--rounds` (5), `--tokens` (4 000), `--stores`
//! (`memory,sqlite,redis`). Redis is at `127.0.0.1:6379` unless
//! `IDWEB_BENCH_REDIS` names another `HOST:PORT`; it must be running.
//! Run as a test (`cargo test --benches`): one short round, checking that
//! every logout is answered.

use std::path::Path;
use std::sync::Arc;

use idweb::RelyingParty;
use idweb_bench::ScratchDir;
use idweb_bench::cpu::Snapshot;
use idweb_bench::redis_fixture::RedisAdmin;
use idweb_bench::timing::median;
use idweb_bench::web::{self, Client, OpenedStore, StoreKind, Verifier};
use idweb_devidp::{DevIdp, DevIdpConfig};

const AUX: &str = "bench-aux";
const MINT: &str = "bench-aux-mint";
const VERIFY: &str = "bench-verify";
const CONCURRENCY: usize = 64;

struct Config {
    full: bool,
    rounds: usize,
    tokens: usize,
    stores: Vec<String>,
}

impl Config {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench");
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let mut c = if full {
            Config {
                full,
                rounds: 5,
                tokens: 4_000,
                stores: vec!["memory".into(), "sqlite".into(), "redis".into()],
            }
        } else {
            Config {
                full,
                rounds: 1,
                tokens: 50,
                stores: vec!["memory".into(), "sqlite".into(), "redis".into()],
            }
        };
        if let Some(v) = value("--rounds").and_then(|v| v.parse().ok()) {
            c.rounds = v;
        }
        if let Some(v) = value("--tokens").and_then(|v| v.parse().ok()) {
            c.tokens = v;
        }
        if let Some(v) = value("--stores") {
            c.stores = v.split(',').map(str::to_string).collect();
        }
        c
    }
}

/// Every thread but the helpers' (the provider's, the signers') and the
/// verifiers': the logouts' own CPU, the store's threads included.
fn logout_threads(name: &str, _main: bool) -> bool {
    !name.starts_with(AUX) && !name.starts_with(VERIFY)
}

fn main() {
    let config = Config::from_args();
    let aux = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(AUX)
        .enable_all()
        .build()
        .expect("helper runtime");
    // The logouts run on this thread (the main one), one task set at a time.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let idp = aux
        .block_on(DevIdp::start(
            ([127, 0, 0, 1], 0).into(),
            DevIdpConfig::default(),
        ))
        .expect("development identity provider");
    let app_url = "http://127.0.0.1:9";
    let client = Client::register(&idp, &[app_url]);
    let settings = client.settings(&idp, app_url).expect("settings");
    let verifier = aux
        .block_on(Verifier::new(&idp, &client.client_id))
        .expect("the provider's key");
    let tokens =
        web::logout_tokens(&idp, &client.client_id, config.tokens, 2, MINT).expect("logout tokens");

    let want = |s: &str| config.stores.iter().any(|x| x == s);
    let disk = ScratchDir::in_dir(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("scratch dir");
    let admin = want("redis").then(|| {
        let addr = std::env::var("IDWEB_BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
        rt.block_on(RedisAdmin::connect(&addr)).unwrap_or_else(|e| {
            panic!("no Redis at {addr} (start one, or leave it out with --stores): {e}")
        })
    });

    eprintln!(
        "back-channel logout in process{}: {} tokens, {} round(s), {CONCURRENCY} at a time",
        if config.full { "" } else { " (short test run)" },
        config.tokens,
        config.rounds
    );
    let names: Vec<&str> = ["memory", "sqlite", "redis+L1"]
        .into_iter()
        .zip(["memory", "sqlite", "redis"])
        .filter(|(_, s)| want(s))
        .map(|(n, _)| n)
        .collect();
    let mut logout_us: Vec<Vec<f64>> = names.iter().map(|_| Vec::new()).collect();
    let mut verify_us: Vec<f64> = Vec::new();

    for round in 0..config.rounds {
        let report = web::verify_all(&verifier, &tokens, 1, VERIFY).expect("verify");
        assert_eq!(report.failed, 0, "every token verifies");
        let v = report.cpu.run_ns as f64 / 1e3 / tokens.len() as f64;
        verify_us.push(v);
        eprintln!("round {round} RS256 verification        {v:7.1} CPU µs/token");

        for (i, name) in names.iter().enumerate() {
            let kind = match *name {
                "memory" => StoreKind::Memory,
                "sqlite" => StoreKind::Sqlite(disk.path().to_path_buf()),
                _ => {
                    let admin = admin.as_ref().expect("Redis");
                    StoreKind::RedisL1 {
                        url: admin.url(),
                        prefix: admin.prefix(&format!("logout{round}")),
                    }
                }
            };
            let store = rt
                .block_on(OpenedStore::open(&kind))
                .expect("open the store");
            let rp = rt
                .block_on(
                    RelyingParty::builder(settings.clone())
                        .with_store(store.store.clone())
                        .build(),
                )
                .expect("relying party");
            let rp = Arc::new(rp);
            let before = Snapshot::now();
            let failed = rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                let mut failed = 0usize;
                for t in tokens.clone() {
                    if tasks.len() >= CONCURRENCY
                        && let Some(done) = tasks.join_next().await
                    {
                        failed += usize::from(!matches!(done, Ok(true)));
                    }
                    let rp = rp.clone();
                    tasks.spawn(async move { rp.back_channel_logout(&t).await.is_ok() });
                }
                while let Some(done) = tasks.join_next().await {
                    failed += usize::from(!matches!(done, Ok(true)));
                }
                failed
            });
            let used = Snapshot::now().since(&before, logout_threads);
            assert_eq!(failed, 0, "{name}: every logout is accepted");
            let us = used.run_ns as f64 / 1e3 / tokens.len() as f64;
            eprintln!(
                "round {round} {name:<9} logouts          {us:7.1} CPU µs/token (verification ÷ logout {:.2})",
                v / us
            );
            logout_us[i].push(us);
            rt.block_on(store.close());
        }
    }
    if let Some(admin) = &admin {
        let _ = admin.delete_keys();
    }

    verify_us.sort_by(f64::total_cmp);
    let v = median(&verify_us);
    println!(
        "\nBack-channel logout in process ({} round(s), medians; CPU µs per token; ratio = verification ÷ logout)",
        config.rounds
    );
    println!(
        "| store | logout CPU µs/token | RS256 verification CPU µs/token | verification ÷ logout |"
    );
    println!("|---|---:|---:|---:|");
    for (i, name) in names.iter().enumerate() {
        logout_us[i].sort_by(f64::total_cmp);
        let l = median(&logout_us[i]);
        println!("| {name} | {l:.1} | {v:.1} | {:.2} |", v / l);
    }
}
