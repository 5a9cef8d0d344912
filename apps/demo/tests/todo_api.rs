//! The sample todo API as a resource server: real HTTP against the dev IdP's
//! access tokens (client credentials and code flow with PKCE).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idweb_demo::todo_api::{TodoApiConfig, router};
use idweb_devidp::{DevClient, DevIdp, DevIdpConfig};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

const CLIENT_ID: &str = "todo-test-client";
const CLIENT_SECRET: &str = "todo-test-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
const READ: &str = "api://todo/todos.read";
const WRITE: &str = "api://todo/todos.write";
const READ_WRITE: &str = "api://todo/todos.read api://todo/todos.write";

/// A dev IdP, the todo API trusting it, and an HTTP client that does not
/// follow redirects.
struct Env {
    idp: DevIdp,
    api: String,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Env {
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
        let app = router(TodoApiConfig {
            issuer: idp.issuer().to_owned(),
            audience: "api://todo".to_owned(),
            required_scope_read: READ.to_owned(),
            required_scope_write: WRITE.to_owned(),
        })
        .await
        .expect("build the todo API");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API");
        let api = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Env { idp, api, http }
    }

    /// An access token from the `client_credentials` grant.
    async fn client_token(&self, scope: &str) -> String {
        let resp = self
            .http
            .post(format!("{}/token", self.idp.issuer()))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        body["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// A user's access token through the code flow with PKCE (auto login).
    async fn user_token(&self, username: &str) -> String {
        let (verifier, challenge) = pkce();
        let mut authorize = Url::parse(&format!("{}/authorize", self.idp.issuer())).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", &format!("openid {READ_WRITE}"))
            .append_pair("state", "s1")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("login_hint", username);
        let resp = self.http.get(authorize).send().await.unwrap();
        assert!(resp.status().is_redirection(), "{}", resp.status());
        let location = Url::parse(resp.headers()[LOCATION].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(REDIRECT_URI), "{location}");
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        let resp = self
            .http
            .post(format!("{}/token", self.idp.issuer()))
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
        body["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    async fn list(&self, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}/api/todos", self.api));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    async fn create(&self, token: &str, title: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/todos", self.api))
            .bearer_auth(token)
            .json(&json!({ "title": title }))
            .send()
            .await
            .unwrap()
    }

    /// The public keys the IdP publishes now.
    async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/jwks", self.idp.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// The `WWW-Authenticate` header of a response.
fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(WWW_AUTHENTICATE)
        .expect("a WWW-Authenticate header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The JSON header and claims of a compact JWT (not verified).
fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap()
    };
    (part(), part())
}

fn titles(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| item["title"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn valid_user_token_lists_the_two_sample_items() {
    let env = Env::start().await;
    let token = env.user_token("alice").await;

    let resp = env.list(Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let items: Value = resp.json().await.unwrap();
    assert_eq!(
        items,
        json!([
            { "id": 1, "title": "Try idweb", "done": false },
            { "id": 2, "title": "Sign out everywhere", "done": false },
        ])
    );
}

#[tokio::test]
async fn items_are_per_user() {
    let env = Env::start().await;
    let alice = env.user_token("alice").await;
    let bob = env.user_token("bob").await;

    let resp = env.create(&alice, "Alice's secret plan").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["title"], "Alice's secret plan");
    assert_eq!(created["done"], false);

    let alice_items: Value = env.list(Some(&alice)).await.json().await.unwrap();
    assert_eq!(
        titles(&alice_items),
        ["Try idweb", "Sign out everywhere", "Alice's secret plan"]
    );
    let bob_items: Value = env.list(Some(&bob)).await.json().await.unwrap();
    assert_eq!(titles(&bob_items), ["Try idweb", "Sign out everywhere"]);

    // Nor can bob change or delete alice's item.
    let id = created["id"].as_u64().unwrap();
    let url = format!("{}/api/todos/{id}", env.api);
    let resp = env
        .http
        .patch(&url)
        .bearer_auth(&bob)
        .json(&json!({ "done": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = env
        .http
        .delete(&url)
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let alice_items: Value = env.list(Some(&alice)).await.json().await.unwrap();
    assert_eq!(alice_items[2], created);
}

#[tokio::test]
async fn owner_can_complete_and_delete_items() {
    let env = Env::start().await;
    let alice = env.user_token("alice").await;
    let url = format!("{}/api/todos/1", env.api);

    let resp = env
        .http
        .patch(&url)
        .bearer_auth(&alice)
        .json(&json!({ "done": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(
        updated,
        json!({ "id": 1, "title": "Try idweb", "done": true })
    );

    let resp = env
        .http
        .delete(&url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let items: Value = env.list(Some(&alice)).await.json().await.unwrap();
    assert_eq!(titles(&items), ["Sign out everywhere"]);
}

#[tokio::test]
async fn titles_must_have_1_to_200_chars_and_bodies_at_most_16_kib() {
    let env = Env::start().await;
    let token = env.client_token(READ_WRITE).await;

    assert_eq!(
        env.create(&token, "").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let longest = "é".repeat(200);
    assert_eq!(
        env.create(&token, &longest).await.status(),
        StatusCode::CREATED
    );
    let too_long = "é".repeat(201);
    assert_eq!(
        env.create(&token, &too_long).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let huge = "x".repeat(17 * 1024);
    assert_eq!(
        env.create(&token, &huge).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );

    let items: Value = env.list(Some(&token)).await.json().await.unwrap();
    assert_eq!(items.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn no_token_is_401_without_error() {
    let env = Env::start().await;

    let resp = env.list(None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&resp), r#"Bearer realm="todo""#);
}

#[tokio::test]
async fn garbage_token_is_401_invalid_token() {
    let env = Env::start().await;
    let garbage = "not-a-jwt-but-a-secret-looking-string";

    let resp = env.list(Some(garbage)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(&resp);
    assert!(
        challenge.starts_with(r#"Bearer realm="todo", error="invalid_token", error_description=""#),
        "{challenge}"
    );
    let body = resp.text().await.unwrap();
    assert!(
        !challenge.contains(garbage) && !body.contains(garbage),
        "the token must not be echoed"
    );
}

#[tokio::test]
async fn token_for_another_audience_is_401() {
    let env = Env::start().await;
    let token = env.client_token("api://other/x").await;
    assert_eq!(jwt_parts(&token).1["aud"], "api://other");

    let resp = env.list(Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(&resp);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        challenge.contains("not intended for this API"),
        "{challenge}"
    );
}

#[tokio::test]
async fn expired_token_is_401() {
    let env = Env::start().await;
    env.idp.set_clock_offset(-2 * 3600);
    let token = env.client_token(READ_WRITE).await;
    env.idp.set_clock_offset(0);

    let resp = env.list(Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(&resp);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(challenge.contains("expired"), "{challenge}");
}

#[tokio::test]
async fn read_only_token_posting_is_403_insufficient_scope() {
    let env = Env::start().await;
    let token = env.client_token(READ).await;
    assert_eq!(env.list(Some(&token)).await.status(), StatusCode::OK);

    let resp = env.create(&token, "not allowed").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let challenge = challenge(&resp);
    assert!(
        challenge.starts_with(r#"Bearer realm="todo", error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.ends_with(r#"scope="api://todo/todos.write""#),
        "{challenge}"
    );
}

#[tokio::test]
async fn key_rotation_new_tokens_still_accepted() {
    let env = Env::start().await;
    let before = env.client_token(READ_WRITE).await;
    assert_eq!(env.list(Some(&before)).await.status(), StatusCode::OK);

    env.idp.rotate_keys(false);
    let after = env.client_token(READ_WRITE).await;
    assert_ne!(jwt_parts(&before).0["kid"], jwt_parts(&after).0["kid"]);

    assert_eq!(env.list(Some(&after)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn alg_none_token_is_401() {
    let env = Env::start().await;
    let real = env.client_token(READ_WRITE).await;
    assert_eq!(env.list(Some(&real)).await.status(), StatusCode::OK);

    // The real token's claims, unsigned.
    let (_, claims) = jwt_parts(&real);
    let header = json!({ "alg": "none", "typ": "at+jwt" });
    let forged = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );

    let resp = env.list(Some(&forged)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(&resp);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        challenge.contains("not a well-formed signed JWT"),
        "{challenge}"
    );
}

#[tokio::test]
async fn hs256_token_signed_with_the_jwks_modulus_is_401() {
    let env = Env::start().await;
    let real = env.client_token(READ_WRITE).await;
    assert_eq!(env.list(Some(&real)).await.status(), StatusCode::OK);

    // The real token's claims and kid, HMAC-signed with the public modulus.
    let (real_header, claims) = jwt_parts(&real);
    let kid = real_header["kid"].as_str().unwrap();
    let jwks = env.jwks().await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("the token's key in the JWKS");
    let modulus = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(kid.to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&modulus),
    )
    .unwrap();

    let resp = env.list(Some(&forged)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(&resp);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        challenge.contains("algorithm that is not accepted"),
        "{challenge}"
    );
}
