//! Back-Channel Logout 1.0 §2.6, rule by rule: each bad logout token gets
//! 400 with a JSON error, and removes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idweb::{BACKCHANNEL_LOGOUT_EVENT, StoreStats};
use idweb_test_support::idweb_devidp::DevIdp;
use idweb_test_support::{AppOptions, TestApp, browser, dev_idp, profile_json, sign_in, start_app};
use serde_json::{Value, json};

fn now() -> i64 {
    idweb::unix_seconds(std::time::SystemTime::now())
}

fn claims(idp: &DevIdp, app: &TestApp, sub: &str, sid: &str) -> Value {
    json!({
        "iss": idp.issuer(), "aud": app.client_id, "iat": now(), "exp": now() + 120,
        "jti": idweb::SessionId::generate().fingerprint(),
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} }, "sub": sub, "sid": sid,
    })
}

fn edit(mut v: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(v.as_object_mut().unwrap());
    v
}

fn typ() -> Value {
    json!({ "typ": "logout+jwt" })
}

/// HS256 over `header.payload` with `secret`.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, signing.as_bytes());
    format!("{signing}.{}", B64.encode(tag.as_ref()))
}

async fn jwks_modulus(idp: &DevIdp) -> (String, Vec<u8>) {
    let jwks: Value = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    (
        key["kid"].as_str().unwrap().to_string(),
        B64.decode(key["n"].as_str().unwrap()).unwrap(),
    )
}

async fn post_form(app: &TestApp, body: Vec<u8>, content_type: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.at("/backchannel-logout"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn form(token: &str) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish()
        .into_bytes()
}

#[tokio::test]
async fn every_bad_logout_token_is_refused_with_400_and_removes_nothing() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let profile = sign_in(&browser(), &app, "alice").await;
    let (sub, sid) = (
        profile["sub"].as_str().unwrap().to_string(),
        profile["sid"].as_str().unwrap().to_string(),
    );
    let good = || claims(&idp, &app, &sub, &sid);
    let (kid, modulus) = jwks_modulus(&idp).await;
    let form_ct = "application/x-www-form-urlencoded";

    let valid = idp.mint_jwt(typ(), good());
    let mut tampered = valid.clone();
    tampered.pop();
    tampered.push(if valid.ends_with('A') { 'B' } else { 'A' });
    let alg_none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "logout+jwt"}).to_string()),
        B64.encode(good().to_string())
    );
    let hs_with_public_key = hs256(
        &json!({"alg": "HS256", "typ": "logout+jwt", "kid": kid}),
        &good(),
        &modulus,
    );

    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tampered signature", form(&tampered), form_ct),
        ("alg none", form(&alg_none), form_ct),
        (
            "HS256 with the public key as secret",
            form(&hs_with_public_key),
            form_ct,
        ),
        (
            "unknown kid",
            form(&idp.mint_jwt(json!({"typ": "logout+jwt", "kid": "no-such-key"}), good())),
            form_ct,
        ),
        (
            "wrong typ",
            form(&idp.mint_jwt(json!({"typ": "at+jwt"}), good())),
            form_ct,
        ),
        (
            "wrong iss",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("iss".into(), json!("https://evil.example.com"));
                }),
            )),
            form_ct,
        ),
        (
            "no iss",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.remove("iss");
                }),
            )),
            form_ct,
        ),
        (
            "wrong aud",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("aud".into(), json!("another-app"));
                }),
            )),
            form_ct,
        ),
        (
            "aud array without us",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("aud".into(), json!(["x", "y"]));
                }),
            )),
            form_ct,
        ),
        (
            "iat too old",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("iat".into(), json!(now() - 7200));
                }),
            )),
            form_ct,
        ),
        (
            "iat in the future",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("iat".into(), json!(now() + 7200));
                }),
            )),
            form_ct,
        ),
        (
            "no iat",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.remove("iat");
                }),
            )),
            form_ct,
        ),
        (
            "expired",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("exp".into(), json!(now() - 600));
                }),
            )),
            form_ct,
        ),
        (
            "no exp",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.remove("exp");
                }),
            )),
            form_ct,
        ),
        (
            "no jti",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.remove("jti");
                }),
            )),
            form_ct,
        ),
        (
            "no events",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.remove("events");
                }),
            )),
            form_ct,
        ),
        (
            "events value not an object",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("events".into(), json!({ BACKCHANNEL_LOGOUT_EVENT: "yes" }));
                }),
            )),
            form_ct,
        ),
        (
            "another event",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert(
                        "events".into(),
                        json!({ "http://schemas.openid.net/event/other": {} }),
                    );
                }),
            )),
            form_ct,
        ),
        (
            "nonce present",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
                }),
            )),
            form_ct,
        ),
        (
            "neither sub nor sid",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.remove("sub");
                    c.remove("sid");
                }),
            )),
            form_ct,
        ),
        (
            "sub not a string",
            form(&idp.mint_jwt(
                typ(),
                edit(good(), |c| {
                    c.insert("sub".into(), json!(42));
                }),
            )),
            form_ct,
        ),
        ("garbage", form("this is not a JWT"), form_ct),
        ("three dots of garbage", form("a.b.c"), form_ct),
        ("no logout_token field", b"token=abc".to_vec(), form_ct),
        (
            "logout_token twice",
            [form(&valid), b"&".to_vec(), form(&valid)].concat(),
            form_ct,
        ),
        (
            "JSON body",
            json!({ "logout_token": valid }).to_string().into_bytes(),
            "application/json",
        ),
        ("oversized body", form(&"a".repeat(20_000)), form_ct),
    ];
    assert!(bodies.len() >= 20);
    let before: StoreStats = app.store.stats().await.unwrap();
    for (name, body, ct) in bodies {
        let resp = post_form(&app, body, ct).await;
        assert_eq!(resp.status(), 400, "{name}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{name}");
        let err: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: no JSON error body ({e})"));
        assert_eq!(err["error"], "invalid_request", "{name}");
        assert!(
            err["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        assert_eq!(
            app.store.stats().await.unwrap(),
            before,
            "{name} changed the store"
        );
    }
    assert!(profile_still_there(&app).await);

    // A replayed jti: the first delivery (for a provider session we do not
    // have) is accepted, the replay is refused.
    let other = idp.mint_jwt(typ(), claims(&idp, &app, &sub, "some-other-sid"));
    assert_eq!(post_form(&app, form(&other), form_ct).await.status(), 200);
    let after_first = app.store.stats().await.unwrap();
    let resp = post_form(&app, form(&other), form_ct).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("replayed"),
        "{err}"
    );
    assert_eq!(app.store.stats().await.unwrap(), after_first);
    assert!(profile_still_there(&app).await);

    // And the genuine token works.
    assert_eq!(post_form(&app, form(&valid), form_ct).await.status(), 200);
    assert_eq!(app.store.session_count().await.unwrap(), 0);
}

