//! An app served below a path (`IDWEB_PUBLIC_URL=http://host:port/portal`)
//! with its own path for every idweb route, over real HTTP with the dev IdP:
//! sign-in, a token route, RP-initiated sign-out back to its own
//! `SignedOutCallbackPath`, back-channel and front-channel logout on its own
//! paths; the default paths are not served; return URLs stay below the path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::routing::get;
use idweb_axum::{AuthenticatedUser, IdWeb};
use idweb_test_support::idweb_devidp::{DevClient, DevIdp, LogoutChannel};
use idweb_test_support::{
    AppOptions, TestApp, attrs, browser, dev_idp, follow_until, form, get_page, location, origin,
    set_cookies, start_app,
};
use reqwest::header::ACCEPT;

/// Every route on a path of its own, the Microsoft.Identity.Web ones by
/// their `AzureAd` names.
fn custom_paths() -> Vec<(&'static str, String)> {
    [
        ("AzureAd__CallbackPath", "/auth/callback"),
        ("AzureAd__SignedOutCallbackPath", "/auth/signed-out"),
        ("AzureAd__RemoteSignOutPath", "/auth/front-channel"),
        ("IDWEB_BACK_CHANNEL_LOGOUT_PATH", "/auth/back-channel"),
        ("IDWEB_SIGN_IN_PATH", "/auth/sign-in"),
        ("IDWEB_SIGN_OUT_PATH", "/auth/sign-out"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// The app's own routes, written as if at the root.
fn routes(idweb: &IdWeb) -> Router {
    idweb.mount(
        Router::new()
            .route("/", get(|| async { "home" }))
            .route(
                "/profile",
                get(|user: AuthenticatedUser| async move {
                    axum::Json(serde_json::json!({ "sub": user.sub(), "sid": user.sid() }))
                }),
            )
            .route(
                "/token",
                get(|user: AuthenticatedUser| async move {
                    user.token(&["openid"]).await.map(|t| {
                        axum::Json(
                            serde_json::json!({ "has_token": !t.secret.secret().is_empty() }),
                        )
                    })
                }),
            ),
    )
}

fn back_channel(c: DevClient, url: &str) -> DevClient {
    c.with_backchannel_logout(format!("{url}/portal/auth/back-channel"))
}

fn front_channel(c: DevClient, url: &str) -> DevClient {
    c.with_frontchannel_logout(format!("{url}/portal/auth/front-channel"))
}

async fn portal_app(
    idp: &DevIdp,
    host: &'static str,
    client: fn(DevClient, &str) -> DevClient,
) -> TestApp {
    start_app(
        idp,
        AppOptions {
            path_base: "/portal",
            extra_env: custom_paths(),
            routes: Some(routes),
            client,
            host,
            ..AppOptions::default()
        },
    )
    .await
}

async fn profile(b: &reqwest::Client, app: &TestApp) -> Option<serde_json::Value> {
    let resp = b
        .get(app.at("/portal/profile"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    match resp.status().as_u16() {
        200 => Some(resp.json().await.unwrap()),
        401 => None,
        other => panic!("/portal/profile answered {other}"),
    }
}

/// Signs `user` in, starting from the protected page as a browser would.
async fn sign_in(b: &reqwest::Client, app: &TestApp, user: &str) -> serde_json::Value {
    let resp = get_page(b, &app.at("/portal/profile")).await;
    assert_eq!(resp.status(), 302);
    let start = location(&resp);
    assert_eq!(
        start,
        app.at("/portal/auth/sign-in?returnUrl=%2Fportal%2Fprofile")
    );
    let resp = get_page(b, &format!("{start}&loginHint={user}")).await;
    assert_eq!(resp.status(), 302);
    assert!(
        set_cookies(&resp)
            .iter()
            // The app's path, so that the next sign-in start sees it (pending sign-ins are capped).
            .any(|c| c.starts_with("idweb.signin.") && c.contains("Path=/portal;")),
        "{:?}",
        set_cookies(&resp)
    );
    let authorize = url::Url::parse(&location(&resp)).unwrap();
    let redirect_uri = authorize
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned());
    assert_eq!(redirect_uri, Some(app.at("/portal/auth/callback")));
    let callback = follow_until(b, authorize.as_str(), &app.at("/portal/auth/callback")).await;
    let resp = get_page(b, &callback).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), app.at("/portal/profile"));
    assert!(
        set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with("idweb.session=") && c.contains("Path=/portal;")),
        "{:?}",
        set_cookies(&resp)
    );
    profile(b, app).await.expect("signed in")
}

/// Starts the sign-out on the app's own path; returns the IdP's answer to
/// the end-session form.
async fn sign_out(b: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    let resp = b
        .post(app.at("/portal/auth/sign-out"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookies = set_cookies(&resp);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("idweb.signout=") && c.contains("Path=/portal/auth/signed-out")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("idweb.session=;") && c.contains("Path=/portal;")),
        "{cookies:?}"
    );
    let (action, fields) = form(&resp.text().await.unwrap());
    let post_logout = fields
        .iter()
        .find(|(k, _)| k == "post_logout_redirect_uri")
        .map(|(_, v)| v.clone());
    assert_eq!(post_logout, Some(app.at("/portal/auth/signed-out")));
    b.post(action).form(&fields).send().await.unwrap()
}

async fn empty(app: &TestApp) -> bool {
    let s = app.store.stats().await.unwrap();
    s.sessions == 0 && s.partitions == 0 && s.entries == 0
}

#[tokio::test]
async fn a_nested_app_signs_in_gets_a_token_and_signs_out_back_to_its_signed_out_callback_path() {
    let idp = dev_idp(true).await;
    let app = portal_app(&idp, "127.0.0.1", |c, _| c).await;
    let b = browser();

    // A JSON client is told where to sign in: below the app's path.
    let resp = b
        .get(app.at("/portal/profile"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["sign_in_url"],
        "/portal/auth/sign-in?returnUrl=%2Fportal%2Fprofile"
    );

    sign_in(&b, &app, "alice").await;
    let resp = b
        .get(app.at("/portal/token"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["has_token"],
        true
    );
    assert_eq!(app.session_count().await, 1);

    let resp = sign_out(&b, &app).await;
    assert!(empty(&app).await, "the session and its tokens are gone");
    assert_eq!(resp.status(), 303, "the IdP sends the browser back");
    let back = location(&resp);
    assert!(
        back.starts_with(&app.at("/portal/auth/signed-out?")),
        "{back}"
    );
    // The state cookie (Path=/portal/auth/signed-out) reaches the callback.
    let resp = get_page(&b, &back).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("You have signed out."), "{page}");
    assert_eq!(attrs(&page, "<a", "href"), ["/portal"]);
    assert!(profile(&b, &app).await.is_none());
}

#[tokio::test]
async fn default_and_unprefixed_paths_are_not_served_by_a_nested_app() {
    let idp = dev_idp(true).await;
    let app = portal_app(&idp, "127.0.0.1", |c, _| c).await;
    let client = reqwest::Client::new();
    for base in ["", "/portal"] {
        for path in [
            "/account/signin",
            "/signin-oidc",
            "/signout-callback-oidc",
            "/signout-oidc",
        ] {
            let url = app.at(&format!("{base}{path}"));
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 404, "GET {url}");
        }
        for path in ["/account/signout", "/backchannel-logout"] {
            let url = app.at(&format!("{base}{path}"));
            let resp = client
                .post(&url)
                .header("origin", origin(&app.url))
                .form(&[("logout_token", "x")])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 404, "POST {url}");
        }
    }
    for path in [
        "/profile",
        "/token",
        "/auth/sign-in",
        "/auth/callback",
        "/portal/portal",
    ] {
        let resp = client.get(app.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "GET {path}");
    }
    // The app's own routes are below the path too.
    let resp = client.get(app.at("/portal")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "home");
}

