//! The HTTP benchmark; what it measures and the latest figures are in
//! `docs/PERFORMANCE.md` ("HTTP").
//!
//! One process runs a development identity provider, one idweb-axum app
//! per store (memory, SQLite on disk, Redis with the in-process cache) and
//! a load generator. A user is signed in to each app over HTTP, through the
//! provider. Then, in each round, every app's routes are driven in turn by
//! the load generator over loopback, each for a warm-up and a window:
//!
//! - `/bare`: a plain handler (behind the same layers as the others);
//! - `/user`: the `AuthenticatedUser` extractor (session cookie → session);
//! - `/token`: the extractor and `user.token(&["api://todo/todos.read"])`,
//!   a token-cache hit;
//! - `POST /backchannel-logout`: distinct logout tokens signed by the
//!   provider for provider sessions the app does not know (each is
//!   verified, its `jti` recorded and a tombstone written). The same
//!   tokens are then verified in process with jsonwebtoken and the
//!   provider's key, on as many threads as the server has.
//!
//! It prints one table of ratios (route ÷ `/bare` of the same app and
//! round; logouts/s ÷ verifications/s of the same tokens), medians over the
//! rounds, with the absolute figures beside them.
//!
//! The server runs on its own tokio runtime (`--server-threads`, one by
//! default) and the load generator on another (`--load-threads`, one by
//! default); the provider and the coordinator on a third, idle during the
//! windows. Other options: `--rounds` (5), `--window` seconds (2),
//! `--warmup` seconds (0.5), `--connections` (128), `--tokens` per round
//! (10 000), `--stores` (`memory,sqlite,redis`). Redis is at
//! `127.0.0.1:6379` unless `IDWEB_BENCH_REDIS` names another `HOST:PORT`;
//! it must be running.
//!
//! Run as a test (`cargo test --benches`, no `--bench` argument): one short
//! round with a few connections and tokens, checking that everything
//! answers 200.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{COOKIE, HeaderValue};
use idweb_bench::ScratchDir;
use idweb_bench::load::{self, LoadOptions, LoadReport, RequestTemplate, Requests};
use idweb_bench::redis_fixture::RedisAdmin;
use idweb_bench::timing::median;
use idweb_bench::web::{
    self, BACKCHANNEL, BARE, Bound, Client, OpenedStore, StoreKind, TOKEN, USER, Verifier,
    VerifyReport, WebApp,
};
use idweb_devidp::{DevIdp, DevIdpConfig};
use tokio::runtime::Runtime;

const SERVER: &str = "bench-server";
const LOAD: &str = "bench-load";
const AUX: &str = "bench-aux";
const MINT: &str = "bench-aux-mint";
const VERIFY: &str = "bench-verify";

/// The server's threads: every thread but the main one, the load
/// generator's, the helpers' and the verifiers' (so the store's own
/// threads, e.g. SQLite's, count as the server's).
fn server_threads(name: &str, main: bool) -> bool {
    !main && !name.starts_with(LOAD) && !name.starts_with(AUX) && !name.starts_with(VERIFY)
}

fn load_threads(name: &str, _main: bool) -> bool {
    name.starts_with(LOAD)
}

#[derive(Debug, Clone)]
struct Config {
    full: bool,
    rounds: usize,
    window: Duration,
    warmup: Duration,
    connections: usize,
    server_threads: usize,
    load_threads: usize,
    tokens: usize,
    stores: Vec<String>,
}

impl Config {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        // `cargo bench` passes `--bench`; without it this is a test run.
        let full = args.iter().any(|a| a == "--bench");
        let mut c = if full {
            Config {
                full,
                rounds: 5,
                window: Duration::from_secs(2),
                warmup: Duration::from_millis(500),
                connections: 128,
                server_threads: 1,
                load_threads: 1,
                tokens: 10_000,
                stores: vec!["memory".into(), "sqlite".into(), "redis".into()],
            }
        } else {
            Config {
                full,
                rounds: 1,
                window: Duration::from_millis(300),
                warmup: Duration::from_millis(100),
                connections: 4,
                server_threads: 1,
                load_threads: 1,
                tokens: 200,
                stores: vec!["memory".into(), "sqlite".into(), "redis".into()],
            }
        };
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let num = |name: &str| value(name).and_then(|v| v.parse::<usize>().ok());
        let secs = |name: &str| {
            value(name)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| *s > 0.0)
                .map(Duration::from_secs_f64)
        };
        if let Some(v) = num("--rounds") {
            c.rounds = v.max(1);
        }
        if let Some(v) = secs("--window") {
            c.window = v;
        }
        if let Some(v) = secs("--warmup") {
            c.warmup = v;
        }
        if let Some(v) = num("--connections") {
            c.connections = v.max(1);
        }
        if let Some(v) = num("--server-threads") {
            c.server_threads = v.max(1);
        }
        if let Some(v) = num("--load-threads") {
            c.load_threads = v.max(1);
        }
        if let Some(v) = num("--tokens") {
            c.tokens = v.max(8);
        }
        if let Some(v) = value("--stores") {
            c.stores = v.split(',').map(str::to_string).collect();
        }
        c
    }

    fn options(&self) -> LoadOptions {
        LoadOptions {
            connections: self.connections,
            warmup: self.warmup,
            window: self.window,
            max_requests: u64::MAX,
            server_threads,
            load_threads,
        }
    }
}

