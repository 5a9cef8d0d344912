//! Many instances on Redis, as processes: a sign-out reaching one instance
//! takes effect on the other at once (with the L1 cache on and off), and a
//! Redis outage gives clear 503s — never a stale token, never a 200 for a
//! sign-out that was not recorded — and the same processes recover; the
//! sample app hears a sign-out handled by the other instance (its `/events`
//! stream ends, its per-user todo copy is dropped).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{start_webapp, stop};
use idweb_demo::todo_api::{self, TodoApiConfig};
use idweb_test_support::idweb_devidp::{DevClient, DevIdp};
use idweb_test_support::{browser, dev_idp, sign_in_at};
use reqwest::header::ACCEPT;
use tokio::net::TcpListener;

const TODO_SCOPES: &str = "api://todo/todos.read api://todo/todos.write";
const COOKIE_KEY: &str = "c2hhcmVkLWJ5LXR3by1wcm9jZXNzZXMtc2hhcmVkLWJ5LXR3by1wcm9jZXNzZXMtc2hhcmVkLWJ5LXR3by1wcm9jZXNzZXMh";
const CACHE_KEYS: &str = "r1:cmVkaXMtdGVzdHMtY2FjaGUta2V5LW9mLTMyLWJ5dGU=";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn todo_api(idp: &DevIdp) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = todo_api::router(TodoApiConfig::new(idp.issuer()))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The settings both instances share (the README lists them); `public` is the
/// URL users reach (here: instance 1).
fn shared_env(
    idp: &DevIdp,
    api: &str,
    store: &str,
    prefix: &str,
    l1: bool,
    public: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("IDWEB_AUTHORITY", idp.issuer().to_string()),
        ("IDWEB_CLIENT_ID", "redis-app".to_string()),
        ("IDWEB_CLIENT_SECRET", "redis-secret".to_string()),
        ("IDWEB_PUBLIC_URL", public.to_string()),
        (
            "IDWEB_SCOPES",
            format!("openid profile offline_access {TODO_SCOPES}"),
        ),
        ("IDWEB_STORE", store.to_string()),
        ("IDWEB_STORE_PREFIX", prefix.to_string()),
        ("IDWEB_STORE_L1", l1.to_string()),
        ("IDWEB_COOKIE_KEY", COOKIE_KEY.to_string()),
        ("IDWEB_CACHE_KEYS", CACHE_KEYS.to_string()),
        ("IDWEB_DOWNSTREAM__TODO__BASE_URL", api.to_string()),
        ("IDWEB_DOWNSTREAM__TODO__SCOPES", TODO_SCOPES.to_string()),
    ]
}

