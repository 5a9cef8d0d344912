//! Shared helpers: the dev IdP and its tokens, keys the IdP does not know, a
//! test API on a bound listener, and the "never echoed" check.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::handler::Handler;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idweb_api::{ApiCaller, ApiRejection, ClaimsChallenge, JwtBearer, RequireRole, RequireScope};
use idweb_devidp::{DevClient, DevIdp, DevIdpConfig};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

pub const CLIENT_ID: &str = "api-test-client";
pub const CLIENT_SECRET: &str = "api-test-secret";
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
pub const AUDIENCE: &str = "api://todo";
pub const READ: &str = "api://todo/todos.read";
pub const WRITE: &str = "api://todo/todos.write";
pub const REALM: &str = "test-api";

/// A dev IdP with auto login and the test client registered.
pub async fn dev_idp() -> DevIdp {
    let idp = DevIdp::start(
        ([127, 0, 0, 1], 0).into(),
        DevIdpConfig {
            auto_login: true,
            ..DevIdpConfig::default()
        },
    )
    .await
    .expect("start the dev IdP");
    idp.register_client(DevClient::new(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI));
    idp
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An access token from the dev IdP's `client_credentials` grant.
pub async fn client_token(idp: &DevIdp, scope: &str) -> String {
    let resp = http()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A user's access token through the dev IdP's code flow with PKCE.
pub async fn user_token(idp: &DevIdp, username: &str, scope: &str) -> String {
    let http = http();
    let mut verifier_bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut verifier_bytes).unwrap();
    let verifier = URL_SAFE_NO_PAD.encode(verifier_bytes);
    let challenge = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    let mut authorize = Url::parse(&format!("{}/authorize", idp.issuer())).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", &format!("openid {scope}"))
        .append_pair("state", "s1")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", username);
    let resp = http.get(authorize).send().await.unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let location = Url::parse(resp.headers()[LOCATION].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let resp = http
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The JSON header and claims of a compact JWT (not verified).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap()
    };
    (part(), part())
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Good access-token claims for the test API, issued by `issuer` now.
pub fn claims(issuer: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 600,
        "scope": format!("{READ} {WRITE}"),
        "client_id": CLIENT_ID,
    })
}

/// An ES256 key of our own: the dev IdP does not know it.
pub struct TestKey {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl TestKey {
    pub fn generate(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        Self {
            kid: kid.to_owned(),
            pair,
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": "ES256",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// Signs `claims` with ES256 under `header` (alg and kid added unless present).
    pub fn sign(&self, header: Value, claims: &Value) -> String {
        let mut header = header.as_object().cloned().unwrap_or_default();
        header.entry("alg").or_insert_with(|| json!("ES256"));
        header.entry("kid").or_insert_with(|| json!(self.kid));
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// The test API: one route per way of requiring things.
pub fn api(jwt: &JwtBearer) -> Router {
    async fn me(caller: ApiCaller) -> axum::Json<Value> {
        axum::Json(json!({
            "sub": caller.sub(),
            "iss": caller.issuer(),
            "scopes": caller.scopes(),
            "roles": caller.roles(),
            "client_id": caller.client_id(),
            "exp": caller.expires_at(),
        }))
    }
    async fn who(caller: Option<ApiCaller>) -> String {
        caller.map_or_else(|| "anonymous".to_owned(), |c| c.sub().to_owned())
    }
    async fn purge(caller: ApiCaller) -> Result<&'static str, ApiRejection> {
        caller.require_role("Todo.Admin")?;
        Ok("purged")
    }
    async fn read_or_app(caller: ApiCaller) -> Result<&'static str, ApiRejection> {
        caller.require_scope_or_role(&[READ], &["Todo.Read.All"])?;
        Ok("read")
    }
    async fn step_up(caller: ApiCaller) -> Result<&'static str, ApiRejection> {
        let acrs = caller.claim("acrs").and_then(Value::as_array);
        if !acrs.is_some_and(|a| a.iter().any(|v| v == "c1")) {
            return Err(caller.claims_challenge(ClaimsChallenge::auth_context("c1")));
        }
        Ok("stepped up")
    }
    async fn ok() -> &'static str {
        "ok"
    }
    Router::new()
        .route("/me", get(me))
        .route("/who", get(who))
        .route(
            "/todos",
            get(ok.layer(RequireScope::any([READ]))).post(ok.layer(RequireScope::any([WRITE]))),
        )
        .route(
            "/admin",
            get(ok).route_layer(RequireRole::any(["Todo.Admin"])),
        )
        .route("/purge", post(purge))
        .route("/read-or-app", get(read_or_app))
        .route("/step-up", get(step_up))
        .route("/healthz", get(ok))
        .layer(jwt.layer())
}

/// Serves `router` on 127.0.0.1 and returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// The validator for `issuer` with the test settings and `clock`.
pub async fn jwt_for(issuer: &str, clock: Arc<dyn idweb::Clock>) -> JwtBearer {
    JwtBearer::builder(issuer)
        .with_audience(AUDIENCE)
        .with_realm(REALM)
        .with_clock(clock)
        .build()
        .await
        .expect("build the validator")
}

/// A response, read once: status, challenge, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub challenge: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        Answer {
            status,
            challenge,
            headers,
            body,
        }
    }

    pub fn challenge(&self) -> &str {
        self.challenge
            .as_deref()
            .expect("a WWW-Authenticate header")
    }

    /// Asserts 401 `invalid_token` whose description contains `needle`.
    pub fn assert_invalid_token(&self, needle: &str) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "{self:?}");
        let c = self.challenge();
        assert!(
            c.starts_with(&format!(
                r#"Bearer realm="{REALM}", error="invalid_token", error_description=""#
            )),
            "{c}"
        );
        assert!(c.contains(needle), "{needle}: {c}");
        let body: Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(body["error"], "invalid_token");
    }

    /// Asserts that no part of `token` longer than 8 characters (its
    /// signature, its payload, the whole) appears anywhere in the answer.
    pub fn assert_not_echoed(&self, token: &str) {
        let mut pieces: Vec<&str> = token.split('.').filter(|p| p.len() > 8).collect();
        pieces.push(token);
        for piece in pieces {
            assert!(!self.body.contains(piece), "the body echoes the token");
            for (name, value) in &self.headers {
                assert!(
                    !String::from_utf8_lossy(value.as_bytes()).contains(piece),
                    "header {name} echoes the token"
                );
            }
        }
    }
}

/// GET `url` with `Authorization: Bearer token`.
pub async fn get_with(url: &str, token: &str) -> Answer {
    Answer::read(http().get(url).bearer_auth(token).send().await.unwrap()).await
}