fn runtime(name: &str, threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        // Blocking threads live as long as the run, so that their CPU time
        // is never lost from the per-thread figures.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The measurements of one app.
#[derive(Debug, Default)]
struct Results {
    /// Per route (BARE, USER, TOKEN), per round.
    get: [Vec<LoadReport>; 3],
    /// Per round.
    logout: Vec<LoadReport>,
}

const ROUTES: [&str; 3] = [BARE, USER, TOKEN];

fn main() {
    let config = Config::from_args();
    let aux = runtime(AUX, 1);
    let server = runtime(SERVER, config.server_threads);
    let load = runtime(LOAD, config.load_threads);

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "HTTP benchmark{}: {cpus} CPUs shared by the server ({} thread(s)), the load generator ({} \
         thread(s)), Redis and anything else running; {} connections, {} round(s) of {:?} warm-up \
         + {:?} window per route, {} logout tokens per round",
        if config.full { "" } else { " (short test run)" },
        config.server_threads,
        config.load_threads,
        config.connections,
        config.rounds,
        config.warmup,
        config.window,
        config.tokens
    );

    let idp = aux
        .block_on(DevIdp::start(
            ([127, 0, 0, 1], 0).into(),
            DevIdpConfig {
                auto_login: true,
                ..DevIdpConfig::default()
            },
        ))
        .expect("development identity provider");

    let redis_addr = std::env::var("IDWEB_BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let want = |s: &str| config.stores.iter().any(|x| x == s);
    let admin = if want("redis") {
        match aux.block_on(RedisAdmin::connect(&redis_addr)) {
            Ok(a) => Some(a),
            Err(e) => panic!(
                "no Redis at {redis_addr} (start one, set IDWEB_BENCH_REDIS, or leave it out with --stores): {e}"
            ),
        }
    } else {
        None
    };
    let disk = ScratchDir::in_dir(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("scratch dir");
    let fs = web::file_system_of(disk.path()).unwrap_or_else(|| "unknown".into());
    let mut kinds = Vec::new();
    if want("memory") {
        kinds.push(StoreKind::Memory);
    }
    if want("sqlite") {
        eprintln!(
            "SQLite database in the target directory, on a {fs} file system ({})",
            if disk.in_ram() {
                "RAM-backed"
            } else {
                "on disk"
            }
        );
        kinds.push(StoreKind::Sqlite(disk.path().to_path_buf()));
    }
    if let Some(admin) = &admin {
        kinds.push(StoreKind::RedisL1 {
            url: admin.url(),
            prefix: admin.prefix("http"),
        });
    }
    assert!(!kinds.is_empty(), "--stores names no known store");

    // One listener per app, then one client registration for all of them.
    let bounds: Vec<Bound> = server.block_on(async {
        let mut v = Vec::new();
        for _ in &kinds {
            v.push(Bound::new().await.expect("bind"));
        }
        v
    });
    let urls: Vec<String> = bounds.iter().map(|b| b.url.clone()).collect();
    let client = Client::register(&idp, &urls.iter().map(String::as_str).collect::<Vec<_>>());
    let apps: Vec<WebApp> = server.block_on(async {
        let mut v = Vec::new();
        for (kind, bound) in kinds.iter().zip(bounds) {
            let settings = client.settings(&idp, &bound.url).expect("settings");
            let store = OpenedStore::open(kind).await.expect("open the store");
            v.push(
                WebApp::start(bound, settings, store)
                    .await
                    .expect("start the app"),
            );
        }
        v
    });
    let cookies: Vec<HeaderValue> = apps
        .iter()
        .map(|app| aux.block_on(web::sign_in(&app.url)).expect("sign-in"))
        .collect();
    let verifier = aux
        .block_on(Verifier::new(&idp, &client.client_id))
        .expect("the provider's key");
    let token_requests_before = idp.stats();

    let mut results: Vec<Results> = kinds.iter().map(|_| Results::default()).collect();
    let mut verifications: Vec<VerifyReport> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let options = config.options();

    for round in 0..config.rounds {
        for (i, app) in apps.iter().enumerate() {
            let name = kinds[i].name();
            for k in 0..ROUTES.len() {
                // The routes take turns being first.
                let r = (k + round) % ROUTES.len();
                let route = ROUTES[r];
                let template = RequestTemplate::get(route, vec![(COOKIE, cookies[i].clone())]);
                let report = load
                    .block_on(load::run(
                        app.addr,
                        &app.host(),
                        Requests::Repeat(template),
                        options,
                    ))
                    .expect("load");
                eprintln!("round {round} {name:<9} {}", line(route, &report, &config));
                if !report.all_ok() {
                    problems.push(format!("{name} {route}: {}", failures(&report)));
                }
                results[i].get[r].push(report);
            }
        }

        let tokens = web::logout_tokens(&idp, &client.client_id, config.tokens, 2, MINT)
            .expect("logout tokens");
        let bodies: Arc<Vec<Bytes>> =
            Arc::new(tokens.iter().map(|t| web::logout_form(t)).collect());
        for (i, app) in apps.iter().enumerate() {
            let name = kinds[i].name();
            let store = app.store.store.clone();
            let before = server
                .block_on(store.stats())
                .expect("store stats")
                .tombstones;
            let report = load
                .block_on(load::run(
                    app.addr,
                    &app.host(),
                    Requests::EachOnce {
                        template: RequestTemplate::post_form(BACKCHANNEL),
                        bodies: bodies.clone(),
                    },
                    options,
                ))
                .expect("load");
            let after = server
                .block_on(store.stats())
                .expect("store stats")
                .tombstones;
            eprintln!(
                "round {round} {name:<9} {}",
                line(BACKCHANNEL, &report, &config)
            );
            if !report.all_ok() {
                problems.push(format!("{name} {BACKCHANNEL}: {}", failures(&report)));
            }
            // Each accepted logout token names a provider session of its own:
            // one tombstone each.
            let written = after.saturating_sub(before);
            if written != report.ok_total {
                problems.push(format!(
                    "{name}: {} logouts answered 200 but {written} tombstones were written",
                    report.ok_total
                ));
            }
            results[i].logout.push(report);
        }
        let v = web::verify_all(&verifier, &tokens, config.server_threads, VERIFY)
            .expect("verification");
        eprintln!(
            "round {round} in-process RS256 verification on {} thread(s): {:.0}/s, {} CPU us/token",
            config.server_threads,
            v.rate(),
            fmt_opt(v.us_per_token(), 1)
        );
        if v.failed > 0 {
            problems.push(format!("{} tokens did not verify in process", v.failed));
        }
        verifications.push(v);
    }

    let stats = idp.stats();
    if stats.refresh_token != token_requests_before.refresh_token
        || stats.token_errors != token_requests_before.token_errors
    {
        problems.push(format!(
            "the token route reached the identity provider (not a cache hit): {stats:?}"
        ));
    }
    if let Some(l1) = apps.iter().find_map(|a| a.store.caching()) {
        eprintln!(
            "Redis in-process cache: {} hits, {} misses in all",
            l1.l1_hits(),
            l1.l1_misses()
        );
    }

    print_tables(&config, &kinds, &results, &verifications);

    server.block_on(async {
        for app in apps {
            app.stop().await;
        }
    });
    if let Some(admin) = admin {
        match admin.delete_keys() {
            Ok(n) => eprintln!("deleted the run's {n} Redis keys"),
            Err(e) => problems.push(format!("Redis keys left: {e}")),
        }
    }
    aux.block_on(idp.shutdown());
    drop(disk);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        std::process::exit(1);
    }
}

fn failures(r: &LoadReport) -> String {
    format!(
        "{} sent, {} answered 2xx, other statuses {:?}, {} transport errors{}",
        r.sent,
        r.ok_total,
        r.failed_by_status,
        r.transport_errors,
        r.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    )
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
}

/// Share of the server's threads' capacity it used in the window.
fn busy(r: &LoadReport, c: &Config) -> Option<f64> {
    r.cpu_available.then(|| {
        r.server_cpu.run_ns as f64 / (r.window.as_nanos() as f64 * c.server_threads as f64)
    })
}

fn line(route: &str, r: &LoadReport, c: &Config) -> String {
    format!(
        "{route:<20} {:>9.0}/s ({} in {:.2} s{}), server {} CPU us/req, busy {}%, waited for a CPU {}%; load generator {} CPU us/req; stolen by the hypervisor {}%",
        r.rate(),
        r.ok,
        r.window.as_secs_f64(),
        if r.exhausted {
            ", requests ran out"
        } else {
            ""
        },
        fmt_opt(r.server_us_per_request(), 1),
        fmt_opt(busy(r, c).map(|b| b * 100.0), 0),
        fmt_opt(
            r.cpu_available.then(|| r.server_cpu.wait_ns as f64
                / (r.window.as_nanos() as f64 * c.server_threads as f64)
                * 100.0),
            0
        ),
        fmt_opt(r.load_us_per_request(), 1),
        fmt_opt(r.steal.map(|s| s * 100.0), 0),
    )
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v
}

/// Median over the rounds, and the range.
fn stats(v: Vec<f64>) -> (f64, f64, f64) {
    let v = sorted(v);
    (
        median(&v),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

fn target_for(route: &str, store: &str) -> Option<f64> {
    match (route, store) {
        (TOKEN, "sqlite") => Some(0.60),
        (TOKEN, _) => Some(0.80),
        (BACKCHANNEL, "sqlite") => Some(0.25),
        (BACKCHANNEL, _) => Some(0.50),
        _ => None,
    }
}

fn verdict(ratio: f64, target: Option<f64>) -> String {
    match target {
        Some(t) if ratio >= t => format!("≥ {t:.2}: met"),
        Some(t) => format!("≥ {t:.2}: not met"),
        None => "-".to_string(),
    }
}

fn print_tables(c: &Config, kinds: &[StoreKind], results: &[Results], verify: &[VerifyReport]) {
    println!();
    println!(
        "HTTP routes ({} round(s), medians; ratio = route ÷ /bare of the same app and round; \
         CPU ratio = server CPU per request of /bare ÷ that of the route)",
        c.rounds
    );
    println!(
        "| store | route | requests/s | range | × /bare | target | server CPU µs/req | CPU ratio | server busy | stolen |"
    );
    println!("|---|---|---:|---:|---:|---|---:|---:|---:|---:|");
    for (kind, res) in kinds.iter().zip(results) {
        let bare = &res.get[0];
        for (r, route) in ROUTES.iter().enumerate() {
            let reports = &res.get[r];
            let (rate, lo, hi) = stats(reports.iter().map(LoadReport::rate).collect());
            let (ratio, _, _) = stats(
                reports
                    .iter()
                    .zip(bare)
                    .map(|(x, b)| x.rate() / b.rate())
                    .collect(),
            );
            let (cpu, _, _) = stats(
                reports
                    .iter()
                    .filter_map(LoadReport::server_us_per_request)
                    .collect(),
            );
            let (cpu_ratio, _, _) = stats(
                reports
                    .iter()
                    .zip(bare)
                    .filter_map(|(x, b)| {
                        Some(b.server_us_per_request()? / x.server_us_per_request()?)
                    })
                    .collect(),
            );
            let (b, _, _) = stats(reports.iter().filter_map(|x| busy(x, c)).collect());
            let (stolen, _, _) = stats(reports.iter().filter_map(|x| x.steal).collect());
            println!(
                "| {} | `{route}` | {rate:.0} | {lo:.0}–{hi:.0} | {ratio:.2} | {} | {cpu:.1} | {cpu_ratio:.2} | {:.0}% | {:.0}% |",
                kind.name(),
                verdict(ratio, target_for(route, kind.name())),
                b * 100.0,
                stolen * 100.0
            );
        }
    }
    println!();
    println!(
        "Back-channel logout ({} round(s), medians; ratio = logouts/s ÷ in-process RS256 \
         verifications/s of the same tokens on {} thread(s); CPU ratio = verification CPU per \
         token ÷ server CPU per logout)",
        c.rounds, c.server_threads
    );
    println!(
        "| store | logouts/s | range | verifications/s | × verification | target | server CPU µs/logout | verify CPU µs/token | CPU ratio | stolen |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for (kind, res) in kinds.iter().zip(results) {
        let (rate, lo, hi) = stats(res.logout.iter().map(LoadReport::rate).collect());
        let (vrate, _, _) = stats(verify.iter().map(VerifyReport::rate).collect());
        let (ratio, _, _) = stats(
            res.logout
                .iter()
                .zip(verify)
                .map(|(l, v)| l.rate() / v.rate())
                .collect(),
        );
        let (cpu, _, _) = stats(
            res.logout
                .iter()
                .filter_map(LoadReport::server_us_per_request)
                .collect(),
        );
        let (vcpu, _, _) = stats(
            verify
                .iter()
                .filter_map(VerifyReport::us_per_token)
                .collect(),
        );
        let (cpu_ratio, _, _) = stats(
            res.logout
                .iter()
                .zip(verify)
                .filter_map(|(l, v)| Some(v.us_per_token()? / l.server_us_per_request()?))
                .collect(),
        );
        let (stolen, _, _) = stats(res.logout.iter().filter_map(|x| x.steal).collect());
        println!(
            "| {} | {rate:.0} | {lo:.0}–{hi:.0} | {vrate:.0} | {ratio:.2} | {} | {cpu:.1} | {vcpu:.1} | {cpu_ratio:.2} | {:.0}% |",
            kind.name(),
            verdict(ratio, target_for(BACKCHANNEL, kind.name())),
            stolen * 100.0
        );
    }
}
