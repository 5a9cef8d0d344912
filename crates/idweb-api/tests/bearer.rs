//! Bearer-token validation over real HTTP, with tokens from the real dev IdP
//! and tokens forged every way a caller could: each gets the right status
//! and `WWW-Authenticate`, and the token never comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use idweb::{ManualClock, SystemClock};
use idweb_api::{JwtBearer, TypPolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A dev IdP, the test API trusting it (on a manual clock standing at now),
/// and the API's base URL.
struct Env {
    idp: idweb_devidp::DevIdp,
    clock: Arc<ManualClock>,
    api: String,
}

impl Env {
    async fn start() -> Env {
        let idp = dev_idp().await;
        let clock = Arc::new(ManualClock::starting_now());
        let jwt = jwt_for(idp.issuer(), clock.clone()).await;
        let api = serve(api(&jwt)).await;
        Env { idp, clock, api }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// GETs `path` with `token` and checks that it is not echoed.
    async fn get(&self, path: &str, token: &str) -> Answer {
        let answer = get_with(&self.url(path), token).await;
        answer.assert_not_echoed(token);
        answer
    }

    /// A token signed by the dev IdP's current key with exactly this header
    /// (plus `alg` RS256 and the key's `kid`) and these claims.
    fn minted(&self, header: Value, claims: &Value) -> String {
        self.idp.mint_jwt(header, claims.clone())
    }
}

#[tokio::test]
async fn valid_tokens_from_the_dev_idp_are_accepted() {
    let env = Env::start().await;

    let app = client_token(&env.idp, READ).await;
    let answer = env.get("/me", &app).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let me: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(me["sub"], CLIENT_ID);
    assert_eq!(me["iss"], env.idp.issuer());
    assert_eq!(me["scopes"], json!([READ]));
    assert_eq!(me["client_id"], CLIENT_ID);
    assert_eq!(me["exp"], jwt_parts(&app).1["exp"]);

    let alice = user_token(&env.idp, "alice", &format!("{READ} {WRITE}")).await;
    assert_eq!(jwt_parts(&alice).0["typ"], "at+jwt");
    let answer = env.get("/me", &alice).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let me: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(me["sub"], idweb_devidp::subject_for("alice"));
    assert_eq!(me["scopes"], json!(["openid", READ, WRITE]));
    assert_eq!(env.get("/todos", &alice).await.status, StatusCode::OK);
    let resp = http()
        .post(env.url("/todos"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn no_token_is_401_with_a_bare_challenge() {
    let env = Env::start().await;

    let answer = Answer::read(http().get(env.url("/me")).send().await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge(), format!(r#"Bearer realm="{REALM}""#));
    assert_eq!(answer.body, "");

    // Another scheme is no bearer token either.
    let answer = Answer::read(
        http()
            .get(env.url("/me"))
            .basic_auth("user", Some("password"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge(), format!(r#"Bearer realm="{REALM}""#));
    assert!(!answer.body.contains("cGFzc3dvcmQ"));

    // The layer alone guards nothing.
    let answer = Answer::read(http().get(env.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn optional_caller_is_none_without_token_and_still_rejects_a_bad_one() {
    let env = Env::start().await;

    let answer = Answer::read(http().get(env.url("/who")).send().await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "anonymous");

    let token = client_token(&env.idp, READ).await;
    let answer = env.get("/who", &token).await;
    assert_eq!(answer.body, CLIENT_ID);

    let garbage = "garbage-but-secret-looking-0123456789";
    env.get("/who", garbage)
        .await
        .assert_invalid_token("not a well-formed signed JWT");
}

#[tokio::test]
async fn garbage_empty_and_oversized_tokens_are_401_invalid_token() {
    let env = Env::start().await;

    for garbage in ["not-a-jwt-but-a-secret-looking-string", "a.b.c", "...."] {
        env.get("/me", garbage)
            .await
            .assert_invalid_token("not a well-formed signed JWT");
    }
    // Well-formed, RS256 without kid (the IdP's only key fits), a made-up signature.
    env.get(
        "/me",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA",
    )
    .await
    .assert_invalid_token("signature is invalid");

    // "Bearer" with nothing after it.
    let answer = Answer::read(
        http()
            .get(env.url("/me"))
            .header("authorization", "Bearer ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    answer.assert_invalid_token("not a well-formed signed JWT");

    // A real token made longer than 16 KiB with an extra claim.
    let mut claims = claims(env.idp.issuer());
    claims["padding"] = json!("x".repeat(idweb::MAX_JWS_LEN));
    let oversized = env.minted(json!({ "typ": "at+jwt" }), &claims);
    assert!(oversized.len() > idweb::MAX_JWS_LEN);
    env.get("/me", &oversized)
        .await
        .assert_invalid_token("longer than this API accepts");
}

#[tokio::test]
async fn a_smaller_maximum_length_is_enforced() {
    let idp = dev_idp().await;
    let jwt = JwtBearer::builder(idp.issuer())
        .with_audience(AUDIENCE)
        .with_realm(REALM)
        .with_max_token_length(512)
        .build()
        .await
        .unwrap();
    let api = serve(api(&jwt)).await;
    let token = client_token(&idp, READ).await;
    assert!(token.len() > 512);
    let answer = get_with(&format!("{api}/me"), &token).await;
    answer.assert_invalid_token("longer than this API accepts");
    answer.assert_not_echoed(&token);
}

#[tokio::test]
async fn several_authorization_headers_are_400_invalid_request() {
    let env = Env::start().await;
    let token = client_token(&env.idp, READ).await;

    let answer = Answer::read(
        http()
            .get(env.url("/me"))
            .header("authorization", format!("Bearer {token}"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.challenge(),
        format!(
            r#"Bearer realm="{REALM}", error="invalid_request", error_description="The request has more than one Authorization header.""#
        )
    );
    answer.assert_not_echoed(&token);
}

#[tokio::test]
async fn a_key_the_idp_does_not_know_is_401() {
    let env = Env::start().await;
    let claims = claims(env.idp.issuer());

    // Our own key under our own kid: not in the JWKS, even after a refetch.
    let ours = TestKey::generate("not-the-idps-key");
    let forged = ours.sign(json!({ "typ": "at+jwt" }), &claims);
    env.get("/me", &forged)
        .await
        .assert_invalid_token("signed with an unknown key");

    // Our own key under the IdP's kid: the IdP's key is RSA, ours EC: no
    // key fits the header. (Past the refetch interval, so that the key set
    // is looked at again and the answer is a verdict, not a 503 "retry
    // later" as within the interval.)
    env.clock.advance(Duration::from_secs(31));
    let real = client_token(&env.idp, READ).await;
    let kid = jwt_parts(&real).0["kid"].as_str().unwrap().to_owned();
    let forged = ours.sign(json!({ "typ": "at+jwt", "kid": kid }), &claims);
    env.get("/me", &forged)
        .await
        .assert_invalid_token("signed with an unknown key");

    // The IdP's header and claims with a signature that does not verify.
    let (header, payload) = real.rsplit_once('.').unwrap().0.split_once('.').unwrap();
    let mut tampered_claims = jwt_parts(&real).1;
    tampered_claims["sub"] = json!("someone-else");
    let tampered = format!(
        "{header}.{}.{}",
        URL_SAFE_NO_PAD.encode(tampered_claims.to_string()),
        real.rsplit_once('.').unwrap().1
    );
    assert_ne!(payload, tampered.split('.').nth(1).unwrap());
    env.get("/me", &tampered)
        .await
        .assert_invalid_token("signature is invalid");
}

#[tokio::test]
async fn hs256_signed_with_the_public_modulus_is_401() {
    let env = Env::start().await;
    let real = client_token(&env.idp, READ).await;
    let (real_header, claims) = jwt_parts(&real);
    let kid = real_header["kid"].as_str().unwrap();
    let jwks: Value = http()
        .get(format!("{}/jwks", env.idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap();
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

    env.get("/me", &forged)
        .await
        .assert_invalid_token("algorithm that is not accepted");
}

#[tokio::test]
async fn alg_none_is_401() {
    let env = Env::start().await;
    let real = client_token(&env.idp, READ).await;
    let (_, claims) = jwt_parts(&real);

    for header in [
        json!({ "alg": "none", "typ": "at+jwt" }),
        json!({ "alg": "None", "typ": "at+jwt" }),
    ] {
        let forged = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        env.get("/me", &forged)
            .await
            .assert_invalid_token("not a well-formed signed JWT");
    }
}

#[tokio::test]
async fn crit_headers_are_401() {
    let env = Env::start().await;
    let token = env.minted(
        json!({ "typ": "at+jwt", "crit": ["exp"], "exp": 1 }),
        &claims(env.idp.issuer()),
    );
    env.get("/me", &token)
        .await
        .assert_invalid_token("critical extensions");
}

#[tokio::test]
async fn wrong_issuer_and_audience_are_401() {
    let env = Env::start().await;

    let mut wrong_iss = claims(env.idp.issuer());
    wrong_iss["iss"] = json!("https://evil.example.com");
    let token = env.minted(json!({ "typ": "at+jwt" }), &wrong_iss);
    env.get("/me", &token)
        .await
        .assert_invalid_token("from another issuer");

    // An array is not the issuer, even when it names it.
    let mut array_iss = claims(env.idp.issuer());
    array_iss["iss"] = json!([env.idp.issuer()]);
    let token = env.minted(json!({ "typ": "at+jwt" }), &array_iss);
    env.get("/me", &token)
        .await
        .assert_invalid_token("from another issuer");

    // A real token of the IdP for another API.
    let other = client_token(&env.idp, "api://other/x").await;
    assert_eq!(jwt_parts(&other).1["aud"], "api://other");
    env.get("/me", &other)
        .await
        .assert_invalid_token("not intended for this API");

    // No aud at all.
    let mut no_aud = claims(env.idp.issuer());
    no_aud.as_object_mut().unwrap().remove("aud");
    let token = env.minted(json!({ "typ": "at+jwt" }), &no_aud);
    env.get("/me", &token)
        .await
        .assert_invalid_token("not intended for this API");

    // An array naming ours among others is for us.
    let mut many = claims(env.idp.issuer());
    many["aud"] = json!(["api://other", AUDIENCE]);
    let token = env.minted(json!({ "typ": "at+jwt" }), &many);
    assert_eq!(env.get("/me", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn expiry_is_checked_on_the_injected_clock_with_60_s_leeway() {
    let env = Env::start().await;
    let token = client_token(&env.idp, READ).await;
    let exp = jwt_parts(&token).1["exp"].as_i64().unwrap();
    let at = |secs: i64| std::time::UNIX_EPOCH + Duration::from_secs(secs as u64);

    env.clock.set(at(exp + 59));
    assert_eq!(env.get("/me", &token).await.status, StatusCode::OK);

    env.clock.set(at(exp + 60));
    env.get("/me", &token)
        .await
        .assert_invalid_token("has expired");

    // A token the IdP issued two hours ago is expired now, on the real clock too.
    env.clock.set(std::time::SystemTime::now());
    env.idp.set_clock_offset(-2 * 3600);
    let old = client_token(&env.idp, READ).await;
    env.idp.set_clock_offset(0);
    env.get("/me", &old)
        .await
        .assert_invalid_token("has expired");
}

#[tokio::test]
async fn not_before_is_checked_with_leeway() {
    let env = Env::start().await;
    let now = unix_now();
    env.clock
        .set(std::time::UNIX_EPOCH + Duration::from_secs(now as u64));

    let mut soon = claims(env.idp.issuer());
    soon["nbf"] = json!(now + 60);
    let token = env.minted(json!({ "typ": "at+jwt" }), &soon);
    assert_eq!(env.get("/me", &token).await.status, StatusCode::OK);

    let mut later = claims(env.idp.issuer());
    later["nbf"] = json!(now + 61);
    let token = env.minted(json!({ "typ": "at+jwt" }), &later);
    env.get("/me", &token)
        .await
        .assert_invalid_token("not valid yet");

    // When that time comes, the same token is accepted.
    env.clock.advance(Duration::from_secs(1));
    assert_eq!(env.get("/me", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn required_claims_must_be_present_and_well_typed() {
    let env = Env::start().await;
    let base = claims(env.idp.issuer());
    for (change, needle) in [
        (json!({ "sub": "" }), "lacks the sub claim"),
        (json!({ "sub": null }), "lacks the sub claim"),
        (json!({ "sub": 42 }), "lacks the sub claim"),
        (json!({ "exp": null }), "exp claim is malformed"),
        (json!({ "exp": "tomorrow" }), "exp claim is malformed"),
        (json!({ "nbf": "now" }), "nbf claim is malformed"),
        (json!({ "scope": 7 }), "scope claim is malformed"),
        (json!({ "scp": ["ok", 1] }), "scp claim is malformed"),
        (json!({ "roles": [true] }), "roles claim is malformed"),
    ] {
        let mut claims = base.clone();
        for (k, v) in change.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let token = env.minted(json!({ "typ": "at+jwt" }), &claims);
        env.get("/me", &token).await.assert_invalid_token(needle);
    }
    let mut no_exp = base.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = env.minted(json!({ "typ": "at+jwt" }), &no_exp);
    env.get("/me", &token)
        .await
        .assert_invalid_token("lacks the exp claim");
}

#[tokio::test]
async fn typ_policy() {
    let env = Env::start().await;
    let claims = claims(env.idp.issuer());

    // Default: at+jwt or JWT (Entra), in any case, with or without application/.
    for typ in ["at+jwt", "JWT", "application/at+JWT"] {
        let token = env.minted(json!({ "typ": typ }), &claims);
        assert_eq!(env.get("/me", &token).await.status, StatusCode::OK, "{typ}");
    }
    for header in [
        json!({}),
        json!({ "typ": "logout+jwt" }),
        json!({ "typ": "id_token+jwt" }),
    ] {
        let token = env.minted(header.clone(), &claims);
        env.get("/me", &token)
            .await
            .assert_invalid_token("typ is not accepted");
    }

    // Strict: at+jwt only.
    let strict = JwtBearer::builder(env.idp.issuer())
        .with_audience(AUDIENCE)
        .with_realm(REALM)
        .with_typ_policy(TypPolicy::RequireAtJwt)
        .build()
        .await
        .unwrap();
    let strict_api = serve(api(&strict)).await;
    let jwt_typ = env.minted(json!({ "typ": "JWT" }), &claims);
    get_with(&format!("{strict_api}/me"), &jwt_typ)
        .await
        .assert_invalid_token("typ is not accepted");
    let real = client_token(&env.idp, READ).await;
    assert_eq!(
        get_with(&format!("{strict_api}/me"), &real).await.status,
        StatusCode::OK
    );

    // Lenient: also no typ at all.
    let lenient = JwtBearer::builder(env.idp.issuer())
        .with_audience(AUDIENCE)
        .with_typ_policy(TypPolicy::AllowMissing)
        .build()
        .await
        .unwrap();
    let lenient_api = serve(api(&lenient)).await;
    let untyped = env.minted(json!({}), &claims);
    assert_eq!(
        get_with(&format!("{lenient_api}/me"), &untyped)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope_naming_it() {
    let env = Env::start().await;
    let read_only = client_token(&env.idp, READ).await;
    assert_eq!(env.get("/todos", &read_only).await.status, StatusCode::OK);

    let answer = Answer::read(
        http()
            .post(env.url("/todos"))
            .bearer_auth(&read_only)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer.challenge(),
        format!(
            r#"Bearer realm="{REALM}", error="insufficient_scope", error_description="The access token does not grant the scope this request needs.", scope="{WRITE}""#
        )
    );
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    answer.assert_not_echoed(&read_only);

    // A token with no scope at all.
    let mut claims = claims(env.idp.issuer());
    claims.as_object_mut().unwrap().remove("scope");
    let token = env.minted(json!({ "typ": "at+jwt" }), &claims);
    let answer = env.get("/todos", &token).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.challenge().ends_with(&format!(r#"scope="{READ}""#)));

    // An invalid token on a guarded route is still 401, not 403.
    env.get("/todos", "x.y.z")
        .await
        .assert_invalid_token("not a well-formed signed JWT");
}

#[tokio::test]
async fn entra_shaped_tokens_scp_with_scope_names() {
    let env = Env::start().await;
    // Microsoft Entra v2: typ JWT, scp holds the names only, azp the client.
    let mut claims = claims(env.idp.issuer());
    let object = claims.as_object_mut().unwrap();
    object.remove("scope");
    object.remove("client_id");
    object.insert("scp".into(), json!("todos.read User.Read"));
    object.insert("azp".into(), json!("the-spa"));
    let token = env.minted(json!({ "typ": "JWT" }), &claims);

    let answer = env.get("/me", &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    let me: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(me["client_id"], "the-spa");
    assert_eq!(me["scopes"], json!(["todos.read", "User.Read"]));
    // api://todo/todos.read is satisfied by "todos.read" (api://todo is our audience)...
    assert_eq!(env.get("/todos", &token).await.status, StatusCode::OK);
    // ...but not api://todo/todos.write.
    let resp = http()
        .post(env.url("/todos"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // An array scp works the same; a name of another resource's scope does not count.
    let mut other = claims.clone();
    other["scp"] = json!(["api://other/todos.read"]);
    let token = env.minted(json!({ "typ": "JWT" }), &other);
    assert_eq!(
        env.get("/todos", &token).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn missing_role_is_403_and_a_granted_role_passes() {
    let env = Env::start().await;
    let no_role = client_token(&env.idp, READ).await;

    for path in ["/admin", "/purge"] {
        let req = if path == "/purge" {
            http().post(env.url(path))
        } else {
            http().get(env.url(path))
        };
        let answer = Answer::read(req.bearer_auth(&no_role).send().await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            answer.challenge(),
            format!(
                r#"Bearer realm="{REALM}", error="insufficient_scope", error_description="The access token does not grant the app role this request needs.""#
            )
        );
        answer.assert_not_echoed(&no_role);
    }

    let mut claims = claims(env.idp.issuer());
    claims["roles"] = json!(["Todo.Reader", "Todo.Admin"]);
    let admin = env.minted(json!({ "typ": "at+jwt" }), &claims);
    assert_eq!(env.get("/admin", &admin).await.status, StatusCode::OK);
    let resp = http()
        .post(env.url("/purge"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "purged");

    // Roles are case-sensitive.
    claims["roles"] = json!(["todo.admin"]);
    let wrong_case = env.minted(json!({ "typ": "at+jwt" }), &claims);
    assert_eq!(
        env.get("/admin", &wrong_case).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn scope_or_app_role() {
    let env = Env::start().await;
    let mut claims = claims(env.idp.issuer());
    claims.as_object_mut().unwrap().remove("scope");

    // An app-only token with the application permission.
    claims["roles"] = json!(["Todo.Read.All"]);
    let app = env.minted(json!({ "typ": "at+jwt" }), &claims);
    assert_eq!(env.get("/read-or-app", &app).await.status, StatusCode::OK);

    // A user token with the delegated scope.
    let user = user_token(&env.idp, "bob", READ).await;
    assert_eq!(env.get("/read-or-app", &user).await.status, StatusCode::OK);

    // Neither: 403 naming the scope.
    claims["roles"] = json!(["Something.Else"]);
    let neither = env.minted(json!({ "typ": "at+jwt" }), &claims);
    let answer = env.get("/read-or-app", &neither).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.challenge().ends_with(&format!(r#"scope="{READ}""#)));
}

#[tokio::test]
async fn key_rotation_at_the_idp_is_followed() {
    let env = Env::start().await;
    let before = client_token(&env.idp, READ).await;
    assert_eq!(env.get("/me", &before).await.status, StatusCode::OK);

    env.idp.rotate_keys(false);
    let after = client_token(&env.idp, READ).await;
    assert_ne!(jwt_parts(&before).0["kid"], jwt_parts(&after).0["kid"]);
    // The new kid is unknown: one refetch, and the token is accepted.
    assert_eq!(env.get("/me", &after).await.status, StatusCode::OK);

    // A second rotation right away: the refetch is rate-limited, and the
    // answer is retryable (503 + Retry-After), not a verdict on the token...
    env.idp.rotate_keys(false);
    let third = client_token(&env.idp, READ).await;
    let answer = env.get("/me", &third).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = answer
        .headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    // ...until the interval (30 s on the injected clock) has passed.
    env.clock.advance(Duration::from_secs(31));
    assert_eq!(env.get("/me", &third).await.status, StatusCode::OK);
}

#[tokio::test]
async fn caller_without_the_layer_is_500_saying_how_to_fix_it() {
    let app = axum::Router::new().route(
        "/me",
        axum::routing::get(|caller: idweb_api::ApiCaller| async move { caller.sub().to_owned() }),
    );
    let api = serve(app).await;
    let answer = get_with(&format!("{api}/me"), "x.y.z").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.body.contains("jwt.layer()"), "{}", answer.body);
    assert_eq!(answer.challenge, None);
}

#[tokio::test]
async fn the_validator_works_without_http() {
    let idp = dev_idp().await;
    let jwt = JwtBearer::builder(idp.issuer())
        .with_audience(AUDIENCE)
        .with_clock(Arc::new(SystemClock))
        .build()
        .await
        .unwrap();
    let token = client_token(&idp, READ).await;
    let caller = jwt.validate(&token).await.unwrap();
    assert_eq!(caller.sub(), CLIENT_ID);
    assert!(caller.has_scope(READ));
    assert!(!caller.has_scope(WRITE));
    assert!(caller.require_scope(WRITE).is_err());
    let debug = format!("{caller:?} {jwt:?}");
    assert!(!debug.contains(&token) && !debug.contains(token.split('.').nth(2).unwrap()));

    let err = jwt.validate("x.y.z").await.unwrap_err();
    assert!(matches!(
        err,
        idweb_api::ValidationError::Invalid(idweb_api::InvalidToken::Malformed)
    ));
}

#[tokio::test]
async fn a_shared_provider_is_used_as_is() {
    let idp = dev_idp().await;
    let authority = url::Url::parse(idp.issuer()).unwrap();
    let provider = Arc::new(
        idweb::Provider::discover(
            &authority,
            idweb::provider_http_client(),
            Arc::new(SystemClock),
        )
        .await
        .unwrap(),
    );
    let jwt = JwtBearer::builder(idp.issuer())
        .with_audience(AUDIENCE)
        .with_provider(provider.clone())
        .build()
        .await
        .unwrap();
    assert!(Arc::ptr_eq(jwt.provider(), &provider));
    let token = client_token(&idp, READ).await;
    assert_eq!(jwt.validate(&token).await.unwrap().sub(), CLIENT_ID);

    let other = dev_idp().await;
    let err = JwtBearer::builder(other.issuer())
        .with_audience(AUDIENCE)
        .with_provider(provider)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, idweb_api::BuildError::ProviderMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn provider_verify_jws_refuses_symmetric_algorithms_even_when_listed() {
    let idp = dev_idp().await;
    let authority = url::Url::parse(idp.issuer()).unwrap();
    let provider = idweb::Provider::discover(
        &authority,
        idweb::provider_http_client(),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let real = client_token(&idp, READ).await;
    let listed = [
        jsonwebtoken::Algorithm::HS256,
        jsonwebtoken::Algorithm::RS256,
    ];

    let verified = provider.verify_jws(&real, &listed).await.unwrap();
    assert_eq!(verified.algorithm, jsonwebtoken::Algorithm::RS256);
    assert_eq!(verified.typ.as_deref(), Some("at+jwt"));
    assert_eq!(verified.claims["sub"], CLIENT_ID);

    let (_, claims) = jwt_parts(&real);
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"any secret"),
    )
    .unwrap();
    assert!(matches!(
        provider.verify_jws(&hs, &listed).await,
        Err(idweb::JwsError::DisallowedAlgorithm(_))
    ));
    // An RS256 token is refused when RS256 is not listed.
    assert!(matches!(
        provider
            .verify_jws(&real, &[jsonwebtoken::Algorithm::ES256])
            .await,
        Err(idweb::JwsError::DisallowedAlgorithm(_))
    ));
}
