//! An app started from its settings uses the store they name: a user signed
//! in through the dev IdP is found by a second, independent handle on that
//! store (as another instance would open it) — for SQLite and for Redis
//! (127.0.0.1:6379, or `IDWEB_TEST_REDIS_URL`; the test fails when Redis is
//! down, it never skips). `IdWeb::from_env` is run in a child process, with
//! only the variables it is given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use idweb::{PartitionKey, RelyingParty, SessionLookup, Settings, StartError, Store, SystemClock};
use idweb_axum::{BuildError, IdWeb, OpenStoreError};
use idweb_store_redis::RedisStore;
use idweb_store_sqlite::SqliteStore;
use idweb_test_support::idweb_devidp::DevIdp;
use idweb_test_support::{AppOptions, browser, dev_idp, error_chain, sign_in, start_app};

fn db_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("idweb-axum-stores");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "{name}-{}.db",
        idweb::SessionId::generate().fingerprint()
    ))
}

fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn redis_url() -> String {
    std::env::var("IDWEB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Signs alice in to an app whose settings are `store_env` (and no store
/// passed), then checks through `second` (another handle on the same store)
/// that her session and its tokens are there.
async fn signed_in_session_is_in(
    idp: &DevIdp,
    store_env: Vec<(&'static str, String)>,
    second: Arc<dyn Store>,
) {
    let app = start_app(
        idp,
        AppOptions {
            extra_env: store_env,
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();
    let profile = sign_in(&b, &app, "alice").await;
    let sub = profile["sub"].as_str().expect("sub").to_string();
    let sid = profile["sid"].as_str().expect("sid").to_string();

    let ids = second
        .find_sessions(&SessionLookup::BySubject {
            iss: idp.issuer().to_string(),
            sub: sub.clone(),
        })
        .await
        .expect("find_sessions");
    assert_eq!(ids.len(), 1, "the second handle sees the signed-in session");
    let session = second
        .get_session(&ids[0])
        .await
        .expect("get_session")
        .expect("the session");
    assert_eq!(
        (session.sub.as_str(), session.sid.as_deref()),
        (sub.as_str(), Some(sid.as_str()))
    );
    let tokens = second
        .get_partition(&PartitionKey::Session(session.id.clone()))
        .await
        .expect("get_partition")
        .expect("the session's token cache");
    assert!(!tokens.entries.is_empty());
    // The app reads the same store: the session it serves is that one.
    assert_eq!(
        app.store
            .get_session(&session.id)
            .await
            .expect("get")
            .map(|s| s.sub),
        Some(sub)
    );
    second.remove_session(&session.id).await.expect("clean up");
}

#[tokio::test]
async fn an_app_configured_for_sqlite_keeps_sessions_in_that_file() {
    let idp = dev_idp(true).await;
    let path = db_path("app");
    // The file is opened by the app first; the second handle opens it too,
    // as a second process on the machine would.
    let env = vec![("IDWEB_STORE", format!("sqlite://{}", path.display()))];
    let probe = start_app(
        &idp,
        AppOptions {
            extra_env: env.clone(),
            ..AppOptions::default()
        },
    )
    .await;
    assert!(format!("{:?}", probe.store).contains("SqliteStore"));
    drop(probe);
    let second = SqliteStore::open(&path).await.expect("open the file again");
    signed_in_session_is_in(&idp, env, Arc::new(second.clone())).await;
    second.close().await;
    remove_db(&path);
}

#[tokio::test]
async fn an_app_configured_for_redis_keeps_sessions_in_that_redis() {
    let idp = dev_idp(true).await;
    let prefix = format!(
        "idweb-axum-test-{}",
        idweb::SessionId::generate().fingerprint()
    );
    let second = RedisStore::open_with_prefix(&redis_url(), &prefix, Arc::new(SystemClock))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "this test needs Redis at {} (IDWEB_TEST_REDIS_URL): {}",
                redis_url(),
                error_chain(&e)
            )
        });
    signed_in_session_is_in(
        &idp,
        vec![("IDWEB_STORE", redis_url()), ("IDWEB_STORE_PREFIX", prefix)],
        Arc::new(second),
    )
    .await;
}

fn settings(idp: &DevIdp, store: &str) -> Settings {
    Settings::from_sources(
        None,
        [
            ("IDWEB_AUTHORITY", idp.issuer().to_string()),
            ("IDWEB_CLIENT_ID", "app".into()),
            ("IDWEB_CLIENT_SECRET", "secret".into()),
            ("IDWEB_PUBLIC_URL", "http://127.0.0.1:5000".into()),
            ("IDWEB_STORE", store.into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("settings")
}

#[tokio::test]
async fn the_relying_party_alone_starts_on_memory_and_refuses_other_stores() {
    let idp = dev_idp(true).await;
    let rp = RelyingParty::builder(settings(&idp, "memory"))
        .build()
        .await
        .expect("memory needs no store");
    assert!(format!("{:?}", rp.store()).starts_with("MemoryStore"));
    for store in ["sqlite://idweb.db", "redis://127.0.0.1:6379"] {
        let e = RelyingParty::builder(settings(&idp, store))
            .build()
            .await
            .expect_err(store);
        assert!(matches!(e, StartError::StoreNotOpened { .. }), "{e:?}");
        assert!(e.to_string().contains("IDWEB_STORE"), "{e}");
    }
    assert!(!std::path::Path::new("idweb.db").exists());
}

#[tokio::test]
async fn the_builder_opens_the_store_before_contacting_the_provider() {
    // No provider listens at :9; the store's error comes first.
    let mut s = settings(&dev_idp(true).await, "cassandra://u:hunter2@db");
    s.authority = "http://127.0.0.1:9".parse().unwrap();
    let e = IdWeb::builder(s).build().await.expect_err("unknown store");
    assert!(
        matches!(&e, BuildError::Store(OpenStoreError::UnsupportedScheme { scheme }) if scheme == "cassandra"),
        "{e:?}"
    );
    assert!(!format!("{} {e:?}", error_chain(&e)).contains("hunter2"));
    // A store given explicitly wins over the settings.
    let idp = dev_idp(true).await;
    let given: Arc<dyn Store> = Arc::new(idweb::MemoryStore::new());
    let idweb = IdWeb::builder(settings(&idp, "cassandra://db"))
        .with_store(given.clone())
        .build()
        .await
        .expect("the given store");
    assert!(Arc::ptr_eq(idweb.relying_party().store(), &given));
}

/// The variable that makes this test binary the child that runs `from_env`.
const CHILD: &str = "IDWEB_TEST_FROM_ENV_CHILD";

/// Runs this test in a child process with `env` only; returns its success
/// and its output. (On a blocking thread: this runtime serves the dev IdP.)
async fn run_child(env: Vec<(&'static str, String)>) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "from_env_opens_the_store_the_variables_name",
                "--nocapture",
            ])
            .env_clear()
            .env(CHILD, "1")
            .envs(env)
            .output()
            .expect("run the child")
    })
    .await
    .expect("join");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn from_env_opens_the_store_the_variables_name() {
    if std::env::var_os(CHILD).is_some() {
        // The child: start as an app's main would, and leave a session in
        // the store; the parent looks for it.
        let idweb = match IdWeb::from_env().await {
            Ok(idweb) => idweb,
            Err(e) => panic!("FROM_ENV_FAILED: {}", error_chain(&e)),
        };
        let now = idweb::unix_seconds(std::time::SystemTime::now());
        let session = idweb::Session::new(
            idweb.relying_party().provider().issuer(),
            "from-env",
            Some("sid-from-env".into()),
            idweb::Secret::new("header.payload.sig"),
            now,
            now + 3600,
        );
        idweb
            .relying_party()
            .store()
            .put_session(&session)
            .await
            .expect("put");
        return;
    }
    let idp = dev_idp(true).await;
    let path = db_path("from-env");
    let base = |store: String| {
        vec![
            ("IDWEB_AUTHORITY", idp.issuer().to_string()),
            ("IDWEB_CLIENT_ID", "app".to_string()),
            ("IDWEB_CLIENT_SECRET", "secret".to_string()),
            ("IDWEB_PUBLIC_URL", "http://127.0.0.1:5000".to_string()),
            ("IDWEB_STORE", store),
        ]
    };
    let (ok, output) = run_child(base(format!("sqlite://{}", path.display()))).await;
    assert!(ok, "{output}");
    let store = SqliteStore::open(&path)
        .await
        .expect("the file from_env created");
    let ids = store
        .find_sessions(&SessionLookup::ByProviderSession {
            iss: idp.issuer().to_string(),
            sid: "sid-from-env".into(),
        })
        .await
        .expect("find");
    assert_eq!(ids.len(), 1, "the child's session is in the file");
    store.close().await;
    remove_db(&path);

    // A bad store, or a missing setting, stops it with the typed error's message.
    let mut env = base("sqlite://x.db".into());
    env.push(("IDWEB_STORE_PREFIX", "app-a".into()));
    let (ok, output) = run_child(env).await;
    assert!(!ok && output.contains("FROM_ENV_FAILED"), "{output}");
    assert!(
        output.contains("cannot open the store named by IDWEB_STORE")
            && output.contains("IDWEB_STORE_PREFIX"),
        "{output}"
    );
    assert!(
        !std::path::Path::new("x.db").exists(),
        "refused before opening"
    );
    let (ok, output) = run_child(base("memory".into()).split_off(1)).await;
    assert!(
        !ok && output.contains("invalid idweb settings") && output.contains("IDWEB_AUTHORITY"),
        "{output}"
    );
}
