//! idweb's token-cache hit side by side with MSAL Python's
//! `acquire_token_silent`; what it measures and the latest figures are in
//! `docs/PERFORMANCE.md` ("Against MSAL Python").
//!
//! Both sides hold N signed-in users (1 000 and 10 000) with valid access
//! tokens for `api://todo/todos.read api://todo/todos.write`, and time a
//! cache hit for one of them (in the middle), asking for both scopes
//! (`exact`) and for `api://todo/todos.read` only (`subset`):
//!
//! - MSAL Python 1.39: `msal/silent_bench.py`, run with the interpreter of
//!   `.test-deps/venv` (made by `scripts/setup/30-python.sh`), fills a
//!   `SerializableTokenCache` and times `acquire_token_silent(scopes,
//!   account)`;
//! - idweb: `RelyingParty::token_for_user(&session, scopes)` over
//!   `MemoryStore`, `SqliteStore` (a file on disk) and `CachingStore` over
//!   Redis (the in-process cache warm), each store holding N sessions with
//!   the entries a sign-in leaves (access, refresh and ID token).
//!
//! Neither side looks the user up (MSAL gets the account dictionary, idweb
//! the session). Both are timed the same way (`idweb_bench::timing`): the
//! calls per sample are doubled until a sample lasts `--min-sample-ms`
//! (50), then `--samples` (21) samples are timed; the figure is the median
//! per-call time. idweb is measured before and after MSAL, and the two
//! passes' samples are pooled. The table gives MSAL ÷ idweb for each case.
//! Other options: `--accounts 1000,10000`, `--stores memory,sqlite,redis`.
//!
//! Redis is at `127.0.0.1:6379` unless `IDWEB_BENCH_REDIS` names another
//! `HOST:PORT`; it must be running, and so must MSAL's virtual environment.
//! Run as a test (`cargo test --benches`): 20 users, 3 short samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use idweb::{RelyingParty, Session, Store};
use idweb_bench::redis_fixture::{Limits, RedisAdmin, RedisFixture, add_session};
use idweb_bench::timing::{Sampling, Timing, time_async};
use idweb_bench::{Backend, Fixture, ScratchDir, TOKEN_TARGET, register_client};
use idweb_devidp::DevIdp;
use idweb_store_redis::CachingStore;
use serde_json::Value;
use tokio::runtime::Runtime;

/// Length of the placeholder access tokens of the fixtures.
const ACCESS_TOKEN_LEN: usize = 1200;

const CASES: [&str; 2] = ["exact", "subset"];

fn scopes(case: &str) -> Vec<&'static str> {
    let all: Vec<&'static str> = TOKEN_TARGET.split(' ').collect();
    if case == "exact" {
        all
    } else {
        all[..1].to_vec()
    }
}

#[derive(Debug, Clone)]
struct Config {
    full: bool,
    accounts: Vec<usize>,
    sampling: Sampling,
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
        let accounts = value("--accounts")
            .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_else(|| if full { vec![1_000, 10_000] } else { vec![20] });
        let samples = value("--samples")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { 21 } else { 3 });
        let min_ms = value("--min-sample-ms")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(if full { 50.0 } else { 1.0 });
        let stores = value("--stores").map_or_else(
            || vec!["memory".into(), "sqlite".into(), "redis".into()],
            |v| v.split(',').map(str::to_string).collect(),
        );
        Config {
            full,
            accounts,
            sampling: Sampling {
                samples,
                min_sample: Duration::from_secs_f64(min_ms / 1000.0),
            },
            stores,
        }
    }
}

/// One store holding N sessions, and the session of the hit.
struct Side {
    store: &'static str,
    accounts: usize,
    session: Session,
    l1: Option<Arc<CachingStore>>,
    /// Memory and SQLite: the fixture and its relying party.
    fixture: Option<Fixture>,
    /// Redis: the relying party over the in-process cache.
    redis_rp: Option<RelyingParty>,
    filled_in: Duration,
}

