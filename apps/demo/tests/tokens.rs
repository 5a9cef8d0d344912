//! Token acquisition over real HTTP: the sample web app calls the sample todo
//! API with tokens from sign-in, refreshes them once when they expire, and
//! sends the user back to sign-in when the refresh token is revoked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use idweb::{ManualClock, PartitionKey, msal::EntryKind};
use idweb_demo::todo_api::{self, TodoApiConfig};
use idweb_test_support::idweb_devidp::DevIdp;
use idweb_test_support::{
    AppOptions, TestApp, browser, dev_idp, follow_until, get_page, location, sign_in, start_app,
};
use reqwest::header::ACCEPT;
use tokio::net::TcpListener;

const TODO_SCOPES: &str = "api://todo/todos.read api://todo/todos.write";

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

/// Settings that give the sample web app the todo API: its scopes at sign-in
/// and the downstream API named `todo` at `api`.
fn todo_env(api: String) -> Vec<(&'static str, String)> {
    vec![
        (
            "IDWEB_SCOPES",
            format!("openid profile offline_access {TODO_SCOPES}"),
        ),
        ("IDWEB_DOWNSTREAM__TODO__BASE_URL", api),
        ("IDWEB_DOWNSTREAM__TODO__SCOPES", TODO_SCOPES.to_string()),
    ]
}

