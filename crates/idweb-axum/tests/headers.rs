//! Clickjacking and caching headers, over HTTP against the dev IdP: idweb's
//! pages and the app's pages under `DenyFramingLayer` forbid framing (the
//! front-channel page only lets the provider frame it); responses to
//! signed-in requests are `no-store`, anonymous public pages are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::routing::get;
use idweb_axum::{AuthenticatedUser, DenyFramingLayer, IdWeb};
use idweb_test_support::{AppOptions, browser, dev_idp, origin, sign_in, start_app};
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_FRAME_OPTIONS};

fn routes(idweb: &IdWeb) -> Router {
    idweb
        .mount(
            Router::new()
                .route(
                    "/",
                    get(|user: Option<AuthenticatedUser>| async move {
                        match user {
                            Some(u) => format!("hello {}", u.sub()),
                            None => "home".to_string(),
                        }
                    }),
                )
                .route("/public", get(|| async { "public" }))
                .route(
                    "/profile",
                    get(|user: AuthenticatedUser| async move {
                        axum::Json(serde_json::json!({ "sub": user.sub(), "name": user.name(), "sid": user.sid() }))
                    }),
                ),
        )
        .layer(DenyFramingLayer)
}

fn csp(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(CONTENT_SECURITY_POLICY)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn assert_not_frameable(resp: &reqwest::Response, what: &str) {
    assert!(
        csp(resp)
            .iter()
            .any(|p| p.contains("frame-ancestors 'none'")),
        "{what}: {:?}",
        csp(resp)
    );
    assert_eq!(
        resp.headers()
            .get(X_FRAME_OPTIONS)
            .map(|v| v.to_str().unwrap()),
        Some("DENY"),
        "{what}"
    );
}

#[tokio::test]
async fn idweb_pages_and_the_apps_pages_forbid_framing_but_the_front_channel_page_lets_the_provider_frame_it()
 {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            routes: Some(routes),
            ..AppOptions::default()
        },
    )
    .await;
    let anonymous = browser();
    for path in [
        "/",
        "/public",
        "/account/signin?returnUrl=%2F%2Fevil.example",
        "/signout-callback-oidc?state=x",
        "/account/signin?returnUrl=%2Fprofile",
    ] {
        let resp = anonymous.get(app.at(path)).send().await.unwrap();
        assert_not_frameable(&resp, path);
    }
    // Signed in, too.
    let user = browser();
    sign_in(&user, &app, "alice").await;
    let resp = user.get(app.at("/profile")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_not_frameable(&resp, "/profile");

    // The front-channel logout page: framed by the provider only.
    let resp = anonymous
        .get(app.at("/signout-oidc?sid=unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let policies = csp(&resp);
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert!(
        policies[0].contains(&format!("frame-ancestors {}", origin(idp.issuer()))),
        "{policies:?}"
    );
    assert!(
        !policies[0].contains("frame-ancestors 'none'"),
        "{policies:?}"
    );
    assert!(resp.headers().get(X_FRAME_OPTIONS).is_none());
}

#[tokio::test]
async fn responses_to_signed_in_requests_are_no_store_and_anonymous_public_pages_are_not() {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            routes: Some(routes),
            ..AppOptions::default()
        },
    )
    .await;
    let cache_control = |resp: &reqwest::Response| {
        resp.headers()
            .get(CACHE_CONTROL)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let anonymous = browser();
    let resp = anonymous.get(app.at("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(cache_control(&resp), None);

    let user = browser();
    let profile = sign_in(&user, &app, "alice").await;
    for path in ["/", "/profile"] {
        let resp = user.get(app.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(cache_control(&resp).as_deref(), Some("no-store"), "{path}");
        let body = resp.text().await.unwrap();
        assert!(
            body.contains(profile["sub"].as_str().unwrap()),
            "{path}: {body}"
        );
    }
    // A page that does not look at the user stays cacheable, signed in or not.
    let resp = user.get(app.at("/public")).send().await.unwrap();
    assert_eq!(cache_control(&resp), None);
}
