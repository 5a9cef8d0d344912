//! The sample web app as a process on the SQLite store: after a restart the
//! user is still signed in and `/todos` is served with the cached token,
//! without any call to the identity provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_webapp, stop};

use idweb_demo::todo_api::{self, TodoApiConfig};
use idweb_test_support::idweb_devidp::{DevClient, subject_for};
use idweb_test_support::{browser_across_restarts, dev_idp, profile_json_at, sign_in_at};
use reqwest::header::ACCEPT;
use tokio::net::TcpListener;

const TODO_SCOPES: &str = "api://todo/todos.read api://todo/todos.write";
const COOKIE_KEY: &str = "Zm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHktZm9yLXRlc3RzLW9ubHkt";
const CACHE_KEYS: &str = "t1:dGhpcnR5LXR3by1ieXRlcy1mb3ItdGVzdHMtb25seSE=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_user_signed_in_and_serves_todos_from_the_cache() {
    let idp = dev_idp(true).await;
    let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", api_listener.local_addr().unwrap());
    let api_app = todo_api::router(TodoApiConfig::new(idp.issuer()))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(api_listener, api_app).await;
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    idp.register_client(DevClient::new(
        "restart-app",
        "restart-secret",
        format!("{base}/signin-oidc"),
    ));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("webapp.sqlite");
    let _ = std::fs::remove_file(&db);
    let env = [
        ("IDWEB_AUTHORITY", idp.issuer().to_string()),
        ("IDWEB_CLIENT_ID", "restart-app".to_string()),
        ("IDWEB_CLIENT_SECRET", "restart-secret".to_string()),
        ("IDWEB_PUBLIC_URL", base.clone()),
        ("IDWEB_LISTEN", format!("127.0.0.1:{port}")),
        (
            "IDWEB_SCOPES",
            format!("openid profile offline_access {TODO_SCOPES}"),
        ),
        ("IDWEB_STORE", format!("sqlite://{}", db.display())),
        ("IDWEB_COOKIE_KEY", COOKIE_KEY.to_string()),
        ("IDWEB_CACHE_KEYS", CACHE_KEYS.to_string()),
        ("IDWEB_DOWNSTREAM__TODO__BASE_URL", api),
        ("IDWEB_DOWNSTREAM__TODO__SCOPES", TODO_SCOPES.to_string()),
    ];

    let env2 = env.clone();
    let first = tokio::task::spawn_blocking(move || start_webapp(&env2))
        .await
        .unwrap();
    let b = browser_across_restarts();
    let profile = sign_in_at(&b, &base, "alice").await;
    assert_eq!(profile["sub"], subject_for("alice"));
    let todos = b
        .get(format!("{base}/todos"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(todos.status(), 200);
    tokio::task::spawn_blocking(move || stop(first))
        .await
        .unwrap();
    let before = idp.stats();
    assert_eq!((before.authorization_code, before.refresh_token), (1, 0));

    let second = tokio::task::spawn_blocking(move || start_webapp(&env))
        .await
        .unwrap();
    let profile = profile_json_at(&b, &base)
        .await
        .expect("still signed in after the restart");
    assert_eq!(profile["sub"], subject_for("alice"));
    let todos = b
        .get(format!("{base}/todos"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(todos.status(), 200);
    let items: Vec<serde_json::Value> = todos.json().await.unwrap();
    assert_eq!(items.len(), 2);
    tokio::task::spawn_blocking(move || stop(second))
        .await
        .unwrap();
    let after = idp.stats();
    assert_eq!(
        after, before,
        "no call to the identity provider after the restart"
    );
}