/// Sends one JSON `GET` per URL at once; asserts that every one answers 200.
async fn all_answer_200(b: &reqwest::Client, urls: Vec<String>) {
    let mut tasks = Vec::new();
    for url in urls {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.get(url)
                .header(ACCEPT, "application/json")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}

fn demo_routes(idweb: &idweb_axum::IdWeb) -> axum::Router {
    idweb_demo::webapp::router(idweb, "test app")
}

async fn demo_app(idp: &DevIdp, clock: Arc<ManualClock>) -> TestApp {
    let api = todo_api(idp).await;
    start_app(
        idp,
        AppOptions {
            clock,
            extra_env: todo_env(api),
            routes: Some(demo_routes),
            ..AppOptions::default()
        },
    )
    .await
}

async fn todos(b: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    b.get(app.at("/todos"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

/// The refresh token stored in the app's only session partition.
async fn stored_refresh_token(app: &TestApp) -> String {
    let sessions = app.store.list_sessions(None, 10).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let cache = app.idweb.relying_party().token_cache();
    let part = cache
        .read(&PartitionKey::Session(sessions[0].id.clone()))
        .await
        .unwrap();
    part.entries
        .iter()
        .find(|e| e.kind() == EntryKind::RefreshToken)
        .and_then(|e| e.secret())
        .expect("a refresh token is cached")
        .to_string()
}

/// Moves the app's clock and the IdP's clock together.
fn advance(clock: &ManualClock, idp: &DevIdp, total_offset: i64) {
    clock.advance(Duration::from_secs(3600));
    idp.set_clock_offset(total_offset);
}

#[tokio::test]
async fn todos_use_the_sign_in_token_then_refresh_once_when_it_expires() {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = demo_app(&idp, clock.clone()).await;
    let b = browser();
    sign_in(&b, &app, "alice").await;

    let resp = todos(&b, &app).await;
    assert_eq!(resp.status(), 200);
    let items: Vec<serde_json::Value> = resp.json().await.unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        idp.stats().refresh_token,
        0,
        "the token from code redemption was used"
    );
    let rt1 = stored_refresh_token(&app).await;

    advance(&clock, &idp, 3600);
    assert_eq!(todos(&b, &app).await.status(), 200);
    assert_eq!(
        idp.stats().refresh_token,
        1,
        "expired access token → one refresh"
    );
    let rt2 = stored_refresh_token(&app).await;
    assert_ne!(rt1, rt2, "the rotated refresh token is stored");
    assert_eq!(todos(&b, &app).await.status(), 200);
    assert_eq!(
        idp.stats().refresh_token,
        1,
        "the refreshed token is cached"
    );

    // The cache page lists entries without secrets.
    let page = get_page(&b, &app.at("/cache")).await.text().await.unwrap();
    assert!(
        page.contains("AccessToken")
            && page.contains("RefreshToken")
            && page.contains("api://todo/todos.read")
    );
    assert!(!page.contains(&rt2), "no secret on the cache page");
}

#[tokio::test]
async fn fifty_concurrent_requests_with_an_expired_token_cause_one_refresh() {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = demo_app(&idp, clock.clone()).await;
    let b = browser();
    sign_in(&b, &app, "bob").await;
    advance(&clock, &idp, 3600);
    all_answer_200(&b, vec![app.at("/todos"); 50]).await;
    assert_eq!(
        idp.stats().refresh_token,
        1,
        "exactly one refresh at the IdP"
    );
}

#[tokio::test]
async fn revoked_refresh_token_sends_the_user_back_to_sign_in_then_todos_work_again() {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = demo_app(&idp, clock.clone()).await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    advance(&clock, &idp, 3600);
    idp.revoke_refresh_tokens("alice");

    // JSON clients learn where to go.
    let resp = todos(&b, &app).await;
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "interaction_required");

    // Browsers are sent to sign in, asking for the API's scopes, and come back.
    let resp = get_page(&b, &app.at("/todos")).await;
    assert_eq!(resp.status(), 302);
    let signin = location(&resp);
    assert!(
        signin.starts_with(&app.at("/account/signin?returnUrl=%2Ftodos&scope=api")),
        "{signin}"
    );
    let callback = follow_until(&b, &signin, &app.at("/signin-oidc")).await;
    let resp = get_page(&b, &callback).await;
    assert_eq!(location(&resp), app.at("/todos"));
    let resp = todos(&b, &app).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.store.session_count().await.unwrap(),
        1,
        "the new sign-in replaced the old session"
    );
}

#[tokio::test]
async fn the_sqlite_file_holds_no_token_in_clear() {
    let idp = dev_idp(true).await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("webapp.sqlite");
    let _ = std::fs::remove_file(&db);
    let store = idweb_store_sqlite::SqliteStore::open(&db).await.unwrap();
    let api = todo_api(&idp).await;
    let app = start_app(
        &idp,
        AppOptions {
            extra_env: todo_env(api),
            store: Some(Arc::new(store.clone())),
            routes: Some(demo_routes),
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    assert_eq!(todos(&b, &app).await.status(), 200);

    let sessions = app.store.list_sessions(None, 10).await.unwrap();
    let rp = app.idweb.relying_party();
    let session = rp.session(&sessions[0].id).await.unwrap().unwrap();
    let part = rp
        .token_cache()
        .read(&PartitionKey::Session(session.id.clone()))
        .await
        .unwrap();
    let mut secrets: Vec<String> = part
        .entries
        .iter()
        .filter_map(|e| e.secret().map(str::to_string))
        .collect();
    assert_eq!(secrets.len(), 3, "access, refresh and ID token are cached");
    secrets.push(session.id_token.secret().to_string());
    store.close().await;

    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(format!("{}{suffix}", db.display())) {
            bytes.extend(b);
        }
    }
    assert!(bytes.len() > 4096, "the database was written");
    for secret in &secrets {
        // Any 24-byte piece of a token would betray it; check every window of the token.
        let s = secret.as_bytes();
        for w in s.windows(24).step_by(8) {
            assert!(
                !bytes.windows(w.len()).any(|x| x == w),
                "a piece of a token is stored in clear"
            );
        }
    }
}

/// A stand-in API that answers every call with a claims challenge, as
/// Microsoft Entra's continuous access evaluation does.
async fn challenging_api() -> String {
    use base64::Engine;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let claims = base64::engine::general_purpose::STANDARD
        .encode(r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#);
    let app = axum::Router::new().fallback(move || {
        let claims = claims.clone();
        async move {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    format!(
                        "Bearer realm=\"\", error=\"insufficient_claims\", claims=\"{claims}\""
                    ),
                )],
            )
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test]
async fn a_claims_challenge_from_the_api_becomes_a_sign_in_asking_for_those_claims() {
    let idp = dev_idp(true).await;
    let api = challenging_api().await;
    let app = start_app(
        &idp,
        AppOptions {
            extra_env: todo_env(api),
            routes: Some(demo_routes),
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    let resp = get_page(&b, &app.at("/todos")).await;
    assert_eq!(resp.status(), 302);
    let signin = url::Url::parse(&location(&resp)).unwrap();
    let q: std::collections::HashMap<String, String> = signin.query_pairs().into_owned().collect();
    assert_eq!(q["returnUrl"], "/todos");
    assert_eq!(q["scope"], TODO_SCOPES);
    assert_eq!(
        q["claims"],
        r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#
    );
    // The sign-in passes the claims on to the provider.
    let resp = get_page(&b, signin.as_str()).await;
    let authorize = url::Url::parse(&location(&resp)).unwrap();
    let claims = authorize
        .query_pairs()
        .find(|(k, _)| k == "claims")
        .map(|(_, v)| v.to_string());
    assert_eq!(claims.as_deref(), Some(q["claims"].as_str()));
}

#[tokio::test]
async fn app_tokens_come_from_client_credentials_and_are_cached() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let rp = app.idweb.relying_party();
    let first = rp.token_for_app(&["api://todo/todos.read"]).await.unwrap();
    let second = rp.token_for_app(&["api://todo/todos.read"]).await.unwrap();
    assert_eq!(first.secret.secret(), second.secret.secret());
    assert_eq!(
        idp.stats().client_credentials,
        1,
        "the second call was served from the cache"
    );
    assert!(first.scopes.contains(&"api://todo/todos.read".to_string()));
    let stats = app.store.stats().await.unwrap();
    assert_eq!(
        stats.partitions, 1,
        "app tokens live in a partition of their own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_sqlite_file_refresh_once_for_a_hundred_requests() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("instances-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("shared.sqlite");
    let _ = std::fs::remove_file(&db);
    two_instances_refresh_once(Shared::Sqlite(db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_redis_refresh_once_for_a_hundred_requests() {
    let prefix = format!("instances-{}", idweb::SessionId::generate().fingerprint());
    two_instances_refresh_once(Shared::Redis(prefix)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_refresh_once_for_a_hundred_requests() {
    let schema = format!(
        "idweb_test_instances_{}",
        idweb::SessionId::generate().fingerprint()
    );
    let _drop = common::DropSchema(schema.clone());
    two_instances_refresh_once(Shared::Postgres(schema)).await;
}

/// A store shared by two instances of one app.
#[derive(Clone)]
enum Shared {
    Sqlite(std::path::PathBuf),
    Redis(String),
    /// A schema on the PostgreSQL at 127.0.0.1:5432 (each instance its own pool).
    Postgres(String),
}

impl Shared {
    async fn open(&self, clock: Arc<ManualClock>) -> Arc<dyn idweb::Store> {
        match self {
            Shared::Sqlite(db) => Arc::new(
                idweb_store_sqlite::SqliteStore::open_with_clock(db, clock)
                    .await
                    .unwrap(),
            ),
            Shared::Redis(prefix) => {
                let redis = idweb_store_redis::RedisStore::open_with_prefix(
                    "redis://127.0.0.1:6379",
                    prefix,
                    clock,
                )
                .await
                .expect("the Redis at 127.0.0.1:6379 must be running");
                let l1 = idweb_store_redis::CachingStore::new(redis).unwrap();
                assert!(
                    l1.wait_until_active(Duration::from_secs(5)).await,
                    "the L1 subscription is live"
                );
                Arc::new(l1)
            }
            Shared::Postgres(schema) => Arc::new(
                idweb_store_postgres::PostgresConfig::parse(&common::postgres_url())
                    .unwrap()
                    .with_schema(schema)
                    .unwrap()
                    .open(clock)
                    .await
                    .expect("the PostgreSQL at 127.0.0.1:5432 must be running"),
            ),
        }
    }
}

async fn two_instances_refresh_once(shared: Shared) {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let api = todo_api(&idp).await;
    let mut shared_env = todo_env(api);
    shared_env.extend([
        ("IDWEB_COOKIE_KEY", "c2hhcmVkLWJ5LWJvdGgtaW5zdGFuY2VzLXNoYXJlZC1ieS1ib3RoLWluc3RhbmNlcy1zaGFyZWQtYnktYm90aCE=".to_string()),
        ("IDWEB_CACHE_KEYS", "s1:c2hhcmVkLWNhY2hlLWtleS1mb3ItYm90aC1pbnN0YW4=".to_string()),
    ]);
    let instance = |register: bool| {
        let (env, clock, shared) = (shared_env.clone(), clock.clone(), shared.clone());
        let idp = idp.clone();
        async move {
            let store = shared.open(clock.clone()).await;
            start_app(
                &idp,
                AppOptions {
                    client_id: "shared-app".into(),
                    client_secret: Some("shared-secret".into()),
                    register,
                    clock,
                    extra_env: env,
                    store: Some(store),
                    routes: Some(demo_routes),
                    ..AppOptions::default()
                },
            )
            .await
        }
    };
    let one = instance(true).await;
    let b = browser();
    sign_in(&b, &one, "alice").await;
    let two = instance(false).await;
    assert_eq!(
        todos(&b, &two).await.status(),
        200,
        "instance 2 reads instance 1's session and tokens"
    );
    assert_eq!(idp.stats().refresh_token, 0);

    advance(&clock, &idp, 3600);
    // Spread over both instances.
    let urls = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                one.at("/todos")
            } else {
                two.at("/todos")
            }
        })
        .collect();
    all_answer_200(&b, urls).await;
    assert_eq!(
        idp.stats().refresh_token,
        1,
        "one refresh at the IdP for 100 requests on two instances"
    );
}
