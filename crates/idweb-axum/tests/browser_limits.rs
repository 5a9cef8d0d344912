//! What idweb sends a browser, against the dev IdP over HTTP: at most
//! `MAX_PENDING_SIGN_INS` pending sign-ins per browser (oldest dropped),
//! percent-encoded `Location` headers, readable `error_description`, and the
//! `__Host-` prefix on every cookie when the public URL is https.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use idweb_axum::{IdWeb, MAX_PENDING_SIGN_INS};
use idweb_test_support::idweb_devidp::DevClient;
use idweb_test_support::{
    AppOptions, browser, dev_idp, follow_until, form, get_page, location, profile_json, start_app,
};
use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};

/// The app's routes plus `/cookies`: how many pending sign-in cookies the
/// browser sent, and the size of its `Cookie` header.
fn routes(idweb: &IdWeb) -> Router {
    idweb.mount(
        Router::new()
            .route(
                "/profile",
                get(|user: idweb_axum::AuthenticatedUser| async move {
                    axum::Json(serde_json::json!({ "sub": user.sub(), "name": user.name(), "sid": user.sid() }))
                }),
            )
            .route(
                "/cookies",
                get(|headers: HeaderMap| async move {
                    let all: Vec<&str> = headers
                        .get_all("cookie")
                        .iter()
                        .map(|v| v.to_str().unwrap_or(""))
                        .collect();
                    let pending = all
                        .iter()
                        .flat_map(|h| h.split(';'))
                        .filter(|c| c.trim_start().starts_with("idweb.signin."))
                        .count();
                    axum::Json(serde_json::json!({
                        "pending": pending,
                        "bytes": all.iter().map(|h| h.len()).sum::<usize>(),
                    }))
                }),
            ),
    )
}

#[tokio::test]
async fn two_hundred_sign_in_starts_keep_the_newest_few_and_the_newest_completes() {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            routes: Some(routes),
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();
    let mut authorize = Vec::new();
    for _ in 0..200 {
        let resp = get_page(
            &b,
            &app.at("/account/signin?returnUrl=%2Fprofile&loginHint=alice"),
        )
        .await;
        assert_eq!(resp.status(), 302);
        authorize.push(location(&resp));
    }
    let jar: serde_json::Value = b
        .get(app.at("/cookies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jar["pending"], MAX_PENDING_SIGN_INS, "{jar}");
    let bytes = jar["bytes"].as_u64().unwrap();
    assert!(bytes < 4 * 1024, "Cookie header of {bytes} bytes");

    // The oldest sign-in was dropped: its callback finds no pending sign-in.
    let first = follow_until(&b, &authorize[0], &app.at("/signin-oidc")).await;
    let resp = b
        .get(&first)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "signin_expired");

    // The newest completes.
    let newest = follow_until(&b, &authorize[199], &app.at("/signin-oidc")).await;
    let resp = get_page(&b, &newest).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), app.at("/profile"));
    let profile = profile_json(&b, &app).await.expect("signed in");
    assert!(profile["sub"].is_string());
}

#[tokio::test]
async fn a_non_ascii_return_url_goes_out_percent_encoded() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();
    let start =
        app.at("/account/signin?loginHint=alice&returnUrl=%2Fcaf%C3%A9%3Fq%3D%E2%9C%93%20x");
    let callback = follow_until(&b, &start, &app.at("/signin-oidc")).await;
    let resp = get_page(&b, &callback).await;
    assert_eq!(resp.status(), 303);
    let raw = resp.headers()[LOCATION].as_bytes();
    assert!(raw.is_ascii(), "{raw:?}");
    assert_eq!(raw, b"/caf%C3%A9?q=%E2%9C%93%20x");
}

#[tokio::test]
async fn the_providers_error_description_is_shown_as_text() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let b = browser();
    let resp = get_page(
        &b,
        &app.at("/account/signin?returnUrl=%2Fprofile&loginHint=alice"),
    )
    .await;
    let authorize = url::Url::parse(&location(&resp)).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut refused = url::Url::parse(&app.at("/signin-oidc")).unwrap();
    refused
        .query_pairs_mut()
        .append_pair("state", &state)
        .append_pair("iss", idp.issuer())
        .append_pair("error", "access_denied")
        .append_pair("error_description", "The user said no");
    let resp = b
        .get(refused.as_str())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "signin_refused");
    assert_eq!(
        body["error_description"],
        "the identity provider refused the sign-in: access_denied: The user said no"
    );

    // The HTML page says the same (a new sign-in: the pending one is used up).
    let resp = get_page(
        &b,
        &app.at("/account/signin?returnUrl=%2Fprofile&loginHint=alice"),
    )
    .await;
    let authorize = url::Url::parse(&location(&resp)).unwrap();
    let state2 = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut u = url::Url::parse(&app.at("/signin-oidc")).unwrap();
    u.query_pairs_mut()
        .append_pair("state", &state2)
        .append_pair("iss", idp.issuer())
        .append_pair("error", "access_denied")
        .append_pair("error_description", "The user said no");
    let html = get_page(&b, u.as_str()).await.text().await.unwrap();
    assert!(html.contains("access_denied: The user said no"), "{html}");
    assert!(!html.contains("Some("), "{html}");
}

