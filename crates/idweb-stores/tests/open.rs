//! `idweb_stores::open` on each scheme, for real: a SQLite file, the Redis
//! at 127.0.0.1:6379 (`IDWEB_TEST_REDIS_URL` for another), the PostgreSQL
//! at 127.0.0.1:5432 (`IDWEB_TEST_POSTGRES_URL` for another); the tests
//! fail, never skip, when one is down. Each test asserts what the build's features
//! promise: the store opens when its feature is on, and
//! `OpenStoreError::FeatureDisabled` when it is off (`scripts/test` runs
//! this file with each feature left out too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error as _;
use std::sync::Arc;

use idweb::{Clock, SessionId, Store, StoreUrl, SystemClock};
use idweb_store_conformance::sample_session;
use idweb_stores::{OpenStoreError, open};

const PASSWORD: &str = "hunter2";

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn url(url: &str, options: &[(&str, &str)]) -> StoreUrl {
    options
        .iter()
        .fold(StoreUrl::parse(url).unwrap(), |u, (name, value)| {
            u.with_option(name, *value).unwrap()
        })
}

/// The error, its causes and its `Debug`, for "shows no password" checks.
fn everything_shown(e: &OpenStoreError) -> String {
    let mut out = format!("{e} / {e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(" / {s} / {s:?}"));
        source = s.source();
    }
    out
}

fn unique(what: &str) -> String {
    format!("{what}-{}", SessionId::generate().fingerprint())
}

/// A session that the second handle must find.
async fn put_one(store: &Arc<dyn Store>) -> idweb::Session {
    let s = sample_session(
        "https://iss.example",
        &unique("sub"),
        None,
        clock().unix_now(),
    );
    store.put_session(&s).await.expect("put_session");
    s
}

#[tokio::test]
async fn memory_opens_a_private_store_and_takes_no_option() {
    let store = open(&StoreUrl::memory(), clock()).await.expect("memory");
    assert!(format!("{store:?}").starts_with("MemoryStore"), "{store:?}");
    let s = put_one(&store).await;
    assert_eq!(store.get_session(&s.id).await.unwrap(), Some(s.clone()));
    // Two opens are two stores: memory is private to its handle.
    let other = open(&StoreUrl::memory(), clock()).await.expect("memory");
    assert_eq!(other.get_session(&s.id).await.unwrap(), None);

    let with_option = StoreUrl::memory().with_option("prefix", "x").unwrap();
    let e = open(&with_option, clock()).await.expect_err("an option");
    assert!(
        matches!(&e, OpenStoreError::Invalid { scheme, .. } if scheme == "memory"),
        "{e:?}"
    );
    assert!(everything_shown(&e).contains("IDWEB_STORE_PREFIX"), "{e:?}");
}