impl Side {
    fn rp(&self) -> &RelyingParty {
        match (&self.fixture, &self.redis_rp) {
            (Some(f), _) => &f.rp,
            (None, Some(rp)) => rp,
            (None, None) => unreachable!("every side has a relying party"),
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let python = workspace_root().join(".test-deps/venv/bin/python");
    assert!(
        python.exists(),
        "MSAL Python is not installed (.test-deps/venv): run scripts/setup/30-python.sh"
    );
    python
}

/// Runs the MSAL side and returns its JSON document.
fn msal(config: &Config) -> Value {
    let sizes: Vec<String> = config.accounts.iter().map(usize::to_string).collect();
    let out = Command::new(python())
        .arg("-B")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("msal/silent_bench.py"))
        .args(["--accounts", &sizes.join(",")])
        .args(["--samples", &config.sampling.samples.to_string()])
        .args([
            "--min-sample-ms",
            &format!("{}", config.sampling.min_sample.as_secs_f64() * 1000.0),
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run MSAL Python");
    assert!(
        out.status.success(),
        "the MSAL side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the MSAL side prints JSON")
}

fn build_sides(
    rt: &Runtime,
    idp: &DevIdp,
    config: &Config,
    disk: &ScratchDir,
    admin: Option<&RedisAdmin>,
) -> Vec<Side> {
    let mut sides = Vec::new();
    for &n in &config.accounts {
        for store in &config.stores {
            let side = match store.as_str() {
                "memory" | "sqlite" => {
                    let backend = if store == "memory" {
                        Backend::Memory
                    } else {
                        Backend::Sqlite
                    };
                    let f = rt
                        .block_on(Fixture::build(idp, backend, n.max(4), disk))
                        .expect("fixture");
                    Side {
                        store: backend.name(),
                        accounts: n,
                        session: f.probe.clone(),
                        l1: None,
                        filled_in: f.populated_in,
                        fixture: Some(f),
                        redis_rp: None,
                    }
                }
                "redis" => {
                    let admin = admin.expect("Redis");
                    let settings = register_client(idp).expect("settings");
                    let limits = Limits {
                        time: Duration::from_secs(600),
                        memory: 4 * 1024 * 1024 * 1024,
                    };
                    let f = rt
                        .block_on(RedisFixture::build(
                            admin,
                            &settings,
                            idp.issuer(),
                            &format!("msal-{n}"),
                            n.max(1),
                            limits,
                        ))
                        .expect("Redis fixture");
                    if f.population.stopped.is_some() {
                        panic!("filling Redis stopped early: {:?}", f.population.stopped);
                    }
                    // A user with the three entries a sign-in leaves, written
                    // through the in-process cache's store.
                    let rp = rt
                        .block_on(idweb_bench::relying_party_with(
                            settings.clone(),
                            f.cached.clone() as Arc<dyn Store>,
                        ))
                        .expect("relying party");
                    let session = rt
                        .block_on(add_session(&rp, &f.iss, "probe-user"))
                        .expect("session");
                    Side {
                        store: "redis+L1",
                        accounts: n,
                        session,
                        l1: Some(f.cached.clone()),
                        filled_in: f.population.took,
                        fixture: None,
                        redis_rp: Some(rp),
                    }
                }
                other => panic!("unknown store {other}"),
            };
            eprintln!(
                "{} with {} users filled in {:.1} s",
                side.store,
                side.accounts,
                side.filled_in.as_secs_f64()
            );
            sides.push(side);
        }
    }
    sides
}

/// Times every case of every side once; checks that each is a hit for the
/// session's own token and, with L1, that no call missed it.
fn idweb_pass(rt: &Runtime, config: &Config, sides: &[Side]) -> BTreeMap<(usize, String), Timing> {
    let mut out = BTreeMap::new();
    for side in sides {
        for case in CASES {
            let wanted = scopes(case);
            let first = rt
                .block_on(side.rp().token_for_user(&side.session, &wanted))
                .expect("a cache hit");
            assert!(
                first.secret.secret().len() == ACCESS_TOKEN_LEN
                    && first.secret.secret().bytes().all(|b| b == b'a'),
                "{} {case}: not the session's cached token",
                side.store
            );
            let misses = side.l1.as_ref().map(|l1| l1.l1_misses());
            let timing = rt
                .block_on(time_async(config.sampling, || {
                    side.rp().token_for_user(&side.session, &wanted)
                }))
                .expect("a cache hit");
            if let (Some(l1), Some(before)) = (&side.l1, misses) {
                assert_eq!(
                    l1.l1_misses(),
                    before,
                    "{case}: a timed call missed the in-process cache"
                );
            }
            eprintln!(
                "idweb {:<9} {:>6} users {case:<6}: median {:.2} us",
                side.store,
                side.accounts,
                timing.median_ns() / 1e3
            );
            out.insert((side.accounts, format!("{}/{case}", side.store)), timing);
        }
    }
    out
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let config = Config::from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let idp = rt
        .block_on(idweb_bench::start_idp())
        .expect("development identity provider");
    let want_redis = config.stores.iter().any(|s| s == "redis");
    let redis_addr = std::env::var("IDWEB_BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let admin = want_redis.then(|| match rt.block_on(RedisAdmin::connect(&redis_addr)) {
        Ok(a) => a,
        Err(e) => panic!(
            "no Redis at {redis_addr} (start one, set IDWEB_BENCH_REDIS, or leave it out with --stores): {e}"
        ),
    });
    // Checked before the long fills.
    let _ = python();
    let disk = ScratchDir::in_dir(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("scratch dir");
    eprintln!(
        "idweb against MSAL Python{}: {} samples of at least {:?}; SQLite file on {} ({})",
        if config.full { "" } else { " (short test run)" },
        config.sampling.samples,
        config.sampling.min_sample,
        idweb_bench::web::file_system_of(disk.path()).unwrap_or_else(|| "unknown".into()),
        if disk.in_ram() { "RAM-backed" } else { "disk" }
    );
    let sides = build_sides(&rt, &idp, &config, &disk, admin.as_ref());
    let before = idp.stats();

    let first = idweb_pass(&rt, &config, &sides);
    let msal = msal(&config);
    let second = idweb_pass(&rt, &config, &sides);
    let idweb: BTreeMap<(usize, String), Timing> = first
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                second.get(k).map_or_else(|| t.clone(), |u| t.merged(u)),
            )
        })
        .collect();

