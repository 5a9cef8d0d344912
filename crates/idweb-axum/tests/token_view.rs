//! The request path's decoded view of a partition is exactly as coherent as
//! the store: a write or a sign-out by another instance or process (which
//! shares the store but not this process's view) is seen on the very next
//! request, and a sign-out leaves nothing the view could still serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use idweb::MemoryStore;
use idweb::msal::{AccessTokenEntry, CacheEntry};
use idweb::{PartitionKey, Secret, Session, SignOut, SignOutSelector, SystemClock, TokenCache};

use idweb_test_support::{
    AppOptions, ControlledStore, TestApp, browser, dev_idp, sign_in, start_app,
};

async fn only_session(app: &TestApp) -> Session {
    let sessions = app.store.list_sessions(None, 10).await.unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let id = sessions[0].id.clone();
    app.idweb
        .relying_party()
        .session(&id)
        .await
        .unwrap()
        .unwrap()
}

/// The access token entry of the session's partition, as another process
/// would read it (its own token cache over the same store and keys).
async fn access_token_entry(other: &TokenCache, session: &Session) -> AccessTokenEntry {
    let read = other
        .read(&PartitionKey::Session(session.id.clone()))
        .await
        .unwrap();
    read.entries
        .into_iter()
        .find_map(|e| match e {
            CacheEntry::AccessToken(at) => Some(at),
            _ => None,
        })
        .expect("an access token after sign-in")
}

#[tokio::test]
async fn a_write_by_another_process_is_served_on_the_next_request() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    sign_in(&browser(), &app, "alice").await;
    let session = only_session(&app).await;
    let rp = app.idweb.relying_party();

    // Served from the cache twice (the second from the view).
    let first = rp.token_for_user(&session, &["openid"]).await.unwrap();
    let again = rp.token_for_user(&session, &["openid"]).await.unwrap();
    assert_eq!(first.secret, again.secret);

    // Another process replaces the access token in the shared store.
    let other = TokenCache::new(app.store.clone(), rp.settings().cache_keys().clone());
    let mut at = access_token_entry(&other, &session).await;
    at.secret = Secret::new("written-by-another-process");
    at.expires_on += 60;
    other
        .write(
            &PartitionKey::Session(session.id.clone()),
            &[CacheEntry::AccessToken(at)],
            &[],
            None,
        )
        .await
        .unwrap();

    let next = rp.token_for_user(&session, &["openid"]).await.unwrap();
    assert_eq!(next.secret.secret(), "written-by-another-process");
    assert_eq!(idp.stats().refresh_token, 0, "served from the cache");
}

#[tokio::test]
async fn a_sign_out_by_another_instance_leaves_nothing_to_serve() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    sign_in(&browser(), &app, "alice").await;
    let session = only_session(&app).await;
    let rp = app.idweb.relying_party();
    rp.token_for_user(&session, &["openid"]).await.unwrap();

    // An eviction that does not pass through this process (another
    // instance, or the `idweb cache evict` command).
    let elsewhere = SignOut::new(
        app.store.clone(),
        Arc::new(SystemClock),
        Duration::from_secs(86_400),
    );
    let evicted = elsewhere
        .evict(&SignOutSelector::Subject {
            iss: session.iss.clone(),
            sub: session.sub.clone(),
        })
        .await
        .unwrap();
    assert_eq!(evicted.sessions_removed, 1);

    let result = rp.token_for_user(&session, &["openid"]).await;
    assert!(
        matches!(result, Err(idweb::TokenError::SignedOut)),
        "{result:?}"
    );
    assert_eq!(idp.stats().refresh_token, 0);
}

#[tokio::test]
async fn after_a_local_sign_out_no_token_is_served() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    sign_in(&browser(), &app, "alice").await;
    let session = only_session(&app).await;
    let rp = app.idweb.relying_party();
    rp.token_for_user(&session, &["openid"]).await.unwrap();

    rp.local_sign_out(&session, false).await.unwrap();
    // The session's partition is gone from the store.
    assert_eq!(
        app.store
            .partition_version(&PartitionKey::Session(session.id.clone()))
            .await
            .unwrap(),
        None
    );
    let result = rp.token_for_user(&session, &["openid"]).await;
    assert!(
        matches!(result, Err(idweb::TokenError::SignedOut)),
        "{result:?}"
    );
}

/// The partition version read with the session (one snapshot) answers the
/// first token lookup right after, with no second store read; every other
/// lookup — the second, one by a clone after it, one past the time bound —
/// asks the store.
#[tokio::test]
async fn the_version_read_with_the_session_answers_one_lookup() {
    let idp = dev_idp(true).await;
    let store = Arc::new(ControlledStore::new(Arc::new(MemoryStore::new())));
    let app = start_app(
        &idp,
        AppOptions {
            store: Some(store.clone()),
            ..AppOptions::default()
        },
    )
    .await;
    sign_in(&browser(), &app, "alice").await;
    let id = only_session(&app).await.id;
    let rp = app.idweb.relying_party();
    // The view of the partition, made by a first lookup.
    let warm = rp.session(&id).await.unwrap().unwrap();
    let token = rp.token_for_user(&warm, &["openid"]).await.unwrap();

    let session = rp.session(&id).await.unwrap().unwrap();
    store.set_failing(true);
    let first = rp.token_for_user(&session, &["openid"]).await.unwrap();
    assert_eq!(first.secret, token.secret, "served without the store");
    assert!(
        rp.token_for_user(&session, &["openid"]).await.is_err(),
        "the second lookup asks the store"
    );

    // Clones share the one lookup.
    store.set_failing(false);
    let session = rp.session(&id).await.unwrap().unwrap();
    let clone = session.clone();
    store.set_failing(true);
    rp.token_for_user(&clone, &["openid"]).await.unwrap();
    assert!(rp.token_for_user(&session, &["openid"]).await.is_err());

    // Past the bound, even the first lookup asks the store.
    store.set_failing(false);
    let session = rp.session(&id).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    store.set_failing(true);
    assert!(rp.token_for_user(&session, &["openid"]).await.is_err());

    // A sign-out in this process between the read and the lookup drops the
    // view: the lookup asks the store, which has nothing.
    store.set_failing(false);
    let session = rp.session(&id).await.unwrap().unwrap();
    rp.local_sign_out(&session, false).await.unwrap();
    let result = rp.token_for_user(&session, &["openid"]).await;
    assert!(
        matches!(result, Err(idweb::TokenError::SignedOut)),
        "{result:?}"
    );
}