#[tokio::test]
async fn a_nested_apps_back_channel_path_evicts() {
    let idp = dev_idp(true).await;
    let a = portal_app(&idp, "127.0.0.1", back_channel).await;
    let other = portal_app(&idp, "localhost", |c, _| c).await;
    let b = browser();
    let pa = sign_in(&b, &a, "alice").await;
    let po = sign_in(&b, &other, "alice").await;
    assert_eq!(pa["sid"], po["sid"], "one IdP session shared by both apps");
    assert!(a.store.stats().await.unwrap().entries >= 3);

    let resp = sign_out(&b, &other).await;
    assert_eq!(resp.status(), 303);
    assert!(empty(&a).await, "App A's session and tokens are gone");
    assert!(profile(&b, &a).await.is_none());
    let delivered = idp.logout_deliveries();
    let to_a: Vec<_> = delivered
        .iter()
        .filter(|d| d.client_id == a.client_id && d.channel == LogoutChannel::BackChannel)
        .collect();
    assert_eq!(to_a.len(), 1, "{delivered:?}");
    assert_eq!(to_a[0].status, Some(200));
    assert_eq!(to_a[0].uri, a.at("/portal/auth/back-channel"));
}

#[tokio::test]
async fn a_nested_apps_front_channel_path_evicts() {
    let idp = dev_idp(true).await;
    let a = portal_app(&idp, "127.0.0.1", |c, _| c).await;
    let fc = portal_app(&idp, "localhost", front_channel).await;
    let b = browser();
    sign_in(&b, &a, "alice").await;
    let pf = sign_in(&b, &fc, "alice").await;

    let resp = sign_out(&b, &a).await;
    assert_eq!(resp.status(), 200, "the IdP's page with the iframe");
    let page = resp.text().await.unwrap();
    let frames = attrs(&page, "<iframe", "src");
    assert_eq!(frames.len(), 1, "{page}");
    assert!(
        frames[0].starts_with(&fc.at("/portal/auth/front-channel?")),
        "{frames:?}"
    );
    let frame = url::Url::parse(&frames[0]).unwrap();
    let sid = frame
        .query_pairs()
        .find(|(k, _)| k == "sid")
        .map(|(_, v)| v.into_owned());
    assert_eq!(sid.as_deref(), pf["sid"].as_str());
    assert!(!empty(&fc).await, "still there until the iframe loads");

    // Loaded cross-site, without the app's cookie.
    let resp = reqwest::Client::new()
        .get(frame.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(empty(&fc).await, "the session and its tokens are gone");
    assert!(profile(&b, &fc).await.is_none());
}

#[tokio::test]
async fn return_urls_must_stay_below_the_apps_path() {
    let idp = dev_idp(true).await;
    let app = portal_app(&idp, "127.0.0.1", |c, _| c).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let refused = [
        "/",
        "/profile",
        "/portalx/profile",
        "/portal/../admin",
        "/portal/%2e%2e/admin",
        "//evil.example.com/portal",
        "https://evil.example.com/portal",
    ];
    for bad in refused {
        let resp = client
            .get(app.at("/portal/auth/sign-in"))
            .query(&[("returnUrl", bad)])
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "returnUrl={bad}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_return_url", "returnUrl={bad}");
    }
    for good in [
        "/portal",
        "/portal/profile?tab=1",
        &app.at("/portal/profile"),
    ] {
        let resp = client
            .get(app.at("/portal/auth/sign-in"))
            .query(&[("returnUrl", good)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "returnUrl={good}");
        assert!(
            location(&resp).starts_with(idp.issuer()),
            "returnUrl={good}"
        );
    }
    // Without a return URL, the sign-in comes back to the app's home.
    let b = browser();
    let start = app.at("/portal/auth/sign-in?loginHint=alice");
    let callback = follow_until(&b, &start, &app.at("/portal/auth/callback")).await;
    let resp = get_page(&b, &callback).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), app.at("/portal"));
}