    let stats = idp.stats();
    assert_eq!(
        (stats.refresh_token, stats.token_errors),
        (before.refresh_token, before.token_errors),
        "an idweb call reached the identity provider: not a cache hit"
    );

    let mut msal_ns: BTreeMap<(usize, String), f64> = BTreeMap::new();
    for r in msal["results"].as_array().expect("results") {
        let (Some(n), Some(case), Some(ns)) = (
            r["accounts"].as_u64(),
            r["case"].as_str(),
            r["median_ns"].as_f64(),
        ) else {
            panic!("unexpected MSAL result {r}");
        };
        msal_ns.insert((n as usize, case.to_string()), ns);
    }
    eprintln!(
        "MSAL Python {} on {} {}; filled in {}",
        msal["msal_version"].as_str().unwrap_or("?"),
        msal["python_implementation"].as_str().unwrap_or("?"),
        msal["python_version"].as_str().unwrap_or("?"),
        msal["fill_seconds"]
    );

    let stores: Vec<&'static str> = {
        let mut v: Vec<&'static str> = Vec::new();
        for s in &sides {
            if !v.contains(&s.store) {
                v.push(s.store);
            }
        }
        v
    };
    println!();
    println!(
        "Cache hit for one signed-in user among N, medians (idweb: two passes pooled); \
         ratio = MSAL Python ÷ idweb"
    );
    let mut header = "| users | scopes | MSAL Python |".to_string();
    let mut rule = "|---:|---|---:|".to_string();
    for s in &stores {
        header.push_str(&format!(" idweb {s} | MSAL ÷ idweb {s} |"));
        rule.push_str("---:|---:|");
    }
    println!("{header}");
    println!("{rule}");
    for &n in &config.accounts {
        for case in CASES {
            let m = msal_ns.get(&(n, case.to_string())).copied();
            let mut row = format!(
                "| {n} | {case} | {} |",
                m.map_or_else(|| "n/a".into(), fmt_ns)
            );
            for s in &stores {
                match idweb.get(&(n, format!("{s}/{case}"))) {
                    Some(t) => row.push_str(&format!(
                        " {} ({}–{}) | {} |",
                        fmt_ns(t.median_ns()),
                        fmt_ns(t.min_ns()),
                        fmt_ns(t.max_ns()),
                        m.map_or_else(|| "n/a".into(), |m| format!("{:.1}", m / t.median_ns()))
                    )),
                    None => row.push_str(" n/a | n/a |"),
                }
            }
            println!("{row}");
        }
    }

    println!();
    println!("Targets (exact-scope hit, largest N):");
    let n = config.accounts.iter().copied().max().unwrap_or(0);
    let m = msal_ns.get(&(n, "exact".to_string())).copied();
    for s in &stores {
        let Some(t) = idweb.get(&(n, format!("{s}/exact"))) else {
            continue;
        };
        let med = t.median_ns();
        let (limit, ratio_target) = match *s {
            "sqlite" => (5_000.0, None),
            _ => (1_000.0, Some(20.0)),
        };
        let mut line = format!(
            "- {s}: {} (≤ {}: {})",
            fmt_ns(med),
            fmt_ns(limit),
            if med <= limit { "met" } else { "not met" }
        );
        if let (Some(r), Some(m)) = (ratio_target, m) {
            let ratio = m / med;
            line.push_str(&format!(
                "; MSAL ÷ idweb {ratio:.1} (≥ {r:.0}: {})",
                if ratio >= r { "met" } else { "not met" }
            ));
        }
        println!("{line}");
    }

    for side in sides {
        if let Some(f) = side.fixture {
            rt.block_on(f.close());
        }
    }
    if let Some(admin) = admin {
        match admin.delete_keys() {
            Ok(k) => eprintln!("deleted the run's {k} Redis keys"),
            Err(e) => panic!("Redis keys left: {e}"),
        }
    }
    rt.block_on(idp.shutdown());
    drop(disk);
}