async fn start(env: Vec<(&'static str, String)>, port: u16) -> Child {
    let mut env = env;
    env.push(("IDWEB_LISTEN", format!("127.0.0.1:{port}")));
    tokio::task::spawn_blocking(move || start_webapp(&env))
        .await
        .unwrap()
}

async fn get_json(b: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let resp = b
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn post_logout(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn sign_out_on_one_instance_takes_effect_on_the_other(l1: bool) {
    let idp = dev_idp(true).await;
    let api = todo_api(&idp).await;
    let (p1, p2) = (free_port(), free_port());
    let (one, two) = (
        format!("http://127.0.0.1:{p1}"),
        format!("http://127.0.0.1:{p2}"),
    );
    idp.register_client(DevClient::new(
        "redis-app",
        "redis-secret",
        format!("{one}/signin-oidc"),
    ));
    let prefix = format!(
        "two-processes-{}",
        idweb::SessionId::generate().fingerprint()
    );
    let env = shared_env(&idp, &api, "redis://127.0.0.1:6379", &prefix, l1, &one);
    let first = start(env.clone(), p1).await;
    let second = start(env, p2).await;

    let b = browser();
    let profile = sign_in_at(&b, &one, "alice").await;
    // Both instances serve the session and its tokens (shared cookie and cache keys).
    for url in [&one, &two] {
        for _ in 0..3 {
            assert_eq!(
                get_json(&b, &format!("{url}/profile")).await.0,
                200,
                "{url}"
            );
            assert_eq!(get_json(&b, &format!("{url}/todos")).await.0, 200, "{url}");
        }
    }

    // The provider's back-channel logout reaches instance 2 ...
    let token = idp.logout_token_for(
        "redis-app",
        profile["sub"].as_str(),
        profile["sid"].as_str(),
    );
    assert_eq!(post_logout(&two, &token).await, 200);
    // ... and instance 1 refuses the session and every token on the very next requests.
    let (status, body) = get_json(&b, &format!("{one}/todos")).await;
    assert_eq!(
        status, 401,
        "l1={l1}: instance 1 still served tokens: {body}"
    );
    assert_eq!(
        get_json(&b, &format!("{one}/profile")).await.0,
        401,
        "l1={l1}"
    );
    assert_eq!(
        get_json(&b, &format!("{one}/cache")).await.0,
        401,
        "l1={l1}"
    );

    tokio::task::spawn_blocking(move || {
        stop(first);
        stop(second);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_takes_effect_on_the_other_with_l1() {
    sign_out_on_one_instance_takes_effect_on_the_other(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_takes_effect_on_the_other_without_l1() {
    sign_out_on_one_instance_takes_effect_on_the_other(false).await;
}

/// A private redis-server (persisting to an append-only file, so a restart
/// keeps the data), killed and restarted by the test.
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        let mut r = Self {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (run scripts/setup-test-deps)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private redis-server did not start");
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_gives_503s_and_the_same_process_recovers() {
    let idp = dev_idp(true).await;
    let api = todo_api(&idp).await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("redis-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let redis_port = free_port();
    let mut redis = PrivateRedis::start(redis_port, &dir);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    idp.register_client(DevClient::new(
        "redis-app",
        "redis-secret",
        format!("{url}/signin-oidc"),
    ));
    let env = shared_env(
        &idp,
        &api,
        &format!("redis://127.0.0.1:{redis_port}"),
        "outage",
        true,
        &url,
    );
    let app = start(env, port).await;
    let b = browser();
    let profile = sign_in_at(&b, &url, "alice").await;
    assert_eq!(get_json(&b, &format!("{url}/todos")).await.0, 200);

    redis.down();
    // The instance learns of the outage when its L1 subscription drops; until
    // then (milliseconds) it may still answer from L1. Wait, bounded, for that.
    let mut noticed = false;
    for _ in 0..50 {
        if get_json(&b, &format!("{url}/profile")).await.0 == 503 {
            noticed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(noticed, "the web app never noticed that Redis is down");
    for path in ["/profile", "/todos", "/cache"] {
        let (status, body) = get_json(&b, &format!("{url}{path}")).await;
        assert_eq!(status, 503, "{path} while Redis is down: {body}");
        assert_eq!(
            body["error"], "store_unavailable",
            "{path}: a clear message"
        );
    }
    let start = get_json(&b, &format!("{url}/account/signin?returnUrl=%2F"))
        .await
        .0;
    assert!(start == 302, "starting a sign-in needs no store: {start}");
    let token = idp.logout_token_for(
        "redis-app",
        profile["sub"].as_str(),
        profile["sid"].as_str(),
    );
    assert_eq!(
        post_logout(&url, &token).await,
        503,
        "a sign-out that cannot be recorded is not a 200"
    );

    redis.up();
    // The same process recovers by itself: the session (kept by Redis) is served again ...
    let mut recovered = false;
    for _ in 0..100 {
        if get_json(&b, &format!("{url}/profile")).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the web app did not recover after Redis came back"
    );
    // ... and the provider's retry of the logout succeeds.
    assert_eq!(post_logout(&url, &token).await, 200);
    assert_eq!(get_json(&b, &format!("{url}/profile")).await.0, 401);
    assert_eq!(get_json(&b, &format!("{url}/todos")).await.0, 401);
    tokio::task::spawn_blocking(move || stop(app))
        .await
        .unwrap();
}

/// Two instances of the sample app as processes on one Redis prefix, with
/// `client_id`'s redirect URI at instance 1. Returns (URL 1, URL 2, processes).
async fn two_processes(idp: &DevIdp, api: &str, what: &str) -> (String, String, Child, Child) {
    let (p1, p2) = (free_port(), free_port());
    let (one, two) = (
        format!("http://127.0.0.1:{p1}"),
        format!("http://127.0.0.1:{p2}"),
    );
    idp.register_client(DevClient::new(
        "redis-app",
        "redis-secret",
        format!("{one}/signin-oidc"),
    ));
    let prefix = format!("{what}-{}", idweb::SessionId::generate().fingerprint());
    let env = shared_env(idp, api, "redis://127.0.0.1:6379", &prefix, true, &one);
    let first = start(env.clone(), p1).await;
    let second = start(env, p2).await;
    (one, two, first, second)
}

/// Reads `resp` (a server-sent-events stream) until its text contains
/// `needle`, or it ends; generous outer limit, no timing asserted.
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, needle: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_closes_when_the_other_instance_handles_a_back_channel_logout() {
    let idp = dev_idp(true).await;
    let api = todo_api(&idp).await;
    let (one, two, first, second) = two_processes(&idp, &api, "sse").await;
    let b = browser();
    let profile = sign_in_at(&b, &one, "alice").await;

    let mut stream = b
        .get(format!("{one}/events"))
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut seen = String::new();
    assert!(
        read_until(&mut stream, &mut seen, "event: ready").await,
        "{seen}"
    );

    // The provider's back-channel logout reaches instance 2 ...
    let token = idp.logout_token_for(
        "redis-app",
        profile["sub"].as_str(),
        profile["sid"].as_str(),
    );
    let sent = std::time::Instant::now();
    assert_eq!(post_logout(&two, &token).await, 200);
    // ... and instance 1's stream says so, then ends.
    assert!(
        read_until(&mut stream, &mut seen, "event: signed-out").await,
        "no signed-out event: {seen}"
    );
    // Reported, not asserted (speed is for benches).
    eprintln!(
        "signed-out event on instance 1 {:?} after the back-channel request to instance 2",
        sent.elapsed()
    );
    assert!(seen.contains("\"path\":\"back_channel\""), "{seen}");
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.chunk().await {
                Ok(Some(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(
        end.ok(),
        Some(true),
        "the stream did not end cleanly: {seen}"
    );
    // A signed-out browser gets no stream.
    let resp = b
        .get(format!("{one}/events"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    tokio::task::spawn_blocking(move || {
        stop(first);
        stop(second);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_todo_copy_is_dropped_on_the_other_instance_at_sign_out() {
    let idp = dev_idp(true).await;
    let api = todo_api(&idp).await;
    let (one, two, first, second) = two_processes(&idp, &api, "todo-copy").await;
    // Alice has two sessions (two browsers).
    let (b1, b2) = (browser(), browser());
    sign_in_at(&b1, &one, "alice").await;
    sign_in_at(&b2, &one, "alice").await;
    assert_eq!(get_json(&b2, &format!("{two}/todos/last")).await.0, 404);
    assert_eq!(get_json(&b2, &format!("{two}/todos")).await.0, 200);
    let (status, copy) = get_json(&b2, &format!("{two}/todos/last")).await;
    assert_eq!(status, 200);
    assert!(copy.is_array(), "{copy}");

    // Her first session signs out at instance 1 ...
    let resp = b1
        .post(format!("{one}/account/signout"))
        .header("origin", one.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // ... and instance 2's hook drops her copy (her second session stays signed in).
    let mut dropped = false;
    for _ in 0..200 {
        if get_json(&b2, &format!("{two}/todos/last")).await.0 == 404 {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped, "instance 2 kept the copy of a signed-out user");
    assert_eq!(get_json(&b2, &format!("{two}/profile")).await.0, 200);

    tokio::task::spawn_blocking(move || {
        stop(first);
        stop(second);
    })
    .await
    .unwrap();
}