/// The router of `IdWeb::mount` nested once more, below a path the public
/// URL does not have.
fn nested_again(idweb: &IdWeb) -> Router {
    Router::new().nest("/extra", routes(idweb))
}

#[tokio::test]
async fn a_mount_nested_below_another_path_is_refused_naming_the_problem() {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            path_base: "/portal",
            routes: Some(nested_again),
            ..AppOptions::default()
        },
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/extra/portal/profile", "/extra/portal/account/signin"] {
        let resp = client
            .get(app.at(path))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 500, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "idweb_nested_below_a_path");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.contains("`/extra`") && description.contains("IDWEB_PUBLIC_URL"),
            "{description}"
        );
    }
}

#[tokio::test]
async fn on_https_below_a_path_cookies_are_secure_and_scoped_to_the_path() {
    let idp = dev_idp(true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The public URL is https (a TLS proxy in front); the test talks to the app behind it.
    let public = format!("https://127.0.0.1:{port}/portal");
    let settings = idweb::Settings::from_sources(
        None,
        [
            ("IDWEB_AUTHORITY", idp.issuer().to_string()),
            ("IDWEB_CLIENT_ID", "app".to_string()),
            ("IDWEB_CLIENT_SECRET", "secret".to_string()),
            ("IDWEB_PUBLIC_URL", public.clone()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    let idweb = IdWeb::builder(settings).build().await.unwrap();
    assert_eq!(idweb.session_cookie_name(), "__Secure-idweb.session");
    let app = idweb.mount(Router::new());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let behind = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let resp = client
        .get(format!("{behind}/portal/account/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let cookies = set_cookies(&resp);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Secure-idweb.signin.")
                && c.contains("Path=/portal;")
                && c.contains("Secure")),
        "{cookies:?}"
    );

    // Signing out (here without a session) clears the session cookie on its path.
    let resp = client
        .post(format!("{behind}/portal/account/signout"))
        .header("origin", format!("https://127.0.0.1:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), format!("{behind}/portal"));
    let cookies = set_cookies(&resp);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Secure-idweb.session=;")
                && c.contains("Path=/portal;")
                && c.contains("Secure")
                && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    server.abort();
}