async fn profile_still_there(app: &TestApp) -> bool {
    app.store.session_count().await.unwrap() == 1
}

#[tokio::test]
async fn a_logout_token_without_sid_ends_every_session_of_the_user() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let a1 = sign_in(&browser(), &app, "alice").await;
    sign_in(&browser(), &app, "alice").await;
    sign_in(&browser(), &app, "bob").await;
    assert_eq!(app.store.session_count().await.unwrap(), 3);
    let token = idp.logout_token_for(&app.client_id, a1["sub"].as_str(), None);
    let resp = post_form(&app, form(&token), "application/x-www-form-urlencoded").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let left = app.store.list_sessions(None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].sub,
        idweb_test_support::idweb_devidp::subject_for("bob")
    );
}

#[tokio::test]
async fn a_logout_for_an_unknown_session_is_200_already_signed_out() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let token = idp.logout_token_for(&app.client_id, Some("nobody"), Some("no-such-sid"));
    let resp = post_form(&app, form(&token), "application/x-www-form-urlencoded").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn tokens_typed_plain_jwt_are_accepted_unless_explicit_typing_is_required() {
    for (require_typ, expected) in [(false, 200), (true, 400)] {
        let idp = dev_idp(true).await;
        let app = start_app(
            &idp,
            AppOptions {
                extra_env: vec![("IDWEB_LOGOUT_TOKEN_REQUIRE_TYP", require_typ.to_string())],
                ..AppOptions::default()
            },
        )
        .await;
        let profile = sign_in(&browser(), &app, "alice").await;
        let c = claims(
            &idp,
            &app,
            profile["sub"].as_str().unwrap(),
            profile["sid"].as_str().unwrap(),
        );
        let token = idp.mint_jwt(json!({ "typ": "JWT" }), c);
        let resp = post_form(&app, form(&token), "application/x-www-form-urlencoded").await;
        assert_eq!(resp.status(), expected, "require_typ={require_typ}");
        assert_eq!(
            app.store.session_count().await.unwrap(),
            u64::from(require_typ)
        );
    }
}

/// A junk token with an unknown `kid` uses up the JWKS refetch window; a
/// genuine logout signed with a key the provider rotated just after is then
/// deferred (503 + Retry-After, retryable), not refused; once the window has
/// passed the provider's retry signs the user out.
#[tokio::test]
async fn a_genuine_logout_with_a_fresh_key_during_the_refetch_window_is_503_retry_after_then_200() {
    use std::sync::Arc;
    use std::time::Duration;
    let idp = dev_idp(true).await;
    let clock = Arc::new(idweb::ManualClock::starting_now());
    let app = start_app(
        &idp,
        AppOptions {
            clock: clock.clone(),
            min_jwks_refetch_interval: Duration::from_secs(30),
            ..AppOptions::default()
        },
    )
    .await;
    let user = browser();
    let profile = sign_in(&user, &app, "alice").await;
    let (sub, sid) = (
        profile["sub"].as_str().unwrap().to_string(),
        profile["sid"].as_str().unwrap().to_string(),
    );
    let form_ct = "application/x-www-form-urlencoded";

    // The junk token: its key is unknown even after the refetch it causes.
    let junk = idp.mint_jwt(
        json!({"typ": "logout+jwt", "kid": "junk-key"}),
        claims(&idp, &app, &sub, &sid),
    );
    let resp = post_form(&app, form(&junk), form_ct).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("retry-after").is_none());

    // The provider rotates its keys and sends a genuine logout.
    idp.rotate_keys(false);
    let genuine = idp.logout_token_for(&app.client_id, Some(&sub), Some(&sid));
    let resp = post_form(&app, form(&genuine), form_ct).await;
    assert_eq!(resp.status(), 503);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "Retry-After: {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        profile_json(&user, &app).await.is_some(),
        "nothing signed out yet"
    );

    // The provider retries after Retry-After: the keys are refetched.
    clock.advance(Duration::from_secs(retry));
    let resp = post_form(&app, form(&genuine), form_ct).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(profile_json(&user, &app).await.is_none(), "signed out");
}
