//! Sign-in over real HTTP: a bound dev IdP, a bound app, a cookie-keeping client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use idweb::{ClientAuthMethod, ManualClock};
use idweb_test_support::idweb_devidp::{Fault, subject_for};
use idweb_test_support::{
    AppOptions, TestApp, browser, dev_idp, follow_until, form_fields, get_page, location, origin,
    profile_json, sign_in, start_app,
};
use reqwest::header::{ACCEPT, COOKIE, SET_COOKIE};

/// The error code in a JSON error response.
async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("JSON error body");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn full_sign_in_through_the_login_page() {
    let idp = dev_idp(false).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();

    // /profile without a session → sign-in.
    let resp = get_page(&b, &app.at("/profile")).await;
    assert_eq!(resp.status(), 302);
    let signin = location(&resp);
    assert_eq!(signin, app.at("/account/signin?returnUrl=%2Fprofile"));

    // sign-in → the provider's authorization endpoint, with PKCE S256, state and nonce.
    let resp = get_page(&b, &signin).await;
    assert_eq!(resp.status(), 302);
    let authorize = location(&resp);
    let pending = resp
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        pending.contains("HttpOnly")
            && pending.contains("SameSite=Lax")
            // Path=/ so that the next sign-in start sees it (at most
            // MAX_PENDING_SIGN_INS per browser).
            && pending.split("; ").any(|a| a == "Path=/"),
        "{pending}"
    );
    assert!(authorize.starts_with(&format!("{}/authorize?", idp.issuer())));
    let q: std::collections::HashMap<String, String> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], app.client_id);
    assert_eq!(q["redirect_uri"], app.at("/signin-oidc"));
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43 && q["code_challenge"].len() == 43);

    // The IdP shows its login page; the user picks alice.
    let resp = get_page(&b, &authorize).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("alice") && html.contains("bob"));
    let resp = b
        .post(format!("{}/authorize/login", idp.issuer()))
        .form(&form_fields(&html, ("username", "alice")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "the form post answers See Other");
    let callback = location(&resp);
    assert!(callback.starts_with(&app.at("/signin-oidc?")));

    // The callback creates the session and returns to /profile.
    let resp = get_page(&b, &callback).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), app.at("/profile"));
    let cookies: Vec<String> = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("idweb.session="))
        .expect("session cookie");
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"));
    assert!(
        !session_cookie.contains("Secure"),
        "http loopback app: no Secure flag"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("idweb.signin.") && c.contains("Max-Age=0")),
        "pending cookie cleared"
    );

    let resp = get_page(&b, &app.at("/profile")).await;
    assert_eq!(resp.status(), 200);
    let profile: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(profile["sub"], subject_for("alice"));
    assert_eq!(profile["name"], "Alice Example");
    assert!(profile["sid"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(app.session_count().await, 1);
}

#[tokio::test]
async fn anonymous_json_request_gets_401_and_browser_gets_redirect() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();
    let resp = b
        .get(app.at("/profile?x=1"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(
        body["sign_in_url"],
        "/account/signin?returnUrl=%2Fprofile%3Fx%3D1"
    );
    let resp = b
        .get(app.at("/profile"))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
}

#[tokio::test]
async fn client_secret_post_works() {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            client_auth: ClientAuthMethod::ClientSecretPost,
            ..AppOptions::default()
        },
    )
    .await;
    let profile = sign_in(&browser(), &app, "bob").await;
    assert_eq!(profile["sub"], subject_for("bob"));
}

