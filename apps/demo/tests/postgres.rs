//! Many instances on PostgreSQL, as processes: a sign-out reaching one
//! instance takes effect on the other at once, and connections killed or
//! refused mid-run give clear 503s — never a stale token, never a 200 for a
//! sign-out that was not recorded — and the same process recovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Child;
use std::time::Duration;

use common::{
    DropSchema, TestDatabase, postgres_admin, postgres_url, postgres_url_of, start_webapp, stop,
};
use idweb_demo::todo_api::{self, TodoApiConfig};
use idweb_test_support::idweb_devidp::{DevClient, DevIdp};
use idweb_test_support::{browser, dev_idp, sign_in_at};
use reqwest::header::ACCEPT;
use tokio::net::TcpListener;

const TODO_SCOPES: &str = "api://todo/todos.read api://todo/todos.write";
const COOKIE_KEY: &str = "c2hhcmVkLWJ5LXR3by1wcm9jZXNzZXMtc2hhcmVkLWJ5LXR3by1wcm9jZXNzZXMtc2hhcmVkLWJ5LXR3by1wcm9jZXNzZXMh";
const CACHE_KEYS: &str = "p1:cG9zdGdyZXMtdGVzdHMtY2FjaGUta2V5LW9mLTMyYnk=";

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

/// The settings both instances share; `public` is the URL users reach.
fn shared_env(
    idp: &DevIdp,
    api: &str,
    store: &str,
    schema: &str,
    public: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("IDWEB_AUTHORITY", idp.issuer().to_string()),
        ("IDWEB_CLIENT_ID", "pg-app".to_string()),
        ("IDWEB_CLIENT_SECRET", "pg-secret".to_string()),
        ("IDWEB_PUBLIC_URL", public.to_string()),
        (
            "IDWEB_SCOPES",
            format!("openid profile offline_access {TODO_SCOPES}"),
        ),
        ("IDWEB_STORE", store.to_string()),
        ("IDWEB_STORE_SCHEMA", schema.to_string()),
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

fn unique_schema(what: &str) -> String {
    format!(
        "idweb_test_{what}_{}",
        idweb::SessionId::generate().fingerprint()
    )
}

/// Listening connections (the in-process cache's and the sign-out bus's)
/// of the stores in `schema`.
async fn listeners(schema: &str) -> i64 {
    postgres_admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("idweb listener {schema}")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_takes_effect_on_the_other_with_l1() {
    sign_out_on_one_instance_takes_effect_on_the_other(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_takes_effect_on_the_other_without_l1() {
    sign_out_on_one_instance_takes_effect_on_the_other(false).await;
}

/// Two processes on one schema, with the in-process cache on (the default)
/// or off: a back-channel logout handled by one makes the other refuse the
/// session and every token on its very next requests.
async fn sign_out_on_one_instance_takes_effect_on_the_other(l1: bool) {
    let idp = dev_idp(true).await;
    let api = todo_api(&idp).await;
    let (p1, p2) = (free_port(), free_port());
    let (one, two) = (
        format!("http://127.0.0.1:{p1}"),
        format!("http://127.0.0.1:{p2}"),
    );
    idp.register_client(DevClient::new(
        "pg-app",
        "pg-secret",
        format!("{one}/signin-oidc"),
    ));
    let schema = unique_schema("procs");
    let _drop = DropSchema(schema.clone());
    let mut env = shared_env(&idp, &api, &postgres_url(), &schema, &one);
    env.push(("IDWEB_STORE_L1", l1.to_string()));
    let first = start(env.clone(), p1).await;
    let second = start(env, p2).await;
    // Each process listens for sign-out events; with L1, its cache too.
    let expected = if l1 { 4 } else { 2 };
    assert_eq!(listeners(&schema).await, expected, "listening connections");

    let b = browser();
    let profile = sign_in_at(&b, &one, "alice").await;
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
    let rows: i64 = postgres_admin()
        .await
        .query_one(&format!("SELECT count(*) FROM {schema}.entries"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(rows >= 2, "the tokens are rows in PostgreSQL ({rows})");

    // The provider's back-channel logout reaches instance 2 ...
    let token = idp.logout_token_for("pg-app", profile["sub"].as_str(), profile["sid"].as_str());
    assert_eq!(post_logout(&two, &token).await, 200);
    // ... and instance 1 refuses the session and every token on the very next requests.
    let (status, body) = get_json(&b, &format!("{one}/todos")).await;
    assert_eq!(status, 401, "instance 1 still served tokens: {body}");
    assert_eq!(get_json(&b, &format!("{one}/profile")).await.0, 401);
    assert_eq!(get_json(&b, &format!("{one}/cache")).await.0, 401);
    let admin = postgres_admin().await;
    for table in ["sessions", "partitions", "entries"] {
        let n: i64 = admin
            .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} left after the sign-out");
    }

    tokio::task::spawn_blocking(move || {
        stop(first);
        stop(second);
    })
    .await
    .unwrap();
}

/// Kills every backend of the database; returns how many.
async fn kill_connections(db: &str) -> i64 {
    postgres_admin()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_refused_connections_give_503s_and_the_same_process_recovers() {
    let idp = dev_idp(true).await;
    let api = todo_api(&idp).await;
    let db = TestDatabase::create("outage").await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    idp.register_client(DevClient::new(
        "pg-app",
        "pg-secret",
        format!("{url}/signin-oidc"),
    ));
    let env = shared_env(&idp, &api, &postgres_url_of(&db.0), "idweb", &url);
    let app = start(env, port).await;
    let b = browser();
    let profile = sign_in_at(&b, &url, "alice").await;
    assert_eq!(get_json(&b, &format!("{url}/todos")).await.0, 200);

    // Connections killed mid-run: each request answers 200 or a clear 503,
    // nothing else, and the process is back to 200s at once.
    let killed = kill_connections(&db.0).await;
    assert!(killed >= 1);
    let mut statuses = Vec::new();
    for path in [
        "/profile", "/todos", "/cache", "/profile", "/todos", "/profile",
    ] {
        let (status, body) = get_json(&b, &format!("{url}{path}")).await;
        assert!(
            status == 200 || (status == 503 && body["error"] == "store_unavailable"),
            "{path} after the kill: {status} {body}"
        );
        statuses.push(status);
    }
    println!("after killing {killed} connections: {statuses:?}");
    assert_eq!(get_json(&b, &format!("{url}/profile")).await.0, 200);

    // The database refuses connections and every connection is killed.
    let admin = postgres_admin().await;
    admin
        .batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.0))
        .await
        .unwrap();
    kill_connections(&db.0).await;
    for path in ["/profile", "/todos", "/cache"] {
        let (status, body) = get_json(&b, &format!("{url}{path}")).await;
        assert_eq!(status, 503, "{path} while PostgreSQL refuses: {body}");
        assert_eq!(
            body["error"], "store_unavailable",
            "{path}: a clear message"
        );
    }
    let token = idp.logout_token_for("pg-app", profile["sub"].as_str(), profile["sid"].as_str());
    assert_eq!(
        post_logout(&url, &token).await,
        503,
        "a sign-out that cannot be recorded is not a 200"
    );

    admin
        .batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.0))
        .await
        .unwrap();
    // The same process recovers by itself: the session is served again ...
    let mut recovered = false;
    for _ in 0..50 {
        if get_json(&b, &format!("{url}/profile")).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the web app did not recover after PostgreSQL came back"
    );
    // ... and the provider's retry of the logout succeeds.
    assert_eq!(post_logout(&url, &token).await, 200);
    assert_eq!(get_json(&b, &format!("{url}/profile")).await.0, 401);
    assert_eq!(get_json(&b, &format!("{url}/todos")).await.0, 401);
    tokio::task::spawn_blocking(move || stop(app))
        .await
        .unwrap();
}
