//! The whole story over real HTTP: two web apps share one IdP session; a
//! sign-out in one of them, or at the IdP, removes the other app's session
//! and every cache entry of it — checked in the store, not only the cookie.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idweb_test_support::idweb_devidp::{DevClient, DevIdp, LogoutChannel};
use idweb_test_support::{
    AppOptions, TestApp, attrs, browser, dev_idp, form, get_page, origin, profile_json, sign_in,
    start_app,
};

fn back_channel(c: DevClient, url: &str) -> DevClient {
    c.with_backchannel_logout(format!("{url}/backchannel-logout"))
}

fn front_channel(c: DevClient, url: &str) -> DevClient {
    c.with_frontchannel_logout(format!("{url}/signout-oidc"))
}

/// App A hears sign-outs by back-channel (on 127.0.0.1), App B by front-channel (on localhost).
async fn two_apps(idp: &DevIdp) -> (TestApp, TestApp) {
    let a = start_app(
        idp,
        AppOptions {
            client: back_channel,
            ..AppOptions::default()
        },
    )
    .await;
    let b = start_app(
        idp,
        AppOptions {
            client: front_channel,
            host: "localhost",
            ..AppOptions::default()
        },
    )
    .await;
    (a, b)
}

async fn empty(app: &TestApp) -> bool {
    let s = app.store.stats().await.unwrap();
    s.sessions == 0 && s.partitions == 0 && s.entries == 0
}

/// Signs out of `app` in the browser: the app's page POSTs to the IdP's
/// end-session endpoint; returns the IdP's answer (a page, or a redirect).
async fn sign_out_at(b: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    let resp = b
        .post(app.at("/account/signout"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (action, fields) = form(&resp.text().await.unwrap());
    b.post(action).form(&fields).send().await.unwrap()
}

#[tokio::test]
async fn signing_out_of_app_b_removes_app_a_session_by_back_channel() {
    let idp = dev_idp(true).await;
    let (a, b_app) = two_apps(&idp).await;
    let b = browser();
    let pa = sign_in(&b, &a, "alice").await;
    let pb = sign_in(&b, &b_app, "alice").await;
    assert_eq!(pa["sid"], pb["sid"], "one IdP session shared by both apps");
    assert!(
        a.store.stats().await.unwrap().entries >= 3,
        "App A has cached tokens"
    );

    let resp = sign_out_at(&b, &b_app).await;
    assert_eq!(
        resp.status(),
        200,
        "the IdP's logout page (App B has a front-channel URI)"
    );
    let page = resp.text().await.unwrap();

    assert!(
        empty(&a).await,
        "App A's session and every cache entry are gone"
    );
    assert!(empty(&b_app).await, "App B's too");
    assert!(
        profile_json(&b, &a).await.is_none(),
        "App A asks to sign in again"
    );
    let delivered = idp.logout_deliveries();
    assert!(delivered.iter().any(|d| d.client_id == a.client_id
        && d.channel == LogoutChannel::BackChannel
        && d.status == Some(200)));

    // The IdP sends the browser back to App B's post-logout redirect URI with the state.
    let back = attrs(&page, "<a", "href")
        .into_iter()
        .find(|h| h.starts_with(&b_app.at("/signout-callback-oidc")))
        .expect("continue link");
    let resp = get_page(&b, &back).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("You have signed out"));
}

#[tokio::test]
async fn signing_out_of_app_a_removes_app_b_session_by_front_channel() {
    let idp = dev_idp(true).await;
    let (a, b_app) = two_apps(&idp).await;
    let b = browser();
    sign_in(&b, &a, "alice").await;
    let pb = sign_in(&b, &b_app, "alice").await;

    let resp = sign_out_at(&b, &a).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    let frames = attrs(&page, "<iframe", "src");
    assert_eq!(frames.len(), 1, "{page}");
    let frame = url::Url::parse(&frames[0]).unwrap();
    assert!(frames[0].starts_with(&b_app.at("/signout-oidc?")));
    let q: std::collections::HashMap<String, String> = frame.query_pairs().into_owned().collect();
    assert_eq!(q["iss"], idp.issuer());
    assert_eq!(q["sid"], pb["sid"].as_str().unwrap());

    assert!(
        !empty(&b_app).await,
        "App B still has its session until the iframe loads"
    );
    // The browser loads the iframe cross-site: App B's SameSite=Lax cookie is not sent.
    let resp = reqwest::Client::new()
        .get(frame.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        empty(&b_app).await,
        "App B's session and every cache entry are gone"
    );
    assert!(empty(&a).await);
    assert!(profile_json(&b, &b_app).await.is_none());
}

#[tokio::test]
async fn signed_out_elsewhere_at_the_idp_reaches_the_back_channel_app() {
    let idp = dev_idp(true).await;
    let (a, b_app) = two_apps(&idp).await;
    let alice = browser();
    let bob = browser();
    sign_in(&alice, &a, "alice").await;
    sign_in(&alice, &b_app, "alice").await;
    sign_in(&bob, &a, "bob").await;

    // The user (or an admin) ends all of alice's sessions at the IdP's own page.
    let resp = reqwest::Client::new()
        .post(format!("{}/admin/end-sessions", idp.issuer()))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let left = a.store.list_sessions(None, 10).await.unwrap();
    assert_eq!(left.len(), 1, "only bob's session is left in App A");
    assert_eq!(
        left[0].sub,
        idweb_test_support::idweb_devidp::subject_for("bob")
    );
    assert!(profile_json(&alice, &a).await.is_none());
    assert!(profile_json(&bob, &a).await.is_some());
}

#[tokio::test]
async fn a_sid_logout_ends_only_the_session_of_that_browser() {
    let idp = dev_idp(true).await;
    let (a, b_app) = two_apps(&idp).await;
    let (first, second) = (browser(), browser());
    let p1 = sign_in(&first, &a, "alice").await;
    sign_in(&first, &b_app, "alice").await;
    let p2 = sign_in(&second, &a, "alice").await;
    assert_ne!(p1["sid"], p2["sid"], "two browsers, two IdP sessions");

    sign_out_at(&first, &b_app).await;
    let left = a.store.list_sessions(None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sid.as_deref(), p2["sid"].as_str());
    assert!(profile_json(&first, &a).await.is_none());
    assert!(
        profile_json(&second, &a).await.is_some(),
        "the other browser stays signed in"
    );
}
