//! Integration tests: a real `DevIdp` on 127.0.0.1:0 driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, rand, signature};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use idweb_devidp::{DevClient, DevIdp, DevIdpConfig, Fault, subject_for};
use reqwest::StatusCode;
use serde_json::Value;

const CLIENT_ID: &str = "test-client";
const CLIENT_SECRET: &str = "test-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

fn test_client() -> DevClient {
    DevClient {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![REDIRECT_URI.into()],
        post_logout_redirect_uris: vec!["http://127.0.0.1:9/signed-out".into()],
        backchannel_logout_uri: None,
        backchannel_logout_session_required: true,
        frontchannel_logout_uri: None,
        frontchannel_logout_session_required: true,
    }
}

async fn start(auto_login: bool) -> DevIdp {
    let config = DevIdpConfig {
        clients: vec![test_client()],
        auto_login,
        ..DevIdpConfig::default()
    };
    DevIdp::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn random(len: usize) -> String {
    let mut buf = vec![0u8; len];
    rand::fill(&mut buf).unwrap();
    b64(&buf)
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = random(32);
    let challenge = b64(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref());
    (verifier, challenge)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The query parameters of a redirect's Location.
fn location_params(response: &reqwest::Response) -> (String, HashMap<String, String>) {
    let location = response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap();
    let url = url::Url::parse(location).unwrap();
    let base = format!("{}://{}{}", url.scheme(), url.authority(), url.path());
    (base, url.query_pairs().into_owned().collect())
}

/// The `devidp_session` cookie set by a response, as `name=value`.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("devidp_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// Result of a successful authorization request.
struct Authorized {
    code: String,
    verifier: String,
    params: HashMap<String, String>,
    cookie: Option<String>,
}

async fn authorize_raw(
    idp: &DevIdp,
    params: &[(&str, &str)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = http()
        .get(format!("{}/authorize", idp.issuer()))
        .query(params);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// Runs /authorize for `username` (login_hint, auto_login) with `scope` and `nonce`.
async fn authorize(idp: &DevIdp, username: &str, scope: &str, nonce: &str) -> Authorized {
    let (verifier, challenge) = pkce();
    let response = authorize_raw(
        idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("scope", scope),
            ("state", "st-123"),
            ("nonce", nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login_hint", username),
        ],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let cookie = session_cookie(&response);
    let (base, params) = location_params(&response);
    assert_eq!(base, REDIRECT_URI);
    let code = params.get("code").expect("a code").clone();
    Authorized {
        code,
        verifier,
        params,
        cookie,
    }
}

async fn token_request(idp: &DevIdp, form: &[(&str, &str)]) -> reqwest::Response {
    http()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn exchange(idp: &DevIdp, code: &str, verifier: &str) -> reqwest::Response {
    token_request(
        idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn json_ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "body: {body}");
    body
}

/// Asserts an OAuth error response and returns its body.
async fn json_error(response: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "body: {body}");
    assert!(body["error_description"].is_string());
    body
}

/// Full login for alice with a fresh nonce; returns the token response.
async fn login_tokens(idp: &DevIdp, scope: &str) -> (Authorized, Value) {
    let auth = authorize(idp, "alice", scope, "n-0S6_WzA2Mj").await;
    let tokens = json_ok(exchange(idp, &auth.code, &auth.verifier).await).await;
    (auth, tokens)
}

fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let payload = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        serde_json::from_slice(&payload).unwrap(),
    )
}

async fn fetch_jwks(idp: &DevIdp) -> Vec<Value> {
    let jwks = json_ok(
        http()
            .get(format!("{}/jwks", idp.issuer()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    jwks["keys"].as_array().unwrap().clone()
}

/// Verifies a JWS by hand with the JWKS key named by its `kid`.
async fn verify_signature(idp: &DevIdp, token: &str) -> Result<(), String> {
    let (header, _) = jwt_parts(token);
    assert_eq!(header["alg"], "RS256");
    let kid = header["kid"].as_str().unwrap();
    let keys = fetch_jwks(idp).await;
    let key = keys
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
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
        .map_err(|_| "signature does not verify".to_owned())
}

fn at_hash(access_token: &str) -> String {
    let hash = digest::digest(&digest::SHA256, access_token.as_bytes());
    b64(&hash.as_ref()[..16])
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn discovery_document_has_required_fields() {
    let idp = start(false).await;
    let issuer = idp.issuer().to_owned();
    assert_eq!(issuer, format!("http://{}", idp.local_addr()));
    assert!(!issuer.ends_with('/'));
    let doc = json_ok(
        http()
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(doc["issuer"], issuer);
    assert_eq!(doc["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(doc["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(doc["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(doc["userinfo_endpoint"], format!("{issuer}/userinfo"));
    assert_eq!(doc["end_session_endpoint"], format!("{issuer}/logout"));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["response_modes_supported"],
        serde_json::json!(["query"])
    );
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(
        doc["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let scopes = doc["scopes_supported"].as_array().unwrap();
    for scope in ["openid", "profile", "email", "offline_access"] {
        assert!(
            scopes.contains(&Value::from(scope)),
            "missing scope {scope}"
        );
    }
    let claims = doc["claims_supported"].as_array().unwrap();
    for claim in ["sub", "iss", "name", "email", "preferred_username", "sid"] {
        assert!(
            claims.contains(&Value::from(claim)),
            "missing claim {claim}"
        );
    }
    for flag in [
        "backchannel_logout_supported",
        "backchannel_logout_session_supported",
        "frontchannel_logout_supported",
        "frontchannel_logout_session_supported",
        "authorization_response_iss_parameter_supported",
    ] {
        assert_eq!(doc[flag], true, "{flag}");
    }
    idp.shutdown().await;
}

#[tokio::test]
async fn jwks_publishes_one_rsa_signing_key() {
    let idp = start(false).await;
    let keys = fetch_jwks(&idp).await;
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert!(!key["kid"].as_str().unwrap().is_empty());
    let n = key["n"].as_str().unwrap();
    let e = key["e"].as_str().unwrap();
    assert!(!n.contains('=') && !n.contains('+') && !n.contains('/'));
    assert_eq!(
        URL_SAFE_NO_PAD.decode(n).unwrap().len(),
        256,
        "RSA-2048 modulus"
    );
    assert_eq!(e, "AQAB");
    idp.shutdown().await;
}

#[tokio::test]
async fn code_flow_with_auto_login_issues_verified_tokens() {
    let idp = start(true).await;
    let auth = authorize(&idp, "alice", "openid profile email", "n-0S6_WzA2Mj").await;
    assert_eq!(auth.params["state"], "st-123");
    assert_eq!(auth.params["iss"], idp.issuer());
    assert!(auth.cookie.is_some(), "an IdP session cookie is set");

    let response = exchange(&idp, &auth.code, &auth.verifier).await;
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    let tokens = json_ok(response).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "openid profile email");
    assert!(tokens.get("refresh_token").is_none(), "no offline_access");
    let access_token = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();

    verify_signature(&idp, id_token).await.unwrap();
    let (header, claims) = jwt_parts(id_token);
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["sub"], subject_for("alice"));
    assert_ne!(claims["sub"], "alice");
    assert_eq!(claims["aud"], CLIENT_ID);
    assert!(claims.get("azp").is_none());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["at_hash"], at_hash(access_token));
    let sid = claims["sid"].as_str().unwrap();
    assert!(sid.len() >= 16);
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now()).abs() < 60);
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 3600);
    assert!(claims["auth_time"].as_i64().unwrap() <= iat);

    verify_signature(&idp, access_token).await.unwrap();
    let (header, at) = jwt_parts(access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(at["iss"], idp.issuer());
    assert_eq!(at["sub"], subject_for("alice"));
    assert_eq!(at["aud"], format!("{}/userinfo", idp.issuer()));
    assert_eq!(at["client_id"], CLIENT_ID);
    assert_eq!(at["scope"], "openid profile email");
    assert_eq!(at["sid"], sid);
    assert!(at["jti"].is_string());

    let userinfo = json_ok(
        http()
            .get(format!("{}/userinfo", idp.issuer()))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(userinfo["sub"], subject_for("alice"));
    assert_eq!(userinfo["name"], "Alice Example");
    assert_eq!(userinfo["email"], "alice@example.com");
    assert_eq!(userinfo["preferred_username"], "alice");

    assert_eq!(idp.stats().authorization_code, 1);
    idp.shutdown().await;
}

#[tokio::test]
async fn userinfo_rejects_missing_and_invalid_tokens() {
    let idp = start(false).await;
    let url = format!("{}/userinfo", idp.issuer());
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let response = http()
        .get(&url)
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn code_replay_is_invalid_grant_and_revokes_refresh_token() {
    let idp = start(true).await;
    let (auth, tokens) = login_tokens(&idp, "openid offline_access").await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();

    let replay = exchange(&idp, &auth.code, &auth.verifier).await;
    json_error(replay, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let refresh = token_request(
        &idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    json_error(refresh, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let access_token = tokens["access_token"].as_str().unwrap();
    let userinfo = http()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED);

    let stats = idp.stats();
    assert_eq!(stats.authorization_code, 1);
    assert_eq!(stats.token_errors, 2);
    idp.shutdown().await;
}

#[tokio::test]
async fn wrong_pkce_verifier_is_invalid_grant() {
    let idp = start(true).await;
    let auth = authorize(&idp, "alice", "openid", "n").await;
    let (other_verifier, _) = pkce();
    let response = exchange(&idp, &auth.code, &other_verifier).await;
    json_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let missing = token_request(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &auth.code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    json_error(missing, StatusCode::BAD_REQUEST, "invalid_grant").await;
    idp.shutdown().await;
}

#[tokio::test]
async fn wrong_redirect_uri_at_token_is_invalid_grant() {
    let idp = start(true).await;
    let mut client = test_client();
    client.redirect_uris.push("http://127.0.0.1:9/other".into());
    idp.register_client(client);
    let auth = authorize(&idp, "alice", "openid", "n").await;
    let response = token_request(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &auth.code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", &auth.verifier),
        ],
    )
    .await;
    json_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    idp.shutdown().await;
}

#[tokio::test]
async fn bad_client_secret_is_invalid_client_401() {
    let idp = start(true).await;
    let auth = authorize(&idp, "alice", "openid", "n").await;
    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT_ID, Some("wrong-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", auth.code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", auth.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    json_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let post = http()
        .post(format!("{}/token", idp.issuer()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert!(post.headers().get("www-authenticate").is_none());
    json_error(post, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // The code was not consumed by the failed attempts.
    json_ok(exchange(&idp, &auth.code, &auth.verifier).await).await;
    idp.shutdown().await;
}

#[tokio::test]
async fn client_secret_post_works() {
    let idp = start(true).await;
    let auth = authorize(&idp, "bob", "openid", "n").await;
    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", auth.code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", auth.verifier.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    let tokens = json_ok(response).await;
    let (_, claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], subject_for("bob"));
    assert_eq!(claims["name"], "Bob Example");
    idp.shutdown().await;
}

#[tokio::test]
async fn client_secret_basic_is_form_urldecoded() {
    let idp = start(false).await;
    idp.register_client(DevClient::new(
        "client:with spaces",
        "p@ss:w rd+%",
        "http://127.0.0.1:9/cb",
    ));
    // RFC 6749 §2.3.1: form-urlencode id and secret before Basic encoding.
    let credentials = STANDARD.encode("client%3Awith+spaces:p%40ss%3Aw+rd%2B%25");
    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .header("authorization", format!("Basic {credentials}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let tokens = json_ok(response).await;
    let (_, claims) = jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "client:with spaces");
    idp.shutdown().await;
}

#[tokio::test]
async fn refresh_token_is_rotated_and_old_one_rejected() {
    let idp = start(true).await;
    let (_, tokens) = login_tokens(&idp, "openid profile offline_access").await;
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, first_claims) = jwt_parts(tokens["id_token"].as_str().unwrap());

    let refreshed = json_ok(
        token_request(
            &idp,
            &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
        )
        .await,
    )
    .await;
    let rt2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    assert_ne!(refreshed["access_token"], tokens["access_token"]);
    let id_token = refreshed["id_token"].as_str().unwrap();
    verify_signature(&idp, id_token).await.unwrap();
    let (_, claims) = jwt_parts(id_token);
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert_eq!(claims["sid"], first_claims["sid"]);
    assert!(claims.get("nonce").is_none());
    assert_eq!(
        claims["at_hash"],
        at_hash(refreshed["access_token"].as_str().unwrap())
    );

    // Narrowing the scope is allowed, widening it is not.
    let narrowed = json_ok(
        token_request(
            &idp,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt2),
                ("scope", "openid"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(narrowed["scope"], "openid");
    let rt3 = narrowed["refresh_token"].as_str().unwrap().to_owned();
    let widened = token_request(
        &idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt3),
            ("scope", "openid email"),
        ],
    )
    .await;
    json_error(widened, StatusCode::BAD_REQUEST, "invalid_scope").await;

    // Reusing a rotated token fails and revokes the whole family.
    let reuse = token_request(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
    )
    .await;
    json_error(reuse, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let latest = token_request(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt3)],
    )
    .await;
    json_error(latest, StatusCode::BAD_REQUEST, "invalid_grant").await;

    assert_eq!(idp.stats().refresh_token, 2);
    idp.shutdown().await;
}

#[tokio::test]
async fn revoke_refresh_tokens_invalidates_users_tokens() {
    let idp = start(true).await;
    let (_, alice) = login_tokens(&idp, "openid offline_access").await;
    let bob_auth = authorize(&idp, "bob", "openid offline_access", "n").await;
    let bob = json_ok(exchange(&idp, &bob_auth.code, &bob_auth.verifier).await).await;

    idp.revoke_refresh_tokens("alice");

    let response = token_request(
        &idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", alice["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    json_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let response = token_request(
        &idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", bob["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    json_ok(response).await;
    idp.shutdown().await;
}

#[tokio::test]
async fn client_credentials_issues_access_token_only() {
    let idp = start(false).await;
    let tokens = json_ok(
        token_request(
            &idp,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "api://orders/read"),
            ],
        )
        .await,
    )
    .await;
    assert!(tokens.get("refresh_token").is_none());
    assert!(tokens.get("id_token").is_none());
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "api://orders/read");
    let access_token = tokens["access_token"].as_str().unwrap();
    verify_signature(&idp, access_token).await.unwrap();
    let (header, claims) = jwt_parts(access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["sub"], CLIENT_ID);
    assert_eq!(claims["client_id"], CLIENT_ID);
    assert_eq!(claims["aud"], "api://orders");
    assert!(claims.get("sid").is_none());

    let bad = token_request(
        &idp,
        &[("grant_type", "client_credentials"), ("scope", "openid")],
    )
    .await;
    json_error(bad, StatusCode::BAD_REQUEST, "invalid_scope").await;
    let stats = idp.stats();
    assert_eq!(stats.client_credentials, 1);
    assert_eq!(stats.token_errors, 1);
    idp.shutdown().await;
}

#[tokio::test]
async fn sso_second_authorize_is_silent_with_same_sid() {
    let idp = start(true).await;
    let (first, tokens) = login_tokens(&idp, "openid").await;
    let cookie = first.cookie.clone().expect("session cookie");
    let (_, first_claims) = jwt_parts(tokens["id_token"].as_str().unwrap());

    let (verifier, challenge) = pkce();
    let response = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "none"),
        ],
        Some(&cookie),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let (_, params) = location_params(&response);
    let code = params.get("code").expect("silent sign-in yields a code");
    let tokens = json_ok(exchange(&idp, code, &verifier).await).await;
    let (_, claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sid"], first_claims["sid"]);
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    idp.shutdown().await;
}

#[tokio::test]
async fn prompt_none_without_session_is_login_required() {
    let idp = start(true).await;
    let (_, challenge) = pkce();
    let response = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("state", "s1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "none"),
            ("login_hint", "alice"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let (base, params) = location_params(&response);
    assert_eq!(base, REDIRECT_URI);
    assert_eq!(params["error"], "login_required");
    assert_eq!(params["state"], "s1");
    assert_eq!(params["iss"], idp.issuer());
    assert!(!params.contains_key("code"));
    idp.shutdown().await;
}

#[tokio::test]
async fn missing_pkce_is_redirected_invalid_request() {
    let idp = start(true).await;
    let response = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("state", "s2"),
            ("login_hint", "alice"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let (_, params) = location_params(&response);
    assert_eq!(params["error"], "invalid_request");
    assert!(params["error_description"].contains("PKCE"));
    assert_eq!(params["state"], "s2");
    assert_eq!(params["iss"], idp.issuer());
    idp.shutdown().await;
}

#[tokio::test]
async fn rotate_keys_without_keep_replaces_kid() {
    let idp = start(true).await;
    let old_kid = fetch_jwks(&idp).await[0]["kid"].clone();

    idp.rotate_keys(true);
    let keys = fetch_jwks(&idp).await;
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().any(|k| k["kid"] == old_kid));

    idp.rotate_keys(false);
    let keys = fetch_jwks(&idp).await;
    assert_eq!(keys.len(), 1);
    let new_kid = keys[0]["kid"].clone();
    assert_ne!(new_kid, old_kid);

    let (_, tokens) = login_tokens(&idp, "openid").await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let (header, _) = jwt_parts(id_token);
    assert_eq!(header["kid"], new_kid);
    verify_signature(&idp, id_token).await.unwrap();
    idp.shutdown().await;
}

/// Issues an ID token after injecting `fault`, returning it and the nonce sent.
async fn faulty_id_token(idp: &DevIdp, fault: Fault) -> (String, Value) {
    idp.inject_fault(fault);
    let (_, tokens) = login_tokens(idp, "openid").await;
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let (_, claims) = jwt_parts(&id_token);
    // The fault is cleared afterwards: the next ID token is sound.
    let (_, next) = login_tokens(idp, "openid").await;
    let next_token = next["id_token"].as_str().unwrap();
    verify_signature(idp, next_token).await.unwrap();
    let (_, next_claims) = jwt_parts(next_token);
    assert_eq!(next_claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(next_claims["aud"], CLIENT_ID);
    assert_eq!(next_claims["iss"], idp.issuer());
    assert!(next_claims["exp"].as_i64().unwrap() > now());
    (id_token, claims)
}

#[tokio::test]
async fn fault_wrong_nonce() {
    let idp = start(true).await;
    let (token, claims) = faulty_id_token(&idp, Fault::WrongNonce).await;
    verify_signature(&idp, &token).await.unwrap();
    assert!(claims["nonce"].is_string());
    assert_ne!(claims["nonce"], "n-0S6_WzA2Mj");
    idp.shutdown().await;
}

#[tokio::test]
async fn fault_tampered_signature() {
    let idp = start(true).await;
    let (token, claims) = faulty_id_token(&idp, Fault::TamperedSignature).await;
    assert!(verify_signature(&idp, &token).await.is_err());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    idp.shutdown().await;
}

#[tokio::test]
async fn fault_wrong_audience() {
    let idp = start(true).await;
    let (token, claims) = faulty_id_token(&idp, Fault::WrongAudience).await;
    verify_signature(&idp, &token).await.unwrap();
    assert_eq!(claims["aud"], "someone-else");
    idp.shutdown().await;
}

#[tokio::test]
async fn fault_expired() {
    let idp = start(true).await;
    let (token, claims) = faulty_id_token(&idp, Fault::Expired).await;
    verify_signature(&idp, &token).await.unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert!(exp < now() - 60, "exp is in the past");
    assert!(iat < exp, "iat is before exp");
    idp.shutdown().await;
}

#[tokio::test]
async fn fault_unknown_kid() {
    let idp = start(true).await;
    let (token, _) = faulty_id_token(&idp, Fault::UnknownKid).await;
    let (header, _) = jwt_parts(&token);
    let kid = header["kid"].clone();
    assert!(kid.is_string());
    assert!(fetch_jwks(&idp).await.iter().all(|k| k["kid"] != kid));
    let err = verify_signature(&idp, &token).await.unwrap_err();
    assert!(err.contains("not in JWKS"));
    idp.shutdown().await;
}

#[tokio::test]
async fn fault_wrong_issuer() {
    let idp = start(true).await;
    let (token, claims) = faulty_id_token(&idp, Fault::WrongIssuer).await;
    verify_signature(&idp, &token).await.unwrap();
    assert!(claims["iss"].is_string());
    assert_ne!(claims["iss"], idp.issuer());
    idp.shutdown().await;
}

#[tokio::test]
async fn clock_offset_shifts_token_times() {
    let idp = start(true).await;
    idp.set_clock_offset(7200);
    let (_, tokens) = login_tokens(&idp, "openid").await;
    let (_, claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - (now() + 7200)).abs() < 60);
    idp.shutdown().await;
}

#[tokio::test]
async fn login_page_lists_users_and_escapes_input() {
    let idp = start(false).await;
    let (_, challenge) = pkce();
    let evil_state = "\"><script>alert(1)</script>";
    let response = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("state", evil_state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("NOT FOR PRODUCTION"));
    assert!(html.contains("action=\"/authorize/login\""));
    assert!(html.contains("name=\"username\" value=\"alice\""));
    assert!(html.contains("name=\"username\" value=\"bob\""));
    assert!(html.contains("Alice Example"));
    assert!(html.contains("Bob Example"));
    assert!(!html.contains("<script>"));
    assert!(html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    idp.shutdown().await;
}

#[tokio::test]
async fn login_form_post_signs_in_chosen_user() {
    let idp = start(false).await;
    let (verifier, challenge) = pkce();
    let form = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid"),
        ("state", "s3"),
        ("nonce", "n3"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("username", "bob"),
    ];
    let response = http()
        .post(format!("{}/authorize/login", idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("devidp_session="));
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    assert!(cookie.contains("Path=/"));
    let (_, params) = location_params(&response);
    assert_eq!(params["state"], "s3");
    let tokens = json_ok(exchange(&idp, &params["code"], &verifier).await).await;
    let (_, claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], subject_for("bob"));
    assert_eq!(claims["nonce"], "n3");
    idp.shutdown().await;
}

#[tokio::test]
async fn unregistered_redirect_uri_shows_error_page_not_redirect() {
    let idp = start(true).await;
    let (_, challenge) = pkce();
    let response = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://evil.example/callback"),
            ("scope", "openid"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login_hint", "alice"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    let html = response.text().await.unwrap();
    assert!(html.contains("redirect_uri"));
    assert!(!html.contains("evil.example"));

    let unknown_client = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", "nobody"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
        ],
        None,
    )
    .await;
    assert_eq!(unknown_client.status(), StatusCode::BAD_REQUEST);
    assert!(unknown_client.headers().get("location").is_none());
    idp.shutdown().await;
}

#[tokio::test]
async fn logout_ends_session_and_redirects_with_state() {
    let idp = start(true).await;
    let (auth, tokens) = login_tokens(&idp, "openid").await;
    let cookie = auth.cookie.unwrap();
    let response = http()
        .get(format!("{}/logout", idp.issuer()))
        .query(&[
            ("id_token_hint", tokens["id_token"].as_str().unwrap()),
            ("post_logout_redirect_uri", "http://127.0.0.1:9/signed-out"),
            ("state", "bye"),
        ])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let (base, params) = location_params(&response);
    assert_eq!(base, "http://127.0.0.1:9/signed-out");
    assert_eq!(params["state"], "bye");

    // The IdP session is gone: prompt=none now fails.
    let (_, challenge) = pkce();
    let response = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "none"),
        ],
        Some(&cookie),
    )
    .await;
    let (_, params) = location_params(&response);
    assert_eq!(params["error"], "login_required");

    // An unregistered post_logout_redirect_uri is never redirected to.
    let response = http()
        .get(format!("{}/logout", idp.issuer()))
        .query(&[
            ("client_id", CLIENT_ID),
            ("post_logout_redirect_uri", "http://evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    idp.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_errors() {
    let idp = start(false).await;
    let big = "a".repeat(128 * 1024);
    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type={big}"))
        .send()
        .await
        .unwrap();
    json_error(response, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request").await;

    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .header("authorization", "Basic !!!not-base64")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    json_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let response = token_request(&idp, &[("grant_type", "password")]).await;
    json_error(response, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;

    let response = authorize_raw(&idp, &[("client_id", "%00\u{0}")], None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    idp.shutdown().await;
}

#[test]
fn debug_redacts_client_secret() {
    let debug = format!("{:?}", test_client());
    assert!(debug.contains(CLIENT_ID));
    assert!(!debug.contains(CLIENT_SECRET));
}