#[tokio::test]
async fn unknown_schemes_are_refused_by_name_without_credentials() {
    for (store, scheme) in [
        ("mongodb://admin:hunter2@db.internal/idweb", "mongodb"),
        ("cockroach://idweb:hunter2@db.internal/idweb", "cockroach"),
        ("unix:///run/redis.sock", "unix"),
    ] {
        let e = open(&url(store, &[]), clock()).await.expect_err(store);
        assert!(
            matches!(&e, OpenStoreError::UnsupportedScheme { scheme: s } if s == scheme),
            "{e:?}"
        );
        let shown = everything_shown(&e);
        assert!(
            shown.contains("IDWEB_STORE") && shown.contains("memory"),
            "{shown}"
        );
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

#[tokio::test]
async fn sqlite_opens_the_named_file() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("idweb-stores");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", unique("open")));
    let store_url = url(&format!("sqlite://{}", path.display()), &[]);
    let result = open(&store_url, clock()).await;
    if !cfg!(feature = "sqlite") {
        let e = result.expect_err("the sqlite feature is off");
        assert!(
            matches!(&e, OpenStoreError::FeatureDisabled { scheme, feature: "sqlite" } if scheme == "sqlite"),
            "{e:?}"
        );
        assert!(e.to_string().contains("`sqlite` feature"), "{e}");
        assert!(!path.exists());
        return;
    }
    let store = result.expect("open sqlite");
    assert!(format!("{store:?}").starts_with("SqliteStore"), "{store:?}");
    let s = put_one(&store).await;
    // A second handle on the file, as another process would open it.
    let second = open(&store_url, clock()).await.expect("open again");
    assert_eq!(second.get_session(&s.id).await.unwrap(), Some(s));
    drop((store, second));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    // The SQLite crate judges its URL and options, before touching a file.
    for (bad, what) in [
        (url("sqlite://", &[]), "names no file"),
        (url("sqlite://:memory:", &[]), "in-memory"),
        (
            url("sqlite://x.db", &[("prefix", "a")]),
            "IDWEB_STORE_PREFIX",
        ),
    ] {
        let e = open(&bad, clock()).await.expect_err(what);
        assert!(
            matches!(&e, OpenStoreError::Invalid { scheme, .. } if scheme == "sqlite"),
            "{e:?}"
        );
        assert!(everything_shown(&e).contains(what), "{e:?}");
    }
    assert!(!std::path::Path::new("x.db").exists());
}

/// The shared Redis the tests use.
fn redis_url() -> String {
    std::env::var("IDWEB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn redis_opens_under_its_prefix_with_l1_by_default() {
    let prefix = unique("idweb-stores-test");
    let with_l1 = url(&redis_url(), &[("prefix", &prefix)]);
    let result = open(&with_l1, clock()).await;
    if !cfg!(feature = "redis") {
        let e = result.expect_err("the redis feature is off");
        assert!(
            matches!(
                &e,
                OpenStoreError::FeatureDisabled {
                    feature: "redis",
                    ..
                }
            ),
            "{e:?}"
        );
        return;
    }
    let store = result.unwrap_or_else(|e| {
        panic!(
            "this test needs Redis at {} (IDWEB_TEST_REDIS_URL): {}",
            redis_url(),
            everything_shown(&e)
        )
    });
    let shown = format!("{store:?}");
    assert!(
        shown.starts_with("CachingStore") && shown.contains(&prefix),
        "{shown}"
    );
    let s = put_one(&store).await;

    // A second handle, without L1, under the same prefix sees the session;
    // one under another prefix does not.
    let plain = open(
        &url(&redis_url(), &[("prefix", &prefix), ("l1", "false")]),
        clock(),
    )
    .await
    .expect("open without l1");
    assert!(format!("{plain:?}").starts_with("RedisStore"), "{plain:?}");
    assert_eq!(plain.get_session(&s.id).await.unwrap(), Some(s.clone()));
    let elsewhere = open(
        &url(
            &redis_url(),
            &[("prefix", &unique("idweb-stores-other")), ("l1", "false")],
        ),
        clock(),
    )
    .await
    .expect("open another prefix");
    assert_eq!(elsewhere.get_session(&s.id).await.unwrap(), None);
    plain.remove_session(&s.id).await.unwrap();
}

#[tokio::test]
async fn redis_refuses_bad_options_and_hides_the_password() {
    if !cfg!(feature = "redis") {
        let e = open(&url("redis://127.0.0.1:1", &[]), clock())
            .await
            .expect_err("the redis feature is off");
        assert!(
            matches!(
                &e,
                OpenStoreError::FeatureDisabled {
                    feature: "redis",
                    ..
                }
            ),
            "{e:?}"
        );
        return;
    }
    for (options, what) in [
        (&[("prefix", "a{b}")][..], "IDWEB_STORE_PREFIX"),
        (&[("l1", "maybe")][..], "IDWEB_STORE_L1"),
        (&[("prefx", "a")][..], "IDWEB_STORE_PREFX"),
    ] {
        let e = open(&url("redis://:hunter2@127.0.0.1:6379", options), clock())
            .await
            .expect_err(what);
        assert!(
            matches!(&e, OpenStoreError::Invalid { scheme, .. } if scheme == "redis"),
            "{e:?}"
        );
        let shown = everything_shown(&e);
        assert!(shown.contains(what) && !shown.contains(PASSWORD), "{shown}");
    }
    // Nothing listens on port 1: the failure to connect keeps its cause and
    // shows no password either.
    for store in [
        "redis://:hunter2@127.0.0.1:1",
        "redis://idweb:hunter2@127.0.0.1:1/0",
        "redis+cluster://idweb:hunter2@127.0.0.1:1,127.0.0.1:2",
    ] {
        let e = open(&url(store, &[]), clock()).await.expect_err(store);
        assert!(matches!(&e, OpenStoreError::Open { .. }), "{e:?}");
        assert!(e.source().is_some());
        let shown = everything_shown(&e);
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

#[tokio::test]
async fn a_sign_out_bus_comes_with_redis_and_postgres_only() {
    for single_process in [
        "memory",
        &format!(
            "sqlite://{}/bus-{}.db",
            env!("CARGO_TARGET_TMPDIR"),
            SessionId::generate().fingerprint()
        ),
    ] {
        let bus = idweb_stores::open_sign_out_bus(&url(single_process, &[]), clock()).await;
        assert!(matches!(bus, Ok(None)), "{single_process}: {bus:?}");
    }
    let e = idweb_stores::open_sign_out_bus(&url("cassandra://db", &[]), clock())
        .await
        .expect_err("unknown scheme");
    assert!(matches!(e, OpenStoreError::UnsupportedScheme { .. }), "{e}");
    let prefix = format!("bus-open-{}", SessionId::generate().fingerprint());
    let redis = url(&redis_url(), &[("prefix", &prefix)]);
    let bus = idweb_stores::open_sign_out_bus(&redis, clock()).await;
    if cfg!(feature = "redis") {
        let bus = bus
            .expect("the Redis at 127.0.0.1:6379 must be running")
            .expect("a bus");
        assert!(bus.is_subscribed(), "subscribed before open returns");
        assert!(
            format!("{bus:?}").contains(&format!("{prefix}:signout")),
            "{bus:?}"
        );
    } else {
        assert!(matches!(
            bus,
            Err(OpenStoreError::FeatureDisabled {
                feature: "redis",
                ..
            })
        ));
    }
    let schema = format!("idweb_test_bus_{}", SessionId::generate().fingerprint());
    let _drop = DropSchema(schema.clone());
    let pg = url(&postgres_url(), &[("schema", &schema), ("pool_size", "1")]);
    let bus = idweb_stores::open_sign_out_bus(&pg, clock()).await;
    if cfg!(feature = "postgres") {
        let bus = bus
            .expect("the PostgreSQL at 127.0.0.1:5432 must be running")
            .expect("a bus");
        assert!(bus.is_subscribed(), "listening before open returns");
        assert!(
            format!("{bus:?}").contains(&format!("{schema}:signout")),
            "{bus:?}"
        );
    } else {
        assert!(matches!(
            bus,
            Err(OpenStoreError::FeatureDisabled {
                feature: "postgres",
                ..
            })
        ));
    }
}

fn postgres_url() -> String {
    std::env::var("IDWEB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Drops the test's schema however the test ends.
struct DropSchema(String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (url, schema) = (postgres_url(), self.0.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn postgres_opens_its_schema_in_the_named_database() {
    let schema = format!("idweb_test_open_{}", SessionId::generate().fingerprint());
    let _drop = DropSchema(schema.clone());
    let named = url(&postgres_url(), &[("schema", &schema), ("pool_size", "2")]);
    let result = open(&named, clock()).await;
    if !cfg!(feature = "postgres") {
        let e = result.expect_err("the postgres feature is off");
        assert!(
            matches!(&e, OpenStoreError::FeatureDisabled { scheme, feature: "postgres" } if scheme == "postgres"),
            "{e:?}"
        );
        assert!(e.to_string().contains("`postgres` feature"), "{e}");
        return;
    }
    let store = result.unwrap_or_else(|e| {
        panic!(
            "these tests need PostgreSQL at {} (IDWEB_TEST_POSTGRES_URL): {}",
            postgres_url(),
            everything_shown(&e)
        )
    });
    // The in-process cache is on by default, as on Redis.
    assert!(
        format!("{store:?}").starts_with("CachingStore"),
        "{store:?}"
    );
    assert!(format!("{store:?}").contains(&schema), "{store:?}");
    let s = put_one(&store).await;
    let plain = open(
        &url(&postgres_url(), &[("schema", &schema), ("l1", "false")]),
        clock(),
    )
    .await
    .expect("open without l1");
    assert!(
        format!("{plain:?}").starts_with("PostgresStore"),
        "{plain:?}"
    );
    assert_eq!(plain.get_session(&s.id).await.unwrap(), Some(s.clone()));
    // `postgresql://` names the same store; another handle sees the session.
    let other = postgres_url().replacen("postgres://", "postgresql://", 1);
    let again = open(&url(&other, &[("schema", &schema)]), clock())
        .await
        .expect("postgresql://");
    assert_eq!(again.get_session(&s.id).await.unwrap(), Some(s.clone()));
    let elsewhere = format!("{schema}_b");
    let _drop_b = DropSchema(elsewhere.clone());
    let other_schema = open(&url(&postgres_url(), &[("schema", &elsewhere)]), clock())
        .await
        .expect("another schema");
    assert_eq!(other_schema.get_session(&s.id).await.unwrap(), None);
}

#[tokio::test]
async fn postgres_refuses_bad_urls_and_options_and_hides_the_password() {
    if !cfg!(feature = "postgres") {
        let e = open(&url("postgres://u:hunter2@127.0.0.1:1/d", &[]), clock())
            .await
            .expect_err("the postgres feature is off");
        assert!(
            matches!(
                &e,
                OpenStoreError::FeatureDisabled {
                    feature: "postgres",
                    ..
                }
            ),
            "{e:?}"
        );
        return;
    }
    for (store, options, what) in [
        (
            "postgres://u:hunter2@h/d",
            &[("schema", "Bad")][..],
            "IDWEB_STORE_SCHEMA",
        ),
        (
            "postgres://u:hunter2@h/d",
            &[("l1", "maybe")][..],
            "IDWEB_STORE_L1",
        ),
        (
            "postgres://u:hunter2@h/d",
            &[("prefix", "a")][..],
            "IDWEB_STORE_PREFIX",
        ),
        ("postgres://u:hunter2@h", &[][..], "database"),
        ("postgres://u:hunter2@h/d?sslmode=require", &[][..], "TLS"),
    ] {
        let e = open(&url(store, options), clock()).await.expect_err(what);
        assert!(
            matches!(&e, OpenStoreError::Invalid { scheme, .. } if scheme == "postgres"),
            "{e:?}"
        );
        let shown = everything_shown(&e);
        assert!(shown.contains(what) && !shown.contains(PASSWORD), "{shown}");
    }
    // Nothing listens on port 1: the failure keeps its cause, shows no password.
    let e = open(&url("postgresql://u:hunter2@127.0.0.1:1/d", &[]), clock())
        .await
        .expect_err("nothing listens");
    assert!(matches!(&e, OpenStoreError::Open { .. }), "{e:?}");
    assert!(e.source().is_some());
    assert!(!everything_shown(&e).contains(PASSWORD));
}