/// Starts a sign-in with a cookie-less client; returns (pending cookie, callback URL).
async fn start_raw(app: &TestApp, return_url: &str) -> (String, String) {
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = raw
        .get(app.at(&format!(
            "/account/signin?loginHint=alice&returnUrl={return_url}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let set = resp.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    let pending = set.split(';').next().unwrap().to_string();
    let resp = raw.get(location(&resp)).send().await.unwrap();
    assert_eq!(resp.status(), 302, "IdP auto-login");
    (pending, location(&resp))
}

async fn callback_with(app: &TestApp, cookie: &str, callback: &str) -> reqwest::Response {
    let _ = app;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(callback)
        .header(COOKIE, cookie)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

fn replace_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .collect();
    let mut q = u.query_pairs_mut();
    q.clear();
    for (k, v) in &pairs {
        q.append_pair(k, v);
    }
    if let Some(v) = value {
        q.append_pair(name, v);
    }
    drop(q);
    u.to_string()
}

#[tokio::test]
async fn wrong_or_missing_state_is_refused_and_creates_no_session() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let (pending, callback) = start_raw(&app, "%2F").await;

    let forged = replace_param(&callback, "state", Some("forged-state-from-an-attacker"));
    let (status, code) = error_code(callback_with(&app, &pending, &forged).await).await;
    assert_eq!((status, code.as_str()), (400, "signin_expired"));

    // The right cookie name, but a state that does not match its content.
    let name = pending.split('=').next().unwrap();
    let value = pending.split_once('=').unwrap().1;
    let state = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let other = format!("{state}x");
    let renamed = format!("{}={value}", idweb::pending_cookie_name(&other));
    let _ = name;
    let mismatched = replace_param(&callback, "state", Some(&other));
    let (status, code) = error_code(callback_with(&app, &renamed, &mismatched).await).await;
    assert_eq!((status, code.as_str()), (400, "state_mismatch"));

    let missing = replace_param(&callback, "state", None);
    let (status, code) = error_code(callback_with(&app, &pending, &missing).await).await;
    assert_eq!((status, code.as_str()), (400, "state_mismatch"));

    // No pending cookie at all.
    let (status, code) = error_code(callback_with(&app, "unrelated=1", &callback).await).await;
    assert_eq!((status, code.as_str()), (400, "signin_expired"));
    assert_eq!(app.session_count().await, 0);

    // The genuine response still works afterwards: nothing above consumed the code.
    let resp = callback_with(&app, &pending, &callback).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(app.session_count().await, 1);
}

#[tokio::test]
async fn replayed_code_is_refused_and_creates_no_second_session() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let (pending, callback) = start_raw(&app, "%2Fprofile").await;
    let resp = callback_with(&app, &pending, &callback).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(app.session_count().await, 1);
    let (status, code) = error_code(callback_with(&app, &pending, &callback).await).await;
    assert_eq!((status, code.as_str()), (400, "code_rejected"));
    assert_eq!(
        app.session_count().await,
        1,
        "the replay created no session"
    );
}

#[tokio::test]
async fn provider_error_and_wrong_issuer_in_the_response_are_refused() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let (pending, callback) = start_raw(&app, "%2F").await;
    let denied = replace_param(
        &replace_param(&callback, "code", None),
        "error",
        Some("access_denied"),
    );
    let (status, code) = error_code(callback_with(&app, &pending, &denied).await).await;
    assert_eq!((status, code.as_str()), (400, "signin_refused"));
    let wrong_iss = replace_param(&callback, "iss", Some("https://evil.example.com"));
    let (status, code) = error_code(callback_with(&app, &pending, &wrong_iss).await).await;
    assert_eq!((status, code.as_str()), (400, "issuer_mismatch"));
    // The provider promises `iss` (RFC 9207): a response without it is refused.
    let no_iss = replace_param(&callback, "iss", None);
    let (status, code) = error_code(callback_with(&app, &pending, &no_iss).await).await;
    assert_eq!((status, code.as_str()), (400, "issuer_mismatch"));
    assert_eq!(app.session_count().await, 0);
}

async fn sign_in_with_fault(fault: Fault) -> (u16, String, u64) {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            min_jwks_refetch_interval: Duration::from_secs(30),
            ..AppOptions::default()
        },
    )
    .await;
    let (pending, callback) = start_raw(&app, "%2F").await;
    idp.inject_fault(fault);
    let (status, code) = error_code(callback_with(&app, &pending, &callback).await).await;
    (status, code, app.session_count().await)
}

