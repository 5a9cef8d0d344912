//! Microsoft Entra ID's shapes, over real HTTP with the dev IdP's Entra-like
//! profile: multi-tenant authorities (`{tenantid}` issuer template), the
//! tenant allow-list, front-channel sign-out with `sid` only, `logout_hint`,
//! and client capabilities with a CAE claims challenge from a downstream API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::routing::get;
use axum::{Extension, Router};
use idweb::{DownstreamRequest, unix_seconds};
use idweb_api::{ApiCaller, ApiRejection, ClaimsChallenge, JwtBearer};
use idweb_axum::{ApiRejection as WebRejection, AuthenticatedUser, IdWeb};
use idweb_test_support::idweb_devidp::{
    CONTOSO_TENANT, DevIdp, DevIdpConfig, EntraProfile, FABRIKAM_TENANT, Fault, LogoutChannel,
    login_hint_for,
};
use idweb_test_support::{
    AppOptions, TestApp, browser, follow_until, form_fields, get_page, location, origin,
    profile_json, sign_in, start_app,
};
use reqwest::header::ACCEPT;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

async fn entra_idp() -> DevIdp {
    DevIdp::start(
        ([127, 0, 0, 1], 0).into(),
        DevIdpConfig {
            auto_login: true,
            entra: Some(EntraProfile::default()),
            ..DevIdpConfig::default()
        },
    )
    .await
    .expect("start the dev IdP")
}

