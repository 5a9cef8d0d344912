//! `RelyingParty::builder(settings).build()` never replaces the store the
//! settings name with a private in-process one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idweb::{RelyingParty, Settings, StartError};

/// Settings of a loopback app whose provider does not exist: a build that
/// got as far as discovery would fail with `StartError::Provider`.
fn settings(store: &str, options: &[(&str, &str)]) -> Settings {
    let base = [
        ("IDWEB_AUTHORITY", "http://127.0.0.1:9"),
        ("IDWEB_CLIENT_ID", "app"),
        ("IDWEB_CLIENT_SECRET", "secret"),
        ("IDWEB_PUBLIC_URL", "http://127.0.0.1:5000"),
        ("IDWEB_STORE", store),
    ];
    let env = base
        .iter()
        .chain(options)
        .map(|(k, v)| (k.to_string(), v.to_string()));
    Settings::from_sources(None, env).expect("settings")
}

#[tokio::test]
async fn a_configured_store_must_be_passed() {
    for (store, options, scheme) in [
        ("sqlite://data/idweb.db", &[][..], "sqlite"),
        (
            "redis://:hunter2@127.0.0.1:6379",
            &[("IDWEB_STORE_PREFIX", "app-a")][..],
            "redis",
        ),
        ("redis+cluster://a:1,b:2", &[][..], "redis+cluster"),
        ("postgres://db.internal/idweb", &[][..], "postgres"),
    ] {
        let err = RelyingParty::builder(settings(store, options))
            .build()
            .await
            .expect_err("must refuse to start without the configured store");
        match &err {
            StartError::StoreNotOpened { scheme: s } => assert_eq!(s, scheme),
            other => panic!("{store}: expected StoreNotOpened, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("IDWEB_STORE")
                && msg.contains("idweb_stores::open")
                && msg.contains("with_store")
                && msg.contains("IdWeb::from_env"),
            "{msg}"
        );
        assert!(
            !msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn memory_needs_no_store_and_a_passed_store_is_used() {
    // With `memory` (the default) or a store passed, the build goes on to
    // discovery, which fails here: the store check let it through.
    for builder in [
        RelyingParty::builder(settings("memory", &[])),
        RelyingParty::builder(settings("sqlite://data/idweb.db", &[]))
            .with_store(std::sync::Arc::new(idweb::MemoryStore::new())),
    ] {
        let err = builder.build().await.expect_err("no provider at :9");
        assert!(matches!(err, StartError::Provider(_)), "{err:?}");
    }
}