#[tokio::test]
async fn id_token_with_wrong_nonce_is_refused() {
    assert_eq!(
        sign_in_with_fault(Fault::WrongNonce).await,
        (400, "invalid_id_token".into(), 0)
    );
}

#[tokio::test]
async fn id_token_with_tampered_signature_is_refused() {
    assert_eq!(
        sign_in_with_fault(Fault::TamperedSignature).await,
        (400, "invalid_id_token_signature".into(), 0)
    );
}

#[tokio::test]
async fn id_token_for_another_audience_is_refused() {
    assert_eq!(
        sign_in_with_fault(Fault::WrongAudience).await,
        (400, "invalid_id_token".into(), 0)
    );
}

#[tokio::test]
async fn expired_id_token_is_refused() {
    assert_eq!(
        sign_in_with_fault(Fault::Expired).await,
        (400, "invalid_id_token".into(), 0)
    );
}

#[tokio::test]
async fn id_token_from_another_issuer_is_refused() {
    assert_eq!(
        sign_in_with_fault(Fault::WrongIssuer).await,
        (400, "invalid_id_token".into(), 0)
    );
}

#[tokio::test]
async fn id_token_with_unresolvable_kid_is_refused() {
    assert_eq!(
        sign_in_with_fault(Fault::UnknownKid).await,
        (400, "invalid_id_token_signature".into(), 0)
    );
}

#[tokio::test]
async fn return_url_to_another_site_is_refused() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();
    for bad in [
        "https%3A%2F%2Fevil.example.com%2F",
        "%2F%2Fevil.example.com",
        "%2F%5Cevil.example.com",
        "javascript%3Aalert(1)",
    ] {
        let resp = b
            .get(app.at(&format!("/account/signin?returnUrl={bad}")))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        assert!(
            resp.headers().get(SET_COOKIE).is_none(),
            "{bad}: no sign-in started"
        );
        let (status, code) = error_code(resp).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_return_url"),
            "{bad}"
        );
    }
    assert_eq!(idp.stats().authorization_code, 0);
    assert_eq!(app.session_count().await, 0);

    // A same-origin absolute URL is accepted and reduced to its path.
    let own = format!("{}/profile", origin(&app.url));
    let enc: String = url::form_urlencoded::byte_serialize(own.as_bytes()).collect();
    let callback = follow_until(
        &b,
        &app.at(&format!("/account/signin?loginHint=alice&returnUrl={enc}")),
        &app.at("/signin-oidc"),
    )
    .await;
    let resp = get_page(&b, &callback).await;
    assert_eq!(location(&resp), app.at("/profile"));
}

#[tokio::test]
async fn key_rotation_between_two_sign_ins() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let first = sign_in(&browser(), &app, "alice").await;
    idp.rotate_keys(false);
    let second = sign_in(&browser(), &app, "bob").await;
    assert_eq!(first["sub"], subject_for("alice"));
    assert_eq!(second["sub"], subject_for("bob"));
    assert_eq!(app.session_count().await, 2);
}

#[tokio::test]
async fn tampered_session_cookie_is_no_session() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    let resp = reqwest::Client::new()
        .get(app.at("/profile"))
        .header(ACCEPT, "application/json")
        .header(COOKIE, "idweb.session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn session_ends_when_its_lifetime_is_over() {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = start_app(
        &idp,
        AppOptions {
            clock: clock.clone(),
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();
    sign_in(&b, &app, "alice").await;
    clock.advance(Duration::from_secs(12 * 3600 - 10));
    assert!(
        profile_json(&b, &app).await.is_some(),
        "still valid just before the end"
    );
    clock.advance(Duration::from_secs(10));
    assert!(
        profile_json(&b, &app).await.is_none(),
        "ended after 12 hours"
    );
}
