//! The issuer's JWKS is fetched once at start, once more for an unknown
//! `kid`, and not again within the refetch interval — counted at an issuer
//! of our own whose keys the test controls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use idweb::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A minimal issuer: discovery and a JWKS whose keys and availability the
/// test sets, counting JWKS requests.
#[derive(Default)]
struct Issuer {
    issuer: Mutex<String>,
    keys: Mutex<Vec<Value>>,
    jwks_requests: AtomicUsize,
    jwks_down: AtomicBool,
}

impl Issuer {
    async fn start(keys: Vec<Value>) -> Arc<Issuer> {
        let state = Arc::new(Issuer::default());
        *state.keys.lock().unwrap() = keys;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        *state.issuer.lock().unwrap() = issuer;
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        state
    }

    fn issuer(&self) -> String {
        self.issuer.lock().unwrap().clone()
    }

    fn fetches(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }

    fn publish(&self, key: Value) {
        self.keys.lock().unwrap().push(key);
    }
}

async fn discovery(State(s): State<Arc<Issuer>>) -> Json<Value> {
    let issuer = s.issuer();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    }))
}

async fn jwks(State(s): State<Arc<Issuer>>) -> Response {
    s.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if s.jwks_down.load(Ordering::SeqCst) {
        return AxumStatus::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({ "keys": *s.keys.lock().unwrap() })).into_response()
}

#[tokio::test]
async fn unknown_kid_causes_one_rate_limited_refetch() {
    let k1 = TestKey::generate("k1");
    let k2 = TestKey::generate("k2");
    let issuer = Issuer::start(vec![k1.jwk()]).await;
    let clock = Arc::new(ManualClock::starting_now());
    let jwt = jwt_for(&issuer.issuer(), clock.clone()).await;
    let api = serve(api(&jwt)).await;
    let me = format!("{api}/me");
    let claims = claims(&issuer.issuer());
    assert_eq!(issuer.fetches(), 1, "the fetch at start");

    // A known key: no fetch.
    let t1 = k1.sign(json!({ "typ": "at+jwt" }), &claims);
    assert_eq!(get_with(&me, &t1).await.status, StatusCode::OK);
    assert_eq!(issuer.fetches(), 1);

    // An unknown kid: exactly one refetch, still unknown: 401.
    let t2 = k2.sign(json!({ "typ": "at+jwt" }), &claims);
    let answer = get_with(&me, &t2).await;
    answer.assert_invalid_token("unknown key");
    answer.assert_not_echoed(&t2);
    assert_eq!(issuer.fetches(), 2);

    // A flood of unknown kids within the interval: no more fetches; each is
    // answered 503 (retryable: the keys cannot be looked at again yet).
    let flood: Vec<_> = (0..20)
        .map(|i| {
            let me = me.clone();
            let token = TestKey::generate(&format!("made-up-{i}"))
                .sign(json!({ "typ": "at+jwt" }), &claims);
            tokio::spawn(async move { get_with(&me, &token).await.status })
        })
        .collect();
    for request in flood {
        assert_eq!(request.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(issuer.fetches(), 2);

    // The issuer publishes k2, but the interval has not passed: 503 with
    // Retry-After, so the client retries rather than dropping its token.
    issuer.publish(k2.jwk());
    let answer = get_with(&me, &t2).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert!(answer.headers.contains_key("retry-after"), "{answer:?}");
    answer.assert_not_echoed(&t2);
    assert_eq!(issuer.fetches(), 2);

    // 30 seconds later (injected clock): one refetch finds k2.
    clock.advance(Duration::from_secs(30));
    assert_eq!(get_with(&me, &t2).await.status, StatusCode::OK);
    assert_eq!(issuer.fetches(), 3);
    // And k2 is cached from now on.
    assert_eq!(get_with(&me, &t2).await.status, StatusCode::OK);
    assert_eq!(issuer.fetches(), 3);
}

#[tokio::test]
async fn concurrent_requests_with_a_new_kid_share_one_refetch() {
    let k1 = TestKey::generate("k1");
    let k2 = TestKey::generate("k2");
    let issuer = Issuer::start(vec![k1.jwk()]).await;
    let jwt = jwt_for(&issuer.issuer(), Arc::new(ManualClock::starting_now())).await;
    let api = serve(api(&jwt)).await;
    let me = format!("{api}/me");
    issuer.publish(k2.jwk());
    let token = k2.sign(json!({ "typ": "at+jwt" }), &claims(&issuer.issuer()));

    let requests: Vec<_> = (0..20)
        .map(|_| {
            let (me, token) = (me.clone(), token.clone());
            tokio::spawn(async move { get_with(&me, &token).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(issuer.fetches(), 2, "the fetch at start and one refetch");
}

#[tokio::test]
async fn jwks_outage_is_503_for_unknown_kids_and_known_keys_keep_working() {
    let k1 = TestKey::generate("k1");
    let issuer = Issuer::start(vec![k1.jwk()]).await;
    let jwt = jwt_for(&issuer.issuer(), Arc::new(ManualClock::starting_now())).await;
    let api = serve(api(&jwt)).await;
    let me = format!("{api}/me");
    let claims = claims(&issuer.issuer());

    issuer.jwks_down.store(true, Ordering::SeqCst);
    let unknown = TestKey::generate("k9").sign(json!({ "typ": "at+jwt" }), &claims);
    let answer = get_with(&me, &unknown).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.challenge, None);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    answer.assert_not_echoed(&unknown);
    assert_eq!(issuer.fetches(), 2);

    let known = k1.sign(json!({ "typ": "at+jwt" }), &claims);
    assert_eq!(get_with(&me, &known).await.status, StatusCode::OK);
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn es256_tokens_of_an_issuer_are_accepted_and_algorithms_can_be_restricted() {
    let k1 = TestKey::generate("k1");
    let issuer = Issuer::start(vec![k1.jwk()]).await;
    let claims = claims(&issuer.issuer());
    let token = k1.sign(json!({ "typ": "at+jwt" }), &claims);

    let rs_only = idweb_api::JwtBearer::builder(issuer.issuer())
        .with_audience(AUDIENCE)
        .with_realm(REALM)
        .with_algorithms([idweb_api::Algorithm::RS256])
        .build()
        .await
        .unwrap();
    let rs_api = serve(api(&rs_only)).await;
    get_with(&format!("{rs_api}/me"), &token)
        .await
        .assert_invalid_token("algorithm that is not accepted");

    let default = jwt_for(&issuer.issuer(), Arc::new(idweb::SystemClock)).await;
    let api = serve(api(&default)).await;
    assert_eq!(
        get_with(&format!("{api}/me"), &token).await.status,
        StatusCode::OK
    );
}