/// An app on the `organizations` authority, with `env` added.
async fn entra_app(idp: &DevIdp, env: Vec<(&'static str, String)>) -> TestApp {
    let mut extra_env = vec![("IDWEB_AUTHORITY", idp.entra_authority("organizations"))];
    extra_env.extend(env);
    start_app(
        idp,
        AppOptions {
            extra_env,
            ..AppOptions::default()
        },
    )
    .await
}

/// Starts a sign-in of `username` and answers the callback's response.
async fn callback(b: &reqwest::Client, app: &TestApp, username: &str) -> reqwest::Response {
    let start = app.at(&format!(
        "/account/signin?returnUrl=%2Fprofile&loginHint={username}"
    ));
    let cb = follow_until(b, &start, &app.at("/signin-oidc")).await;
    b.get(cb)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

fn tenant_issuer(idp: &DevIdp, tid: &str) -> String {
    format!("{}/{tid}/v2.0", idp.issuer())
}

#[tokio::test]
async fn multi_tenant_sign_in_keeps_each_users_own_tenant_issuer() {
    let idp = entra_idp().await;
    let app = entra_app(&idp, Vec::new()).await;
    let rp = app.idweb.relying_party();
    assert!(rp.provider().is_multi_tenant());
    assert_eq!(
        rp.provider().issuer(),
        format!("{}/{{tenantid}}/v2.0", idp.issuer())
    );

    sign_in(&browser(), &app, "alice").await;
    sign_in(&browser(), &app, "bob").await;
    let mut issuers: Vec<String> = app
        .store
        .list_sessions(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.iss)
        .collect();
    issuers.sort();
    let mut expected = vec![
        tenant_issuer(&idp, CONTOSO_TENANT),
        tenant_issuer(&idp, FABRIKAM_TENANT),
    ];
    expected.sort();
    assert_eq!(issuers, expected);
}

#[tokio::test]
async fn an_iss_naming_another_tenant_than_tid_is_refused_without_a_session() {
    let idp = entra_idp().await;
    let app = entra_app(&idp, Vec::new()).await;
    idp.inject_fault(Fault::IssuerOfAnotherTenant);
    let resp = callback(&browser(), &app, "alice").await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_id_token", "{body}");
    assert_eq!(app.session_count().await, 0);

    // The next sign-in, with a consistent token, passes.
    sign_in(&browser(), &app, "alice").await;
    assert_eq!(app.session_count().await, 1);
}

#[tokio::test]
async fn tenants_outside_the_allow_list_are_refused_without_a_session() {
    let idp = entra_idp().await;
    let app = entra_app(
        &idp,
        vec![("IDWEB_ALLOWED_TENANTS", CONTOSO_TENANT.to_uppercase())],
    )
    .await;
    let resp = callback(&browser(), &app, "bob").await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "tenant_not_allowed", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(FABRIKAM_TENANT),
        "{body}"
    );
    assert_eq!(app.session_count().await, 0);

    sign_in(&browser(), &app, "alice").await;
    assert_eq!(app.session_count().await, 1);
}

#[tokio::test]
async fn an_app_of_one_tenant_refuses_the_others() {
    let idp = entra_idp().await;
    // A tenant-specific authority has a concrete issuer: bob's tokens name another.
    let app = start_app(
        &idp,
        AppOptions {
            extra_env: vec![("IDWEB_AUTHORITY", idp.entra_authority(CONTOSO_TENANT))],
            ..AppOptions::default()
        },
    )
    .await;
    assert!(!app.idweb.relying_party().provider().is_multi_tenant());
    sign_in(&browser(), &app, "alice").await;
    let resp = callback(&browser(), &app, "bob").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(app.session_count().await, 1);
}

/// Two apps (on different host names, as two sites); the second registers a
/// front-channel logout URI, which the Entra-like IdP calls with `sid` only.
#[tokio::test]
async fn front_channel_sign_out_with_sid_only_evicts_a_multi_tenant_session() {
    let idp = entra_idp().await;
    let app_a = entra_app(&idp, Vec::new()).await;
    let app_b = start_app(
        &idp,
        AppOptions {
            host: "localhost",
            extra_env: vec![
                ("IDWEB_AUTHORITY", idp.entra_authority("organizations")),
                (
                    "IDWEB_ALLOWED_TENANTS",
                    format!("{CONTOSO_TENANT},{FABRIKAM_TENANT}"),
                ),
            ],
            client: |c, url| c.with_frontchannel_logout(format!("{url}/signout-oidc")),
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();
    sign_in(&b, &app_a, "alice").await;
    sign_in(&b, &app_b, "alice").await;
    let bob = browser();
    sign_in(&bob, &app_b, "bob").await;
    assert_eq!(app_b.session_count().await, 2);

    // Alice signs out of App A: RP-initiated logout carries logout_hint (the
    // ID token has Entra's login_hint claim), so the IdP asks nothing.
    let resp = b
        .post(app_a.at("/account/signout"))
        .header("origin", origin(&app_a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    let fields = form_fields(&html, ("submit", "yes"));
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("logout_hint"), Some(login_hint_for("alice")));
    assert!(field("id_token_hint").is_some());
    let end_session = format!("{}/organizations/oauth2/v2.0/logout", idp.issuer());
    assert!(
        html.contains(&format!("action=\"{end_session}\"")),
        "{html}"
    );
    let form: Vec<(String, String)> = fields.into_iter().filter(|(k, _)| k != "submit").collect();
    let page = b.post(&end_session).form(&form).send().await.unwrap();
    assert_eq!(
        page.status(),
        200,
        "no confirmation page: the hints name the session"
    );
    let page = page.text().await.unwrap();
    assert!(page.contains("<iframe"), "{page}");

    let front = idp
        .logout_deliveries()
        .into_iter()
        .find(|d| d.channel == LogoutChannel::FrontChannel && d.client_id == app_b.client_id)
        .expect("a front-channel notice for App B");
    let url = Url::parse(&front.uri).unwrap();
    let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["sid"], "Entra sends sid only");
    assert!(
        idp.logout_deliveries()
            .iter()
            .all(|d| d.channel != LogoutChannel::BackChannel),
        "no back channel in the Entra profile"
    );

    // The browser loads the iframe cross-site: without App B's cookie.
    let resp = reqwest::get(&front.uri).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app_b.session_count().await, 1, "alice's session is gone");
    assert!(profile_json(&b, &app_b).await.is_none());
    assert!(profile_json(&bob, &app_b).await.is_some(), "bob stays");
}

#[tokio::test]
async fn front_channel_with_sid_only_needs_the_allow_list_on_a_multi_tenant_app() {
    let idp = entra_idp().await;
    let app = entra_app(&idp, Vec::new()).await;
    sign_in(&browser(), &app, "alice").await;
    let sid = app.store.list_sessions(None, 1).await.unwrap()[0]
        .sid
        .clone()
        .unwrap();
    let resp = reqwest::get(app.at(&format!("/signout-oidc?sid={sid}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(app.session_count().await, 1);
    // With the issuer of the user's tenant it is unambiguous.
    let iss = tenant_issuer(&idp, CONTOSO_TENANT);
    let url = Url::parse_with_params(&app.at("/signout-oidc"), [("iss", &iss), ("sid", &sid)]);
    let resp = reqwest::get(url.unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.session_count().await, 0);
}

#[tokio::test]
async fn logout_tokens_must_name_their_own_tenant() {
    let idp = entra_idp().await;
    let app = entra_app(&idp, Vec::new()).await;
    sign_in(&browser(), &app, "alice").await;
    let session = app.store.list_sessions(None, 1).await.unwrap().remove(0);
    let now = unix_seconds(std::time::SystemTime::now());
    let token = |iss: String, tid: &str| {
        idp.mint_jwt(
            json!({ "typ": "logout+jwt" }),
            json!({
                "iss": iss, "tid": tid, "aud": app.client_id, "iat": now, "exp": now + 120,
                "jti": format!("j-{tid}-{now}"), "sid": session.sid,
                "events": { "http://schemas.openid.net/event/backchannel-logout": {} }
            }),
        )
    };
    let post = |t: String| {
        reqwest::Client::new()
            .post(app.at("/backchannel-logout"))
            .form(&[("logout_token", t)])
            .send()
    };
    // Fabrikam's issuer with Contoso's tid: refused, nothing signed out.
    let bad = post(token(tenant_issuer(&idp, FABRIKAM_TENANT), CONTOSO_TENANT))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(app.session_count().await, 1);
    let good = post(token(tenant_issuer(&idp, CONTOSO_TENANT), CONTOSO_TENANT))
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(app.session_count().await, 0);
}

const READ: &str = "api://todo/todos.read";

/// A downstream API on the same multi-tenant authority that demands
/// CAE-capable tokens (`xms_cc` with `cp1`) and, like Microsoft Graph,
/// answers tokens issued before a revocation time with an
/// `insufficient_claims` challenge.
async fn cae_api(idp: &DevIdp, revoked_before: Arc<AtomicI64>) -> String {
    async fn me(
        caller: ApiCaller,
        Extension(revoked_before): Extension<Arc<AtomicI64>>,
    ) -> Result<axum::Json<Value>, ApiRejection> {
        let capable = caller
            .claim("xms_cc")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "cp1"));
        let iat = caller.claim("iat").and_then(Value::as_i64).unwrap_or(0);
        let cutoff = revoked_before.load(Ordering::SeqCst);
        if capable && iat < cutoff {
            let mut claims = serde_json::Map::new();
            claims.insert(
                "access_token".into(),
                json!({ "nbf": { "essential": true, "value": cutoff.to_string() } }),
            );
            return Err(caller.claims_challenge(ClaimsChallenge::new(claims)));
        }
        Ok(axum::Json(json!({
            "iss": caller.issuer(),
            "tid": caller.claim("tid"),
            "xms_cc": caller.claim("xms_cc"),
            "iat": iat,
        })))
    }
    let jwt = JwtBearer::builder(idp.entra_authority("organizations"))
        .with_audience("api://todo")
        .build()
        .await
        .expect("validator");
    let router = Router::new()
        .route("/api/me", get(me))
        .layer(jwt.layer())
        .layer(Extension(revoked_before));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

fn web_routes(idweb: &IdWeb) -> Router {
    async fn me(user: AuthenticatedUser) -> Result<axum::Json<Value>, WebRejection> {
        let resp = user
            .call_api("todo", DownstreamRequest::get("api/me"))
            .await?;
        Ok(axum::Json(resp.json().unwrap_or(Value::Null)))
    }
    async fn profile(user: AuthenticatedUser) -> axum::Json<Value> {
        axum::Json(json!({ "sub": user.sub() }))
    }
    idweb.mount(
        Router::new()
            .route("/me", get(me))
            .route("/profile", get(profile)),
    )
}

#[tokio::test]
async fn a_cae_claims_challenge_leads_through_sign_in_with_the_claims_and_back() {
    let idp = entra_idp().await;
    let revoked_before = Arc::new(AtomicI64::new(0));
    let api = cae_api(&idp, revoked_before.clone()).await;
    let app = start_app(
        &idp,
        AppOptions {
            extra_env: vec![
                ("IDWEB_AUTHORITY", idp.entra_authority("organizations")),
                ("IDWEB_CLIENT_CAPABILITIES", "cp1".into()),
                (
                    "IDWEB_SCOPES",
                    format!("openid profile offline_access {READ}"),
                ),
                ("IDWEB_DOWNSTREAM__TODO__BASE_URL", api.clone()),
                ("IDWEB_DOWNSTREAM__TODO__SCOPES", READ.into()),
            ],
            routes: Some(web_routes),
            ..AppOptions::default()
        },
    )
    .await;
    let b = browser();

    // Sign-in: the authorization request announces the capability.
    let start = app.at("/account/signin?returnUrl=%2Fme&loginHint=alice");
    let first = get_page(&b, &start).await;
    let authorize = Url::parse(&location(&first)).unwrap();
    let claims: Value = serde_json::from_str(
        &authorize
            .query_pairs()
            .find(|(k, _)| k == "claims")
            .expect("a claims parameter")
            .1,
    )
    .unwrap();
    assert_eq!(
        claims,
        json!({ "access_token": { "xms_cc": { "values": ["cp1"] } } })
    );
    let cb = follow_until(&b, authorize.as_str(), &app.at("/signin-oidc")).await;
    let done = get_page(&b, &cb).await;
    assert_eq!(location(&done), app.at("/me"));

    // The API sees a CAE-capable token of alice's tenant.
    let me = b
        .get(app.at("/me"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let body: Value = me.json().await.unwrap();
    assert_eq!(body["xms_cc"], json!(["cp1"]), "{body}");
    assert_eq!(body["tid"], CONTOSO_TENANT);
    assert_eq!(body["iss"], tenant_issuer(&idp, CONTOSO_TENANT));

    // The user's access is revoked at the API (CAE): tokens issued before
    // now + 60 s are challenged. The provider's clock runs 120 s ahead, so
    // the next tokens it issues are after the cutoff.
    let cutoff = unix_seconds(std::time::SystemTime::now()) + 60;
    revoked_before.store(cutoff, Ordering::SeqCst);
    idp.set_clock_offset(120);

    let challenged = get_page(&b, &app.at("/me")).await;
    assert_eq!(challenged.status(), 302);
    let signin = Url::parse(&location(&challenged)).unwrap();
    assert_eq!(signin.path(), "/account/signin");
    let asked: Value = serde_json::from_str(
        &signin
            .query_pairs()
            .find(|(k, _)| k == "claims")
            .expect("the challenge's claims")
            .1,
    )
    .unwrap();
    assert_eq!(
        asked,
        json!({ "access_token": { "nbf": { "essential": true, "value": cutoff.to_string() } } })
    );

    // Sign-in again with the challenge's claims merged with the capabilities.
    let to_idp = get_page(&b, signin.as_str()).await;
    let authorize = Url::parse(&location(&to_idp)).unwrap();
    let sent: Value = serde_json::from_str(
        &authorize
            .query_pairs()
            .find(|(k, _)| k == "claims")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        sent,
        json!({ "access_token": {
            "nbf": { "essential": true, "value": cutoff.to_string() },
            "xms_cc": { "values": ["cp1"] }
        }})
    );
    let cb = follow_until(&b, authorize.as_str(), &app.at("/signin-oidc")).await;
    let back = get_page(&b, &cb).await;
    assert_eq!(back.status(), 303);
    assert_eq!(location(&back), app.at("/me"), "back where the user was");

    let me = b
        .get(app.at("/me"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let body: Value = me.json().await.unwrap();
    assert!(body["iat"].as_i64().unwrap() >= cutoff, "{body}");
    assert_eq!(body["xms_cc"], json!(["cp1"]));
    // One session: the new sign-in replaced the old one in this browser.
    assert_eq!(app.session_count().await, 1);
}
