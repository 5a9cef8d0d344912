//! Logout tests: RP-initiated logout at /logout, back-channel and
//! front-channel notifications, ending all sessions of a user, and the test
//! hooks. A real `DevIdp` and tiny axum "clients" run on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, rand, signature};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idweb_devidp::{DevClient, DevIdp, DevIdpConfig, LogoutChannel, LogoutDelivery, subject_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

// ---------------------------------------------------------------------------
// A tiny relying party that records the logout notifications it receives.

/// A back-channel logout request as received.
#[derive(Debug, Clone)]
struct BackRequest {
    content_type: Option<String>,
    form: Vec<(String, String)>,
}

impl BackRequest {
    fn logout_token(&self) -> &str {
        assert_eq!(self.form.len(), 1, "exactly one form parameter");
        assert_eq!(self.form[0].0, "logout_token");
        &self.form[0].1
    }
}

#[derive(Clone, Default)]
struct Recorder {
    back: Arc<Mutex<Vec<BackRequest>>>,
    front: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// Status answered to back-channel requests (0 = 200).
    status: Arc<AtomicU16>,
    /// Delay before answering back-channel requests, in milliseconds.
    delay_ms: Arc<AtomicU64>,
}

struct Receiver {
    /// `http://127.0.0.1:PORT`
    base: String,
    rec: Recorder,
}

