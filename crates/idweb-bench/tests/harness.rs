//! The benchmark harness checked on tiny runs: the load generator counts
//! what the server received, the benchmark app signs a user in and answers
//! its routes, the logout tokens verify (and a forged one does not), and
//! the MSAL Python script prints the figures the MSAL bench parses. No
//! timing is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use hyper::header::{COOKIE, HeaderValue};
use idweb_bench::load::{self, LoadOptions, RequestTemplate, Requests};
use idweb_bench::web::{self, Bound, Client, OpenedStore, StoreKind, Verifier, WebApp};
use idweb_devidp::{DevIdp, DevIdpConfig};
use tokio::net::TcpListener;

fn any_thread(_: &str, _: bool) -> bool {
    true
}

fn options(connections: usize) -> LoadOptions {
    LoadOptions {
        connections,
        warmup: Duration::from_millis(20),
        window: Duration::from_millis(150),
        max_requests: u64::MAX,
        server_threads: any_thread,
        load_threads: any_thread,
    }
}

#[derive(Default)]
struct Seen {
    count: AtomicU64,
    bodies: Mutex<Vec<Bytes>>,
}

/// A server counting its requests: `GET /count` (200), `GET /teapot` (418),
/// `POST /body` (200, keeps the body).
async fn counting_server() -> (std::net::SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let (a, b, c) = (seen.clone(), seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/count",
            get(move || async move {
                a.count.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .route(
            "/teapot",
            get(move || async move {
                b.count.fetch_add(1, Ordering::SeqCst);
                StatusCode::IM_A_TEAPOT
            }),
        )
        .route(
            "/body",
            post(move |body: Bytes| async move {
                c.count.fetch_add(1, Ordering::SeqCst);
                c.bodies.lock().unwrap().push(body);
                "ok"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_counts_every_request_the_server_answered() {
    let (addr, seen) = counting_server().await;
    let r = load::run(
        addr,
        &addr.to_string(),
        Requests::Repeat(RequestTemplate::get("/count", vec![])),
        options(4),
    )
    .await
    .unwrap();
    assert!(r.all_ok(), "{r:?}");
    assert!(r.ok > 0 && r.ok <= r.ok_total, "{r:?}");
    assert_eq!(r.failed, 0);
    assert_eq!(r.sent, r.ok_total);
    assert_eq!(seen.count.load(Ordering::SeqCst), r.sent);
    assert!(!r.exhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_body_is_sent_exactly_once_and_the_run_ends_when_they_run_out() {
    let (addr, seen) = counting_server().await;
    let bodies: Vec<Bytes> = (0..500).map(|i| Bytes::from(format!("b={i}"))).collect();
    let mut o = options(8);
    o.window = Duration::from_secs(60);
    let r = load::run(
        addr,
        &addr.to_string(),
        Requests::EachOnce {
            template: RequestTemplate::post_form("/body"),
            bodies: Arc::new(bodies.clone()),
        },
        o,
    )
    .await
    .unwrap();
    assert!(r.all_ok(), "{r:?}");
    assert!(r.exhausted, "the window must close when the bodies run out");
    assert_eq!((r.sent, r.ok_total), (500, 500));
    let got: HashSet<Bytes> = seen.bodies.lock().unwrap().iter().cloned().collect();
    assert_eq!(seen.bodies.lock().unwrap().len(), 500);
    assert_eq!(got, bodies.into_iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_bounds_the_run_and_other_statuses_are_failures() {
    let (addr, seen) = counting_server().await;
    let mut o = options(3);
    o.max_requests = 40;
    o.window = Duration::from_secs(60);
    let r = load::run(
        addr,
        &addr.to_string(),
        Requests::Repeat(RequestTemplate::get("/teapot", vec![])),
        o,
    )
    .await
    .unwrap();
    assert_eq!(r.sent, 40);
    assert_eq!(seen.count.load(Ordering::SeqCst), 40);
    assert_eq!(r.ok_total, 0);
    assert_eq!(r.failed_by_status.get(&418), Some(&40));
    assert!(!r.all_ok());
    assert_eq!(r.rate(), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_transport_error() {
    // A port that was free a moment ago: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let r = load::run(
        addr,
        &addr.to_string(),
        Requests::Repeat(RequestTemplate::get("/", vec![])),
        options(2),
    )
    .await
    .unwrap();
    assert_eq!(r.transport_errors, 2);
    assert!(r.first_error.is_some());
    assert!(!r.all_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_app_signs_in_serves_its_routes_and_takes_logout_tokens() {
    let idp = DevIdp::start(
        ([127, 0, 0, 1], 0).into(),
        DevIdpConfig {
            auto_login: true,
            ..DevIdpConfig::default()
        },
    )
    .await
    .unwrap();
    let bound = Bound::new().await.unwrap();
    let client = Client::register(&idp, &[bound.url.as_str()]);
    let settings = client.settings(&idp, &bound.url).unwrap();
    let store = OpenedStore::open(&StoreKind::Memory).await.unwrap();
    let app = WebApp::start(bound, settings, store).await.unwrap();
    let cookie = web::sign_in(&app.url).await.unwrap();

    // Signed in: every GET route answers 200; without the cookie the
    // protected ones do not.
    for route in [web::BARE, web::USER, web::TOKEN] {
        let mut o = options(2);
        o.max_requests = 20;
        let r = load::run(
            app.addr,
            &app.host(),
            Requests::Repeat(RequestTemplate::get(route, vec![(COOKIE, cookie.clone())])),
            o,
        )
        .await
        .unwrap();
        assert!(r.all_ok(), "{route}: {r:?}");
        assert_eq!(r.sent, 20);
        let anonymous = load::run(
            app.addr,
            &app.host(),
            Requests::Repeat(RequestTemplate::get(
                route,
                vec![(COOKIE, HeaderValue::from_static("idweb.session=forged"))],
            )),
            o,
        )
        .await
        .unwrap();
        assert_eq!(
            anonymous.all_ok(),
            route == web::BARE,
            "{route}: {anonymous:?}"
        );
    }
    // The token route was served from the cache.
    assert_eq!(idp.stats().refresh_token, 0);

    // Logout tokens: each accepted once, one tombstone each.
    let tokens = web::logout_tokens(&idp, &client.client_id, 30, 2, "test-mint").unwrap();
    assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), 30);
    let bodies: Arc<Vec<Bytes>> = Arc::new(tokens.iter().map(|t| web::logout_form(t)).collect());
    let before = app.store.store.stats().await.unwrap().tombstones;
    let mut o = options(4);
    o.window = Duration::from_secs(60);
    let each = || Requests::EachOnce {
        template: RequestTemplate::post_form(web::BACKCHANNEL),
        bodies: bodies.clone(),
    };
    let r = load::run(app.addr, &app.host(), each(), o).await.unwrap();
    assert!(r.all_ok(), "{r:?}");
    assert_eq!(r.ok_total, 30);
    let after = app.store.store.stats().await.unwrap().tombstones;
    assert_eq!(after - before, 30);
    // Replayed: refused.
    let replay = load::run(app.addr, &app.host(), each(), o).await.unwrap();
    assert_eq!(replay.ok_total, 0);
    assert_eq!(replay.failed_by_status.get(&400), Some(&30));

    // In process: the same tokens verify; a forged signature does not.
    let verifier = Verifier::new(&idp, &client.client_id).await.unwrap();
    let mut forged = tokens[0].clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let mut all = tokens.clone();
    all.push(forged);
    let v = web::verify_all(&verifier, &all, 2, "test-verify").unwrap();
    assert_eq!((v.verified, v.failed), (30, 1));
    // Another client's verifier refuses them (audience).
    let other = Verifier::new(&idp, "another-client").await.unwrap();
    assert!(!other.verify(&tokens[0]));

    app.stop().await;
    idp.shutdown().await;
}

#[test]
fn the_msal_script_prints_a_parseable_hit_for_each_case() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".test-deps/venv/bin/python");
    assert!(
        python.exists(),
        "MSAL Python is not installed (.test-deps/venv): run scripts/setup/30-python.sh"
    );
    let out = Command::new(python)
        .arg("-B")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("msal/silent_bench.py"))
        .args([
            "--accounts",
            "3,7",
            "--samples",
            "2",
            "--min-sample-ms",
            "1",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["msal_version"], "1.39.0");
    let results = doc["results"].as_array().unwrap();
    let cases: Vec<(u64, &str)> = results
        .iter()
        .map(|r| (r["accounts"].as_u64().unwrap(), r["case"].as_str().unwrap()))
        .collect();
    assert_eq!(
        cases,
        [(3, "exact"), (3, "subset"), (7, "exact"), (7, "subset")]
    );
    for r in results {
        assert_eq!(r["samples_ns"].as_array().unwrap().len(), 2);
        assert!(r["median_ns"].as_f64().unwrap() > 0.0);
        assert!(r["iterations"].as_u64().unwrap() >= 1);
    }
    assert_eq!(
        results[1]["scopes"],
        serde_json::json!(["api://todo/todos.read"])
    );
    assert!(doc["fill_seconds"]["7"].as_f64().is_some());
}