/// `(name, value)` of a `Set-Cookie` header, and its attributes.
fn parse_set_cookie(h: &str) -> (String, String, Vec<String>) {
    let mut parts = h.split("; ");
    let (name, value) = parts.next().unwrap().split_once('=').unwrap();
    (
        name.to_string(),
        value.to_string(),
        parts.map(str::to_string).collect(),
    )
}

fn set_cookies(resp: &reqwest::Response) -> Vec<(String, String, Vec<String>)> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| parse_set_cookie(v.to_str().unwrap()))
        .collect()
}

fn assert_host_cookies(cookies: &[(String, String, Vec<String>)], step: &str) {
    assert!(!cookies.is_empty(), "{step}: no cookie set");
    for (name, _, attrs) in cookies {
        assert!(name.starts_with("__Host-"), "{step}: {name}");
        assert!(
            attrs.iter().any(|a| a == "Secure"),
            "{step}: {name} {attrs:?}"
        );
        assert!(
            attrs.iter().any(|a| a == "Path=/"),
            "{step}: {name} {attrs:?}"
        );
        assert!(
            !attrs.iter().any(|a| a.starts_with("Domain")),
            "{step}: {name} {attrs:?}"
        );
    }
}

#[tokio::test]
async fn every_cookie_idweb_sets_on_https_has_the_host_prefix() {
    const PUBLIC: &str = "https://app.test";
    let idp = dev_idp(true).await;
    let key = |n: usize| {
        let mut bytes = vec![0u8; n];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        STANDARD.encode(bytes)
    };
    let app = start_app(
        &idp,
        AppOptions {
            extra_env: vec![
                ("IDWEB_PUBLIC_URL", PUBLIC.into()),
                ("IDWEB_COOKIE_KEY", key(64)),
                ("IDWEB_CACHE_KEYS", format!("k1:{}", key(32))),
            ],
            client: |mut c: DevClient, _| {
                c.redirect_uris = vec![format!("{PUBLIC}/signin-oidc")];
                c.post_logout_redirect_uris = vec![format!("{PUBLIC}/signout-callback-oidc")];
                c
            },
            ..AppOptions::default()
        },
    )
    .await;
    // The app is served on plain http here, so cookies are carried by hand
    // (a browser would not send Secure cookies over http).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Sign-in start: the pending sign-in cookie.
    let resp = client
        .get(app.at("/account/signin?returnUrl=%2Fprofile&loginHint=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let pending = set_cookies(&resp);
    assert_host_cookies(&pending, "sign-in start");
    let authorize = location(&resp);

    // The provider sends the browser back to the https redirect URI.
    let callback = follow_until(&browser(), &authorize, &format!("{PUBLIC}/signin-oidc")).await;
    let callback = callback.replacen(PUBLIC, &app.url, 1);
    let resp = client
        .get(&callback)
        .header(COOKIE, format!("{}={}", pending[0].0, pending[0].1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let done = set_cookies(&resp);
    assert_host_cookies(&done, "callback");
    let session = done
        .iter()
        .find(|(n, _, _)| n == "__Host-idweb.session")
        .expect("session cookie");
    assert!(
        done.iter()
            .any(|(n, v, _)| *n == pending[0].0 && v.is_empty())
    );
    let session_cookie = format!("{}={}", session.0, session.1);
    let resp = client
        .get(app.at("/profile"))
        .header(COOKIE, &session_cookie)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Sign-out: the sign-out state cookie; the callback reads it back.
    let resp = client
        .post(app.at("/account/signout"))
        .header(COOKIE, &session_cookie)
        .header("origin", PUBLIC)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out = set_cookies(&resp);
    assert_host_cookies(&out, "sign-out");
    let state_cookie = out
        .iter()
        .find(|(n, _, _)| n == "__Host-idweb.signout")
        .expect("sign-out state cookie");
    let html = resp.text().await.unwrap();
    let (_, fields) = form(&html);
    let state = &fields.iter().find(|(k, _)| k == "state").unwrap().1;
    let mut back = url::Url::parse(&app.at("/signout-callback-oidc")).unwrap();
    back.query_pairs_mut().append_pair("state", state);
    let resp = client
        .get(back.as_str())
        .header(COOKIE, format!("{}={}", state_cookie.0, state_cookie.1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the callback read the __Host- cookie");
    assert_host_cookies(&set_cookies(&resp), "sign-out callback");
}
