//! Sign-out on every path, over real HTTP with the dev IdP: the session and
//! every cache entry of it leave the store, and nothing brings them back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use idweb::{ManualClock, MemoryStore, PartitionKey, SessionId, Store};
use idweb_test_support::idweb_devidp::{DevIdp, subject_for};
use idweb_test_support::{
    AppOptions, ControlledStore, TestApp, browser, dev_idp, only_session, origin, set_cookies,
    sign_in, start_app,
};
use reqwest::header::ACCEPT;

/// A fresh app on `idp`, alice signed in with browser `b`: her session,
/// which holds at least an access, a refresh and an ID token.
async fn alice_signed_in(idp: &DevIdp, b: &reqwest::Client) -> (TestApp, idweb::Session) {
    let app = start_app(idp, AppOptions::default()).await;
    sign_in(b, &app, "alice").await;
    let session = only_session(&app).await;
    assert!(cache_entries(&app, &session.id).await >= 3);
    (app, session)
}

async fn cache_entries(app: &TestApp, id: &SessionId) -> usize {
    app.store
        .get_partition(&PartitionKey::Session(id.clone()))
        .await
        .unwrap()
        .map(|p| p.entries.len())
        .unwrap_or(0)
}

async fn post_logout_token(app: &TestApp, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.at("/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn local_sign_out_removes_the_session_and_continues_at_the_provider_by_post() {
    let idp = dev_idp(true).await;
    let b = browser();
    let (app, session) = alice_signed_in(&idp, &b).await;

    let resp = b
        .post(app.at("/account/signout"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let cookies = set_cookies(&resp);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("idweb.session=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("idweb.signout=") && c.contains("Path=/signout-callback-oidc"))
    );
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(&format!("action=\"{}/logout\"", idp.issuer())),
        "{html}"
    );
    for field in [
        "id_token_hint",
        "post_logout_redirect_uri",
        "state",
        "client_id",
    ] {
        assert!(
            html.contains(&format!("name=\"{field}\"")),
            "{field} in {html}"
        );
    }
    assert!(html.contains(&app.at("/signout-callback-oidc")));

    assert_eq!(app.store.get_session(&session.id).await.unwrap(), None);
    assert_eq!(
        cache_entries(&app, &session.id).await,
        0,
        "every cache entry left"
    );
    let resp = b
        .get(app.at("/profile"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// `?scope=local`: out of this app only. The session and its tokens leave
/// the store, no form goes on to the provider, the provider's session
/// stays, and signing in again is silent (single sign-on still holds).
#[tokio::test]
async fn sign_out_of_this_app_only_keeps_the_provider_session() {
    let idp = dev_idp(true).await;
    let b = browser();
    let (app, session) = alice_signed_in(&idp, &b).await;
    let provider_sessions = idp.sessions_of("alice");
    assert_eq!(provider_sessions.len(), 1);

    let resp = b
        .post(app.at("/account/signout?scope=local"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookies = set_cookies(&resp);
    assert!(
        cookies.iter().any(|c| c.starts_with("idweb.session=;")),
        "{cookies:?}"
    );
    assert!(
        !cookies.iter().any(|c| c.starts_with("idweb.signout=")),
        "no sign-out at the provider is pending: {cookies:?}"
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("id=\"signed-out\""), "{html}");
    assert!(!html.contains("end-session"), "{html}");
    assert!(
        !html.contains(&format!("{}/logout", idp.issuer())),
        "{html}"
    );

    assert_eq!(app.store.get_session(&session.id).await.unwrap(), None);
    assert_eq!(cache_entries(&app, &session.id).await, 0);
    assert_eq!(
        idp.sessions_of("alice"),
        provider_sessions,
        "the provider's session stays"
    );
    // Signed in again without a prompt: the provider's session cookie in
    // the same browser is still good.
    sign_in(&b, &app, "alice").await;
    let again = only_session(&app).await;
    assert_ne!(again.id, session.id);
    assert_eq!(
        again.sid.as_deref(),
        provider_sessions.first().map(String::as_str)
    );

    let resp = b
        .post(app.at("/account/signout?scope=nowhere"))
        .header("origin", origin(&app.url))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        app.store.session_count().await.unwrap(),
        1,
        "nothing signed out"
    );
}

#[tokio::test]
async fn sign_out_refuses_cross_site_requests() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    for headers in [
        vec![],
        vec![("origin", "https://evil.example.com".to_string())],
        vec![("sec-fetch-site", "cross-site".to_string())],
        vec![("referer", "https://evil.example.com/page".to_string())],
    ] {
        let mut req = b
            .post(app.at("/account/signout"))
            .header(ACCEPT, "application/json");
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{headers:?}");
    }
    // The page says what was refused: a sign-out, not a sign-in.
    let resp = b
        .post(app.at("/account/signout"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.unwrap();
    assert!(html.contains("<title>Sign-out refused</title>"), "{html}");
    assert!(!html.contains("Sign-in"), "{html}");
    let resp = b.get(app.at("/account/signout")).send().await.unwrap();
    assert_eq!(resp.status(), 405, "GET does not sign out");
    assert_eq!(
        app.store.session_count().await.unwrap(),
        1,
        "nothing was signed out"
    );
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_of_the_user_in_this_app() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let (alice1, alice2, bob) = (browser(), browser(), browser());
    sign_in(&alice1, &app, "alice").await;
    sign_in(&alice2, &app, "alice").await;
    sign_in(&bob, &app, "bob").await;
    assert_eq!(app.store.session_count().await.unwrap(), 3);
    let resp = alice1
        .post(app.at("/account/signout?scope=all"))
        .header("sec-fetch-site", "same-origin")
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["sessions_removed"], 2);
    let left = only_session(&app).await;
    assert_eq!(left.sub, subject_for("bob"));
}

#[tokio::test]
async fn front_channel_logout_works_without_the_cookie_and_forgeries_change_nothing() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    let session = only_session(&app).await;
    let sid = session.sid.clone().unwrap();
    let anonymous = reqwest::Client::new();
    let before = app.store.stats().await.unwrap();

    for (query, status) in [
        (format!("iss=https%3A%2F%2Fevil.example.com&sid={sid}"), 400),
        ("iss=x".to_string(), 400),
        (String::new(), 400),
        (format!("iss={}&sid=not-a-known-sid", idp.issuer()), 200),
    ] {
        let resp = anonymous
            .get(app.at(&format!("/signout-oidc?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{query}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
    }
    assert_eq!(
        app.store.stats().await.unwrap(),
        before,
        "nothing changed, not even a tombstone"
    );

    // Entra sends only sid.
    let resp = anonymous
        .get(app.at(&format!("/signout-oidc?sid={sid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains(&format!("frame-ancestors {}", idp.issuer())),
        "{csp}"
    );
    assert_eq!(app.store.get_session(&session.id).await.unwrap(), None);
    assert_eq!(cache_entries(&app, &session.id).await, 0);
}

async fn app_on(idp: &DevIdp, store: Arc<dyn Store>, clock: Arc<ManualClock>) -> TestApp {
    start_app(
        idp,
        AppOptions {
            store: Some(store),
            clock,
            ..AppOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_refresh_finishing_after_the_logout_cannot_write_the_tokens_back() {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let store = Arc::new(ControlledStore::new(Arc::new(MemoryStore::with_clock(
        clock.clone(),
    ))));
    let app = app_on(&idp, store.clone(), clock.clone()).await;
    let b = browser();
    let profile = sign_in(&b, &app, "alice").await;
    let session = only_session(&app).await;
    let rp = app.idweb.relying_party();

    // The access token expires: the next token request redeems the refresh
    // token, then writes the partition — where the gate holds it.
    clock.advance(Duration::from_secs(3600));
    idp.set_clock_offset(3600);
    let gate = store.gate_next_partition_write().await;
    let s = rp.session(&session.id).await.unwrap().unwrap();
    let idweb = app.idweb.clone();
    let refresh =
        tokio::spawn(async move { idweb.relying_party().token_for_user(&s, &["openid"]).await });
    gate.reached.notified().await;
    assert_eq!(
        idp.stats().refresh_token,
        1,
        "the refresh happened at the provider"
    );

    // The refresh has its new tokens and is about to store them: the provider signs the user out now.
    let token = idp.logout_token_for(
        &app.client_id,
        Some(profile["sub"].as_str().unwrap()),
        profile["sid"].as_str(),
    );
    assert_eq!(post_logout_token(&app, &token).await.status(), 200);
    gate.release.notify_one();

    let result = refresh.await.unwrap();
    assert!(
        matches!(result, Err(idweb::TokenError::SignedOut)),
        "{result:?}"
    );
    assert_eq!(app.store.get_session(&session.id).await.unwrap(), None);
    assert_eq!(
        cache_entries(&app, &session.id).await,
        0,
        "nothing was written back"
    );
}

#[tokio::test]
async fn a_logout_that_cannot_be_recorded_answers_5xx_and_succeeds_on_retry() {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let store = Arc::new(ControlledStore::new(Arc::new(MemoryStore::with_clock(
        clock.clone(),
    ))));
    let app = app_on(&idp, store.clone(), clock).await;
    let b = browser();
    let profile = sign_in(&b, &app, "alice").await;
    let session = only_session(&app).await;
    let token = idp.logout_token_for(
        &app.client_id,
        Some(profile["sub"].as_str().unwrap()),
        profile["sid"].as_str(),
    );

    store.set_failing(true);
    let resp = post_logout_token(&app, &token).await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    store.set_failing(false);
    assert!(
        app.store.get_session(&session.id).await.unwrap().is_some(),
        "nothing happened yet"
    );

    // The provider retries the same token: not a replay, and it works.
    let resp = post_logout_token(&app, &token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.store.get_session(&session.id).await.unwrap(), None);
    assert_eq!(cache_entries(&app, &session.id).await, 0);
}

#[tokio::test]
async fn local_sign_out_revokes_the_refresh_token_at_the_provider_unless_told_not_to() {
    for revoke in [true, false] {
        let idp = dev_idp(true).await;
        let app = start_app(
            &idp,
            AppOptions {
                extra_env: vec![("IDWEB_REVOKE_ON_SIGN_OUT", revoke.to_string())],
                ..AppOptions::default()
            },
        )
        .await;
        let b = browser();
        sign_in(&b, &app, "alice").await;
        let session = only_session(&app).await;
        let rp = app.idweb.relying_party();
        let rt = rp
            .token_cache()
            .read(&PartitionKey::Session(session.id.clone()))
            .await
            .unwrap()
            .entries
            .iter()
            .find(|e| e.kind() == idweb::msal::EntryKind::RefreshToken)
            .and_then(|e| e.secret().map(str::to_string))
            .unwrap();
        let resp = b
            .post(app.at("/account/signout"))
            .header("origin", origin(&app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            idp.stats().revocations,
            u64::from(revoke),
            "revoke={revoke}"
        );
        // The old refresh token no longer works at the provider (when revoked).
        let status = reqwest::Client::new()
            .post(format!("{}/token", idp.issuer()))
            .basic_auth(&app.client_id, Some(&app.client_secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            status.as_u16() == 400,
            revoke,
            "revoke={revoke}: /token answered {status}"
        );
    }
}

#[tokio::test]
async fn a_sign_out_callback_with_a_foreign_state_is_refused() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let resp = reqwest::Client::new()
        .get(app.at("/signout-callback-oidc?state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("does not belong to this browser")
    );
}

#[tokio::test]
async fn end_session_by_get_redirects_without_the_id_token() {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            extra_env: vec![("IDWEB_END_SESSION_METHOD", "get".to_string())],
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    let resp = b
        .post(app.at("/account/signout"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let to = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        to.as_str()
            .starts_with(&format!("{}/logout?", idp.issuer()))
    );
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert!(!q.contains_key("id_token_hint"), "no token in the URL");
    assert_eq!(q["client_id"], app.client_id);
    assert_eq!(
        q["post_logout_redirect_uri"],
        app.at("/signout-callback-oidc")
    );
    assert!(q["state"].len() >= 43);
    assert_eq!(app.store.session_count().await.unwrap(), 0);
}