impl Receiver {
    async fn start() -> Receiver {
        let rec = Recorder::default();
        let app = axum::Router::new()
            .route("/backchannel-logout", post(back))
            .route("/frontchannel-logout", get(front))
            .with_state(rec.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { base, rec }
    }

    fn back_uri(&self) -> String {
        format!("{}/backchannel-logout", self.base)
    }

    fn front_uri(&self) -> String {
        format!("{}/frontchannel-logout", self.base)
    }

    fn redirect_uri(&self) -> String {
        format!("{}/callback", self.base)
    }

    fn signed_out_uri(&self) -> String {
        format!("{}/signed-out", self.base)
    }

    fn back_requests(&self) -> Vec<BackRequest> {
        self.rec.back.lock().unwrap().clone()
    }

    fn front_requests(&self) -> Vec<HashMap<String, String>> {
        self.rec.front.lock().unwrap().clone()
    }

    fn answer_with(&self, status: u16) {
        self.rec.status.store(status, Ordering::SeqCst);
    }
}

async fn back(State(rec): State<Recorder>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let request = BackRequest {
        content_type: headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        form: url::form_urlencoded::parse(&body).into_owned().collect(),
    };
    rec.back.lock().unwrap().push(request);
    let delay = rec.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match rec.status.load(Ordering::SeqCst) {
        0 => AxumStatus::OK,
        code => AxumStatus::from_u16(code).unwrap(),
    }
}

async fn front(State(rec): State<Recorder>, RawQuery(query): RawQuery) -> AxumStatus {
    let query = query.unwrap_or_default();
    let params = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    rec.front.lock().unwrap().push(params);
    AxumStatus::OK
}

// ---------------------------------------------------------------------------
// Provider, clients, browsers

const SECRET: &str = "s3cret";

/// A client with back-channel logout to `rp`.
fn back_client(id: &str, rp: &Receiver) -> DevClient {
    DevClient::new(id, SECRET, rp.redirect_uri())
        .with_post_logout_redirect_uri(rp.signed_out_uri())
        .with_backchannel_logout(rp.back_uri())
}

/// A client with front-channel logout to `rp` (with a query of its own,
/// which must be kept).
fn front_client(id: &str, rp: &Receiver) -> DevClient {
    DevClient::new(id, SECRET, rp.redirect_uri())
        .with_post_logout_redirect_uri(rp.signed_out_uri())
        .with_frontchannel_logout(format!("{}?app={id}", rp.front_uri()))
}

async fn start(clients: Vec<DevClient>) -> DevIdp {
    let config = DevIdpConfig {
        clients,
        auto_login: true,
        ..DevIdpConfig::default()
    };
    DevIdp::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .unwrap()
}

/// A browser: cookie store, no automatic redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn pkce() -> (String, String) {
    let mut buf = [0u8; 32];
    rand::fill(&mut buf).unwrap();
    let verifier = b64(&buf);
    let challenge = b64(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref());
    (verifier, challenge)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn location(response: &reqwest::Response) -> url::Url {
    let location = response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap();
    url::Url::parse(location).unwrap()
}

fn query_of(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Signs `browser` in to `client` (the user via `login_hint` and
/// auto-login, or silently through the IdP session when `None`) and returns
/// the token response.
async fn sign_in(
    idp: &DevIdp,
    browser: &reqwest::Client,
    client: &DevClient,
    username: Option<&str>,
) -> Value {
    let (verifier, challenge) = pkce();
    let redirect_uri = client.redirect_uris[0].as_str();
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", client.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("scope", "openid profile"),
        ("state", "st"),
        ("nonce", "n-123"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if let Some(username) = username {
        query.push(("login_hint", username));
    }
    let response = browser
        .get(format!("{}/authorize", idp.issuer()))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "authorize redirects");
    let params = query_of(&location(&response));
    let code = params.get("code").expect("a code").clone();
    let response = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(&client.client_id, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn id_token(tokens: &Value) -> &str {
    tokens["id_token"].as_str().expect("an ID token")
}

async fn logout(
    idp: &DevIdp,
    browser: &reqwest::Client,
    params: &[(&str, &str)],
) -> reqwest::Response {
    browser
        .get(format!("{}/logout", idp.issuer()))
        .query(params)
        .send()
        .await
        .unwrap()
}

/// The `src` of every iframe of an HTML page (entities decoded).
fn iframe_srcs(html: &str) -> Vec<String> {
    html.split("<iframe ")
        .skip(1)
        .map(|rest| {
            let start = rest.find("src=\"").unwrap() + 5;
            let end = start + rest[start..].find('"').unwrap();
            unescape(&rest[start..end])
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Whether a response clears the IdP session cookie.
fn clears_session_cookie(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .any(|v| v.starts_with("devidp_session=;") && v.contains("Max-Age=0"))
}

fn has_set_cookie(response: &reqwest::Response) -> bool {
    response.headers().get("set-cookie").is_some()
}

// ---------------------------------------------------------------------------
// JWTs

fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let payload = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        serde_json::from_slice(&payload).unwrap(),
    )
}

/// Verifies a JWS with the JWKS key named by its `kid` (RS256 only).
async fn verify_with_jwks(idp: &DevIdp, token: &str) -> Result<(), String> {
    let (header, _) = jwt_parts(token);
    if header["alg"] != "RS256" {
        return Err(format!("alg is {}", header["alg"]));
    }
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let jwks: Value = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let (signing_input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &sig,
        )
        .map_err(|_| "the signature does not verify".to_owned())
}

/// Checks a logout token against the spec and returns its claims.
async fn check_logout_token(idp: &DevIdp, token: &str, client_id: &str) -> Value {
    verify_with_jwks(idp, token).await.unwrap();
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["typ"], "logout+jwt");
    assert_eq!(header["alg"], "RS256");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], client_id);
    let iat = claims["iat"].as_i64().expect("iat");
    assert!((iat - now()).abs() <= 5, "iat is now");
    assert_eq!(claims["exp"].as_i64().expect("exp"), iat + 120);
    assert!(!claims["jti"].as_str().expect("jti").is_empty());
    assert_eq!(claims["events"], json!({ EVENT: {} }));
    assert!(claims.get("nonce").is_none(), "a logout token has no nonce");
    assert!(
        claims["sub"].is_string() || claims["sid"].is_string(),
        "sub or sid"
    );
    claims
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn rp_initiated_logout_notifies_back_and_front_channel_clients() {
    let rp_back = Receiver::start().await;
    let rp_front = Receiver::start().await;
    let back_app = back_client("back-app", &rp_back);
    let front_app = front_client("front-app", &rp_front);
    let idp = start(vec![back_app.clone(), front_app.clone()]).await;

    // One browser, two clients: the second sign-in is silent SSO.
    let browser = browser();
    let back_tokens = sign_in(&idp, &browser, &back_app, Some("alice")).await;
    let front_tokens = sign_in(&idp, &browser, &front_app, None).await;
    let (_, id_claims) = jwt_parts(id_token(&back_tokens));
    let (_, front_id_claims) = jwt_parts(id_token(&front_tokens));
    let sid = id_claims["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        front_id_claims["sid"],
        sid.as_str(),
        "SSO: same IdP session"
    );
    assert_eq!(idp.sessions_of("alice"), vec![sid.clone()]);

    let signed_out = rp_back.signed_out_uri();
    let response = logout(
        &idp,
        &browser,
        &[
            ("id_token_hint", id_token(&back_tokens)),
            ("post_logout_redirect_uri", &signed_out),
            ("state", "bye 123"),
        ],
    )
    .await;

    // The page: 200, no-store, one iframe per front-channel client.
    assert_eq!(response.status(), StatusCode::OK);
    assert!(clears_session_cookie(&response));
    let headers = response.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("frame-src {}", rp_front.base)),
        "CSP allows the iframe: {csp}"
    );
    let html = response.text().await.unwrap();
    let srcs = iframe_srcs(&html);
    assert_eq!(srcs.len(), 1, "one iframe: {html}");
    let src = url::Url::parse(&srcs[0]).unwrap();
    assert_eq!(
        format!("{}://{}{}", src.scheme(), src.authority(), src.path()),
        rp_front.front_uri()
    );
    let src_query = query_of(&src);
    assert_eq!(src_query["iss"], idp.issuer());
    assert_eq!(src_query["sid"], sid);
    assert_eq!(
        src_query["app"], "front-app",
        "the registered query is kept"
    );

    // The continue link and the meta refresh carry state.
    let expected_target = format!("{signed_out}?state=bye+123");
    assert!(
        html.contains(&format!("href=\"{expected_target}\"")),
        "continue link: {html}"
    );
    assert!(
        html.contains(&format!(
            "<meta http-equiv=\"refresh\" content=\"1;url={expected_target}\">"
        )),
        "meta refresh: {html}"
    );

    // The back-channel client got exactly one well-formed logout token,
    // before the browser got the page.
    let requests = rp_back.back_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let claims = check_logout_token(&idp, requests[0].logout_token(), "back-app").await;
    assert_eq!(claims["sub"], id_claims["sub"]);
    assert_eq!(claims["sid"], sid.as_str());
    assert!(rp_front.back_requests().is_empty());
    assert!(rp_back.front_requests().is_empty());

    // The browser loads the iframe: the front-channel client learns iss and sid.
    let frame = browser.get(src.as_str()).send().await.unwrap();
    assert_eq!(frame.status(), StatusCode::OK);
    let front = rp_front.front_requests();
    assert_eq!(front.len(), 1);
    assert_eq!(front[0]["iss"], idp.issuer());
    assert_eq!(front[0]["sid"], sid);

    // What was recorded.
    let deliveries = idp.logout_deliveries();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    let back = &deliveries[0];
    assert_eq!(back.client_id, "back-app");
    assert_eq!(back.channel, LogoutChannel::BackChannel);
    assert_eq!(back.uri, rp_back.back_uri());
    assert_eq!(back.sid.as_deref(), Some(sid.as_str()));
    assert_eq!(back.sub, subject_for("alice"));
    assert_eq!(back.status, Some(200));
    assert_eq!(back.error, None);
    let front = &deliveries[1];
    assert_eq!(front.client_id, "front-app");
    assert_eq!(front.channel, LogoutChannel::FrontChannel);
    assert_eq!(front.uri, srcs[0]);
    assert_eq!(front.status, None);
    assert_eq!(front.error, None);

    // The IdP session is gone and its cookie cleared: no silent SSO.
    assert!(idp.sessions_of("alice").is_empty());
    let (_, challenge) = pkce();
    let response = browser
        .get(format!("{}/authorize", idp.issuer()))
        .query(&[
            ("response_type", "code"),
            ("client_id", "back-app"),
            ("redirect_uri", back_app.redirect_uris[0].as_str()),
            ("scope", "openid"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the login page again");
    assert!(response.text().await.unwrap().contains("Sign in"));
    idp.shutdown().await;
}

#[tokio::test]
async fn logout_with_only_back_channel_clients_redirects_with_state() {
    let rp = Receiver::start().await;
    let app = back_client("app", &rp);
    let idp = start(vec![app.clone()]).await;

    // GET: 302.
    let browser1 = browser();
    let tokens = sign_in(&idp, &browser1, &app, Some("alice")).await;
    let signed_out = rp.signed_out_uri();
    let response = logout(
        &idp,
        &browser1,
        &[
            ("id_token_hint", id_token(&tokens)),
            ("post_logout_redirect_uri", &signed_out),
            ("state", "s1"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(clears_session_cookie(&response));
    let target = location(&response);
    assert_eq!(target.as_str(), format!("{signed_out}?state=s1"));
    assert_eq!(rp.back_requests().len(), 1);

    // POST: 303.
    let browser2 = browser();
    let tokens = sign_in(&idp, &browser2, &app, Some("alice")).await;
    let response = browser2
        .post(format!("{}/logout", idp.issuer()))
        .form(&[
            ("id_token_hint", id_token(&tokens)),
            ("post_logout_redirect_uri", signed_out.as_str()),
            ("state", "s2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response).as_str(),
        format!("{signed_out}?state=s2")
    );
    assert_eq!(rp.back_requests().len(), 2);

    // Without post_logout_redirect_uri: the provider's own page, and state
    // is not used.
    let browser3 = browser();
    let tokens = sign_in(&idp, &browser3, &app, Some("alice")).await;
    let response = logout(
        &idp,
        &browser3,
        &[("id_token_hint", id_token(&tokens)), ("state", "s3")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("location").is_none());
    assert!(response.text().await.unwrap().contains("Signed out"));
    assert_eq!(rp.back_requests().len(), 3);
    idp.shutdown().await;
}

#[tokio::test]
async fn unregistered_post_logout_redirect_uri_is_an_error_and_changes_nothing() {
    let rp_back = Receiver::start().await;
    let rp_front = Receiver::start().await;
    let back_app = back_client("back-app", &rp_back);
    let front_app = front_client("front-app", &rp_front);
    let idp = start(vec![back_app.clone(), front_app.clone()]).await;
    let browser = browser();
    let tokens = sign_in(&idp, &browser, &back_app, Some("alice")).await;
    sign_in(&idp, &browser, &front_app, None).await;
    let sessions = idp.sessions_of("alice");
    assert_eq!(sessions.len(), 1);

    let front_signed_out = rp_front.signed_out_uri();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        // Not registered at all.
        vec![
            ("id_token_hint", id_token(&tokens)),
            ("post_logout_redirect_uri", "http://evil.example/"),
            ("state", "x"),
        ],
        vec![
            ("client_id", "back-app"),
            ("post_logout_redirect_uri", "http://evil.example/"),
        ],
        // Registered, but for another client than the hint's.
        vec![
            ("id_token_hint", id_token(&tokens)),
            ("post_logout_redirect_uri", front_signed_out.as_str()),
        ],
        // No client to check it against.
        vec![("post_logout_redirect_uri", front_signed_out.as_str())],
        // client_id and id_token_hint disagree.
        vec![
            ("id_token_hint", id_token(&tokens)),
            ("client_id", "front-app"),
            ("post_logout_redirect_uri", front_signed_out.as_str()),
        ],
        // Not an ID token of this provider.
        vec![("id_token_hint", "not.a.token")],
        // Repeated parameter.
        vec![
            ("id_token_hint", id_token(&tokens)),
            ("state", "a"),
            ("state", "b"),
        ],
    ];
    for params in &cases {
        let response = logout(&idp, &browser, params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(response.headers().get("location").is_none(), "no redirect");
        assert!(!has_set_cookie(&response), "the cookie is left alone");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<iframe"), "no iframe");
        assert!(!html.contains("http-equiv"), "no meta refresh");
        assert!(!html.contains("evil.example"), "the URI is not echoed");
    }

    // Nothing else happened: no notification, the session lives on and
    // still signs in silently.
    assert!(rp_back.back_requests().is_empty());
    assert!(rp_front.front_requests().is_empty());
    assert!(idp.logout_deliveries().is_empty());
    assert_eq!(idp.sessions_of("alice"), sessions);
    let again = sign_in(&idp, &browser, &back_app, None).await;
    let (_, claims) = jwt_parts(id_token(&again));
    assert_eq!(claims["sid"], sessions[0].as_str());
    idp.shutdown().await;
}

#[tokio::test]
async fn clients_not_requiring_the_session_get_no_sid() {
    let rp = Receiver::start().await;
    let mut app = DevClient::new("nosid-app", SECRET, rp.redirect_uri())
        .with_backchannel_logout(rp.back_uri())
        .with_frontchannel_logout(rp.front_uri());
    app.backchannel_logout_session_required = false;
    app.frontchannel_logout_session_required = false;
    let idp = start(vec![app.clone()]).await;
    let browser = browser();
    let tokens = sign_in(&idp, &browser, &app, Some("alice")).await;
    let (_, id_claims) = jwt_parts(id_token(&tokens));

    let response = logout(&idp, &browser, &[("id_token_hint", id_token(&tokens))]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let srcs = iframe_srcs(&response.text().await.unwrap());
    assert_eq!(srcs, vec![rp.front_uri()], "the bare front-channel URI");

    let requests = rp.back_requests();
    assert_eq!(requests.len(), 1);
    let claims = check_logout_token(&idp, requests[0].logout_token(), "nosid-app").await;
    assert_eq!(claims["sub"], id_claims["sub"]);
    assert!(claims.get("sid").is_none(), "no sid: {claims}");

    let deliveries = idp.logout_deliveries();
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries.iter().all(|d| d.sid.is_none()));
    idp.shutdown().await;
}

#[tokio::test]
async fn end_all_sessions_notifies_every_session_of_the_user_only() {
    let rp_back = Receiver::start().await;
    let rp_front = Receiver::start().await;
    let rp_bob = Receiver::start().await;
    let back_app = back_client("back-app", &rp_back);
    let front_app = front_client("front-app", &rp_front);
    let bob_app = back_client("bob-app", &rp_bob);
    let idp = start(vec![back_app.clone(), front_app.clone(), bob_app.clone()]).await;

    // Alice in two browsers (two IdP sessions), bob in a third.
    let alice1 = browser();
    let alice2 = browser();
    let bob = browser();
    sign_in(&idp, &alice1, &back_app, Some("alice")).await;
    sign_in(&idp, &alice1, &front_app, None).await;
    sign_in(&idp, &alice2, &back_app, Some("alice")).await;
    sign_in(&idp, &bob, &back_app, Some("bob")).await;
    sign_in(&idp, &bob, &bob_app, None).await;
    let alice_sids = idp.sessions_of("alice");
    assert_eq!(alice_sids.len(), 2);
    let bob_sids = idp.sessions_of("bob");
    assert_eq!(bob_sids.len(), 1);

    let deliveries = idp.end_all_sessions("alice").await;

    // Two back-channel notifications to back-app, one per session; the
    // front-channel client could not be notified without a browser.
    let back: Vec<&LogoutDelivery> = deliveries
        .iter()
        .filter(|d| d.channel == LogoutChannel::BackChannel)
        .collect();
    assert_eq!(back.len(), 2, "{deliveries:?}");
    assert!(
        back.iter()
            .all(|d| d.client_id == "back-app" && d.status == Some(200))
    );
    let front: Vec<&LogoutDelivery> = deliveries
        .iter()
        .filter(|d| d.channel == LogoutChannel::FrontChannel)
        .collect();
    assert_eq!(front.len(), 1);
    assert_eq!(front[0].client_id, "front-app");
    assert!(front[0].error.as_deref().unwrap().contains("browser"));
    assert!(rp_front.front_requests().is_empty());

    let requests = rp_back.back_requests();
    assert_eq!(requests.len(), 2);
    let mut sids = Vec::new();
    let mut jtis = Vec::new();
    for request in &requests {
        let claims = check_logout_token(&idp, request.logout_token(), "back-app").await;
        assert_eq!(claims["sub"], subject_for("alice"));
        sids.push(claims["sid"].as_str().unwrap().to_owned());
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    sids.sort();
    assert_eq!(sids, alice_sids);
    assert_ne!(jtis[0], jtis[1], "jti is unique");

    // Bob is untouched.
    assert!(rp_bob.back_requests().is_empty());
    assert_eq!(idp.sessions_of("bob"), bob_sids);
    assert!(idp.sessions_of("alice").is_empty());
    assert_eq!(idp.logout_deliveries(), deliveries);

    // Both of alice's browsers must sign in again; bob's still signs in silently.
    for browser in [&alice1, &alice2] {
        let (_, challenge) = pkce();
        let response = browser
            .get(format!("{}/authorize", idp.issuer()))
            .query(&[
                ("response_type", "code"),
                ("client_id", "back-app"),
                ("redirect_uri", back_app.redirect_uris[0].as_str()),
                ("scope", "openid"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "login page");
    }
    sign_in(&idp, &bob, &bob_app, None).await;

    // Nothing left to end.
    assert!(idp.end_all_sessions("alice").await.is_empty());
    idp.shutdown().await;
}

#[tokio::test]
async fn admin_end_sessions_endpoint_notifies_and_reports() {
    let rp = Receiver::start().await;
    let app = back_client("back-app", &rp);
    let idp = start(vec![app.clone()]).await;
    let browser = browser();
    sign_in(&idp, &browser, &app, Some("alice")).await;

    let http = reqwest::Client::new();
    let form = http
        .get(format!("{}/admin/end-sessions", idp.issuer()))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let form = form.text().await.unwrap();
    assert!(form.contains("value=\"alice\""));
    assert!(form.contains("1 live session)"));

    let response = http
        .post(format!("{}/admin/end-sessions", idp.issuer()))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let html = response.text().await.unwrap();
    assert!(html.contains("Ended 1 IdP session of"), "{html}");
    assert!(html.contains("back-app"));
    assert!(html.contains("HTTP 200"));
    assert_eq!(rp.back_requests().len(), 1);
    assert!(idp.sessions_of("alice").is_empty());

    let response = http
        .post(format!("{}/admin/end-sessions", idp.issuer()))
        .form(&[("username", "mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = http
        .post(format!("{}/admin/end-sessions", idp.issuer()))
        .form(&[("username", "alice"), ("username", "bob")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    idp.shutdown().await;
}

#[tokio::test]
async fn logout_deliveries_record_status_and_failures() {
    let rp_400 = Receiver::start().await;
    rp_400.answer_with(400);
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://{}/backchannel-logout",
            listener.local_addr().unwrap()
        )
    };
    let refusing = back_client("refusing-app", &rp_400);
    let unreachable = DevClient::new("unreachable-app", SECRET, "http://127.0.0.1:9/cb")
        .with_backchannel_logout(closed.clone());
    let broken = DevClient::new("broken-app", SECRET, "http://127.0.0.1:9/cb")
        .with_backchannel_logout("http://127.0.0.1:9/logout#fragment")
        .with_frontchannel_logout("http://127.0.0.1:10/not-the-redirect-origin");
    let idp = start(vec![refusing.clone(), unreachable.clone(), broken.clone()]).await;
    let browser = browser();
    let tokens = sign_in(&idp, &browser, &refusing, Some("alice")).await;
    sign_in(&idp, &browser, &unreachable, None).await;
    sign_in(&idp, &browser, &broken, None).await;

    let response = logout(&idp, &browser, &[("id_token_hint", id_token(&tokens))]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(!html.contains("<iframe"), "no usable front-channel URI");

    let deliveries = idp.logout_deliveries();
    let by_client = |id: &str| -> Vec<&LogoutDelivery> {
        deliveries.iter().filter(|d| d.client_id == id).collect()
    };
    let refused = by_client("refusing-app");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].status, Some(400));
    assert_eq!(refused[0].error, None);
    assert_eq!(rp_400.back_requests().len(), 1);

    let failed = by_client("unreachable-app");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].uri, closed);
    assert_eq!(failed[0].status, None);
    assert!(failed[0].error.is_some());

    let broken = by_client("broken-app");
    assert_eq!(broken.len(), 2);
    assert_eq!(broken[0].channel, LogoutChannel::BackChannel);
    assert!(broken[0].error.as_deref().unwrap().contains("fragment"));
    assert_eq!(broken[1].channel, LogoutChannel::FrontChannel);
    assert!(broken[1].error.as_deref().unwrap().contains("redirect URI"));
    idp.shutdown().await;
}

#[tokio::test]
async fn slow_back_channel_client_times_out_after_five_seconds() {
    let rp = Receiver::start().await;
    rp.rec.delay_ms.store(30_000, Ordering::SeqCst);
    let app = back_client("slow-app", &rp);
    let idp = start(vec![app.clone()]).await;
    let browser = browser();
    sign_in(&idp, &browser, &app, Some("alice")).await;

    let started = std::time::Instant::now();
    let deliveries = idp.end_all_sessions("alice").await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, None);
    assert!(
        deliveries[0]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out")
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn mint_jwt_signs_arbitrary_header_and_claims() {
    let idp = start(vec![]).await;
    let claims = json!({
        "iss": "whoever",
        "nonce": "not allowed in a logout token",
        "events": { "urn:example:other": {} },
        "nested": [1, 2, { "x": null }],
    });
    let token = idp.mint_jwt(
        json!({ "typ": "JWT", "alg": "none", "extra": 7 }),
        claims.clone(),
    );
    verify_with_jwks(&idp, &token).await.unwrap();
    let (header, got) = jwt_parts(&token);
    assert_eq!(header["alg"], "RS256", "alg is overwritten");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["extra"], 7);
    assert!(header["kid"].is_string());
    assert_eq!(got, claims);

    // No typ unless given; a kid of the caller's is kept.
    let token = idp.mint_jwt(json!({}), json!({ "a": 1 }));
    let (header, _) = jwt_parts(&token);
    assert!(header.get("typ").is_none());
    verify_with_jwks(&idp, &token).await.unwrap();
    let token = idp.mint_jwt(json!({ "kid": "unknown-kid" }), json!({ "a": 1 }));
    let (header, _) = jwt_parts(&token);
    assert_eq!(header["kid"], "unknown-kid");
    assert!(verify_with_jwks(&idp, &token).await.is_err());
    idp.shutdown().await;
}

#[tokio::test]
async fn logout_token_for_is_well_formed_and_sent_nowhere() {
    let idp = start(vec![]).await;
    let token = idp.logout_token_for("some-app", Some("sub-1"), Some("sid-1"));
    let claims = check_logout_token(&idp, &token, "some-app").await;
    assert_eq!(claims["sub"], "sub-1");
    assert_eq!(claims["sid"], "sid-1");

    let token = idp.logout_token_for("some-app", Some("sub-1"), None);
    let claims = check_logout_token(&idp, &token, "some-app").await;
    assert!(claims.get("sid").is_none());
    let token = idp.logout_token_for("some-app", None, Some("sid-1"));
    let claims = check_logout_token(&idp, &token, "some-app").await;
    assert!(claims.get("sub").is_none());

    let again = idp.logout_token_for("some-app", Some("sub-1"), Some("sid-1"));
    let (_, first) = jwt_parts(&idp.logout_token_for("some-app", Some("sub-1"), Some("sid-1")));
    let (_, second) = jwt_parts(&again);
    assert_ne!(first["jti"], second["jti"]);
    assert!(idp.logout_deliveries().is_empty());
    idp.shutdown().await;
}

#[tokio::test]
async fn expired_hint_signed_by_a_retired_key_is_accepted() {
    let rp = Receiver::start().await;
    let app = back_client("app", &rp);
    let idp = start(vec![app.clone()]).await;
    let browser = browser();
    let tokens = sign_in(&idp, &browser, &app, Some("alice")).await;

    // The ID token is two hours past its expiry and its key is retired
    // (but still published).
    idp.set_clock_offset(2 * 3600);
    idp.rotate_keys(true);
    let signed_out = rp.signed_out_uri();
    let response = logout(
        &idp,
        &browser,
        &[
            ("id_token_hint", id_token(&tokens)),
            ("post_logout_redirect_uri", &signed_out),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(location(&response).as_str(), signed_out);
    assert_eq!(rp.back_requests().len(), 1);
    // The logout token is signed with the new key.
    let token = rp.back_requests()[0].logout_token().to_owned();
    verify_with_jwks(&idp, &token).await.unwrap();
    let (token_header, _) = jwt_parts(&token);
    let (id_header, _) = jwt_parts(id_token(&tokens));
    assert_ne!(token_header["kid"], id_header["kid"]);

    // Once the old key is gone, the hint is no longer valid.
    idp.rotate_keys(false);
    let response = logout(&idp, &browser, &[("id_token_hint", id_token(&tokens))]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    idp.shutdown().await;
}

#[tokio::test]
async fn hint_ends_its_session_without_the_browser_cookie() {
    let rp = Receiver::start().await;
    let app = back_client("app", &rp);
    let idp = start(vec![app.clone()]).await;
    let browser = browser();
    let tokens = sign_in(&idp, &browser, &app, Some("alice")).await;
    let (_, id_claims) = jwt_parts(id_token(&tokens));

    // Another user agent, without the IdP cookie, with the hint only.
    let other = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = logout(&idp, &other, &[("id_token_hint", id_token(&tokens))]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(clears_session_cookie(&response));
    assert!(idp.sessions_of("alice").is_empty());
    let requests = rp.back_requests();
    assert_eq!(requests.len(), 1);
    let claims = check_logout_token(&idp, requests[0].logout_token(), "app").await;
    assert_eq!(claims["sid"], id_claims["sid"]);

    // A logout token is not an ID token, and is no valid hint.
    let response = logout(
        &idp,
        &other,
        &[("id_token_hint", requests[0].logout_token())],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    idp.shutdown().await;
}

#[tokio::test]
async fn logout_without_hint_asks_the_user_first() {
    let rp = Receiver::start().await;
    let app = back_client("app", &rp);
    let idp = start(vec![app.clone()]).await;
    let browser = browser();
    sign_in(&idp, &browser, &app, Some("alice")).await;
    let signed_out = rp.signed_out_uri();
    let params = [
        ("client_id", "app"),
        ("post_logout_redirect_uri", signed_out.as_str()),
        ("state", "s<1>"),
    ];

    // GET: a confirmation page; nothing happens yet (not even with confirm=yes).
    for confirm in [None, Some("yes")] {
        let mut query = params.to_vec();
        if let Some(confirm) = confirm {
            query.push(("confirm", confirm));
        }
        let response = logout(&idp, &browser, &query).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!has_set_cookie(&response));
        let html = response.text().await.unwrap();
        assert!(html.contains("<form method=\"post\" action=\"/logout\">"));
        assert!(html.contains("name=\"state\" value=\"s&lt;1&gt;\""));
        assert!(html.contains("name=\"confirm\" value=\"yes\""));
        assert_eq!(idp.sessions_of("alice").len(), 1);
        assert!(rp.back_requests().is_empty());
    }

    // The user confirms: the form is posted with the IdP cookie.
    let mut form = params.to_vec();
    form.push(("confirm", "yes"));
    let response = browser
        .post(format!("{}/logout", idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(clears_session_cookie(&response));
    assert_eq!(
        query_of(&location(&response))["state"],
        "s<1>",
        "state is passed back"
    );
    assert!(idp.sessions_of("alice").is_empty());
    assert_eq!(rp.back_requests().len(), 1);
    idp.shutdown().await;
}

#[tokio::test]
async fn hint_of_another_session_needs_confirmation() {
    let rp = Receiver::start().await;
    let app = back_client("app", &rp);
    let idp = start(vec![app.clone()]).await;
    let alice = browser();
    let bob = browser();
    let alice_tokens = sign_in(&idp, &alice, &app, Some("alice")).await;
    sign_in(&idp, &bob, &app, Some("bob")).await;

    // Bob's browser presents alice's ID token: ask, end nothing.
    let response = logout(&idp, &bob, &[("id_token_hint", id_token(&alice_tokens))]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Bob Example"));
    assert_eq!(idp.sessions_of("alice").len(), 1);
    assert_eq!(idp.sessions_of("bob").len(), 1);

    // A logout_hint naming someone else than the session's user: ask too.
    let response = logout(
        &idp,
        &alice,
        &[
            ("id_token_hint", id_token(&alice_tokens)),
            ("logout_hint", "bob"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("name=\"confirm\""));
    assert_eq!(idp.sessions_of("alice").len(), 1);

    // A matching logout_hint: no question.
    let response = logout(
        &idp,
        &alice,
        &[
            ("id_token_hint", id_token(&alice_tokens)),
            ("logout_hint", "alice"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Signed out"));
    assert!(idp.sessions_of("alice").is_empty());
    assert_eq!(idp.sessions_of("bob").len(), 1);
    assert!(rp.back_requests().len() == 1);
    idp.shutdown().await;
}

#[tokio::test]
async fn signing_in_as_another_user_ends_the_previous_session() {
    let rp = Receiver::start().await;
    let app = back_client("app", &rp);
    let idp = start(vec![app.clone()]).await;
    let browser = browser();
    let alice_tokens = sign_in(&idp, &browser, &app, Some("alice")).await;
    let (_, alice_claims) = jwt_parts(id_token(&alice_tokens));

    // The same browser signs in as bob: alice's IdP session ends, and the
    // client hears of it before the browser gets its code.
    sign_in(&idp, &browser, &app, Some("bob")).await;
    assert!(idp.sessions_of("alice").is_empty());
    assert_eq!(idp.sessions_of("bob").len(), 1);
    let requests = rp.back_requests();
    assert_eq!(requests.len(), 1);
    let claims = check_logout_token(&idp, requests[0].logout_token(), "app").await;
    assert_eq!(claims["sub"], subject_for("alice"));
    assert_eq!(claims["sid"], alice_claims["sid"]);

    // Signing in again as the same user keeps the session: no notification.
    sign_in(&idp, &browser, &app, Some("bob")).await;
    assert_eq!(rp.back_requests().len(), 1);
    idp.shutdown().await;
}

// ---------------------------------------------------------------------------
// The demo's stumbles: pages a newcomer meets

#[tokio::test]
async fn admin_end_sessions_page_loads_the_front_channel_iframes() {
    let back_rp = Receiver::start().await;
    let front_rp = Receiver::start().await;
    let back = back_client("back-app", &back_rp);
    let front = front_client("front-app", &front_rp);
    let idp = start(vec![back.clone(), front.clone()]).await;
    let browser = browser();
    sign_in(&idp, &browser, &back, Some("alice")).await;
    sign_in(&idp, &browser, &front, None).await;
    let sid = idp.sessions_of("alice").remove(0);

    let http = reqwest::Client::new();
    let form = http
        .get(format!("{}/admin/end-sessions", idp.issuer()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        form.contains("front-channel iframe the next page loads"),
        "the form says how front-channel apps are told: {form}"
    );
    let response = http
        .post(format!("{}/admin/end-sessions", idp.issuer()))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains(&format!("frame-src {}", front_rp.base)),
        "{csp}"
    );
    let html = response.text().await.unwrap();
    assert!(
        !html.contains("Skipped"),
        "front channel not skipped: {html}"
    );
    assert!(!html.contains("needs the user's browser"), "{html}");
    let srcs = iframe_srcs(&html);
    assert_eq!(srcs.len(), 1, "{html}");
    let src = url::Url::parse(&srcs[0]).unwrap();
    assert!(srcs[0].starts_with(&front_rp.front_uri()), "{src}");
    let q = query_of(&src);
    assert_eq!(q["sid"], sid);
    assert_eq!(q["iss"], idp.issuer());
    assert!(html.contains("back-app") && html.contains("answered HTTP 200"));
    assert!(html.contains("front-app") && html.contains("iframe rendered in this page"));
    // The recorded delivery says it was rendered, not skipped.
    let front_delivery = idp
        .logout_deliveries()
        .into_iter()
        .find(|d| d.channel == LogoutChannel::FrontChannel)
        .unwrap();
    assert_eq!(front_delivery.error, None);
    // The API without a browser still cannot do it, and says so.
    sign_in(&idp, &browser, &front, Some("bob")).await;
    let deliveries = idp.end_all_sessions("bob").await;
    assert!(deliveries[0].error.as_deref().unwrap().contains("Skipped"));
    idp.shutdown().await;
}

#[tokio::test]
async fn the_signed_out_page_lists_back_and_front_channel_apps() {
    let back_rp = Receiver::start().await;
    let front_rp = Receiver::start().await;
    let back = back_client("back-app", &back_rp);
    let front = front_client("front-app", &front_rp);
    let idp = start(vec![back.clone(), front.clone()]).await;
    let browser = browser();
    let tokens = sign_in(&idp, &browser, &back, Some("alice")).await;
    sign_in(&idp, &browser, &front, None).await;
    let response = logout(
        &idp,
        &browser,
        &[
            ("id_token_hint", id_token(&tokens)),
            ("post_logout_redirect_uri", &back_rp.signed_out_uri()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    let listed = &html[html.find("id=\"notified\"").expect("a list of apps")..];
    assert!(listed.contains("back-app"), "{html}");
    assert!(listed.contains("back-channel logout token"), "{html}");
    assert!(listed.contains("answered HTTP 200"), "{html}");
    assert!(listed.contains("front-app"), "{html}");
    assert!(listed.contains("front-channel iframe"), "{html}");
    assert!(html.contains("id=\"continue\""), "{html}");

    // Without a redirect target and only back-channel apps: the page lists them too.
    let tokens = sign_in(&idp, &browser, &back, Some("bob")).await;
    let response = logout(&idp, &browser, &[("id_token_hint", id_token(&tokens))]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("<h1>Signed out</h1>"), "{html}");
    assert!(
        html.contains("back-app") && html.contains("answered HTTP 200"),
        "{html}"
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn the_start_page_stylesheet_navigation_and_error_pages() {
    let rp = Receiver::start().await;
    let back = back_client("back-app", &rp);
    let front = front_client("front-app", &rp);
    let config = DevIdpConfig {
        clients: vec![back, front],
        nav_links: vec![("Control room".into(), "http://127.0.0.1:9/".into())],
        ..DevIdpConfig::default()
    };
    let idp = DevIdp::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .unwrap();
    let http = reqwest::Client::new();

    let home = http.get(format!("{}/", idp.issuer())).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(
        home.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = home.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("style-src 'self'"), "{csp}");
    let html = home.text().await.unwrap();
    assert!(
        html.contains("href=\"/.well-known/openid-configuration\""),
        "{html}"
    );
    assert!(html.contains("href=\"/admin/end-sessions\""), "{html}");
    assert!(
        html.contains(&format!("<a href=\"{}/\">back-app</a>", rp.base)),
        "{html}"
    );
    assert!(html.contains("back-channel") && html.contains("front-channel"));
    assert!(html.contains("Alice Example") && html.contains("Bob Example"));
    assert!(html.contains("<link rel=\"stylesheet\" href=\"/style.css\">"));
    assert!(
        html.contains("<a href=\"http://127.0.0.1:9/\">Control room</a>"),
        "{html}"
    );

    let css = http
        .get(format!("{}/style.css", idp.issuer()))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.text().await.unwrap(), idweb_devidp::STYLESHEET);

    // An error page offers a way back, and carries the navigation.
    let bad = http
        .get(format!("{}/logout", idp.issuer()))
        .query(&[("id_token_hint", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let html = bad.text().await.unwrap();
    assert!(html.contains("id_token_hint is invalid"), "{html}");
    assert!(html.contains("id=\"way-back\" href=\"/\""), "{html}");
    assert!(html.contains("Control room"), "{html}");
    idp.shutdown().await;
}

#[tokio::test]
async fn a_state_file_keeps_keys_sessions_and_refresh_tokens_across_a_restart() {
    let rp = Receiver::start().await;
    let app = back_client("back-app", &rp);
    let dir = std::env::temp_dir().join(format!("devidp-state-{}-{}", std::process::id(), now()));
    let file = dir.join("idp-state.json");
    let config = DevIdpConfig {
        clients: vec![app.clone()],
        auto_login: true,
        state_file: Some(file.clone()),
        ..DevIdpConfig::default()
    };
    let idp = DevIdp::start(([127, 0, 0, 1], 0).into(), config.clone())
        .await
        .unwrap();
    let addr = idp.local_addr();
    let jwks_before: Value = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let browser = browser();
    // A sign-in with a refresh token.
    let tokens = {
        let (verifier, challenge) = pkce();
        let redirect_uri = app.redirect_uris[0].as_str();
        let response = browser
            .get(format!("{}/authorize", idp.issuer()))
            .query(&[
                ("response_type", "code"),
                ("client_id", "back-app"),
                ("redirect_uri", redirect_uri),
                ("scope", "openid offline_access"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("login_hint", "alice"),
            ])
            .send()
            .await
            .unwrap();
        let code = query_of(&location(&response))["code"].clone();
        reqwest::Client::new()
            .post(format!("{}/token", idp.issuer()))
            .basic_auth("back-app", Some(SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let sids = idp.sessions_of("alice");
    assert_eq!(sids.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the state file is the owner's only");
    }
    idp.shutdown().await;

    // The same provider again, on the same address and file.
    let idp = DevIdp::start(addr, config).await.unwrap();
    let jwks_after: Value = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_after, jwks_before, "the same signing keys");
    assert_eq!(idp.sessions_of("alice"), sids, "the same IdP session");
    // The refresh token issued before the restart still works.
    let refreshed = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth("back-app", Some(SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    // The ID token issued before the restart is a valid hint: the
    // RP-initiated logout ends the session instead of a 400.
    let response = logout(
        &idp,
        &reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        &[
            ("id_token_hint", id_token(&tokens)),
            ("post_logout_redirect_uri", &rp.signed_out_uri()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(idp.sessions_of("alice").is_empty());
    assert_eq!(rp.back_requests().len(), 1, "App told by back-channel");
    idp.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
