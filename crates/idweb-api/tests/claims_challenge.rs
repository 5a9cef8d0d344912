//! The claims challenge an API sends round-trips through idweb's own
//! client-side parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use idweb::SystemClock;
use idweb_api::ClaimsChallenge;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn step_up_challenge_round_trips_through_the_client_parser() {
    let idp = dev_idp().await;
    let jwt = jwt_for(idp.issuer(), Arc::new(SystemClock)).await;
    let api = serve(api(&jwt)).await;
    let url = format!("{api}/step-up");

    let token = client_token(&idp, READ).await;
    let answer = get_with(&url, &token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenge = answer.challenge();
    assert!(
        challenge.starts_with(&format!(
            r#"Bearer realm="{REALM}", error="insufficient_claims", error_description=""#
        )),
        "{challenge}"
    );
    let claims = idweb::parse_claims_challenge(challenge).expect("a claims challenge");
    assert_eq!(
        serde_json::from_str::<Value>(&claims).unwrap(),
        json!({ "access_token": { "acrs": { "essential": true, "value": "c1" } } })
    );
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], "insufficient_claims");
    answer.assert_not_echoed(&token);

    // A token that carries the authentication context passes.
    let mut stepped_up = common::claims(idp.issuer());
    stepped_up["acrs"] = json!(["c1"]);
    let token = idp.mint_jwt(json!({ "typ": "at+jwt" }), stepped_up);
    let answer = get_with(&url, &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "stepped up");
}

#[test]
fn any_claims_request_round_trips() {
    // Continuous Access Evaluation's shape, as Microsoft Graph sends it.
    let mut request = serde_json::Map::new();
    request.insert(
        "access_token".into(),
        json!({ "nbf": { "essential": true, "value": "1604106651" }, "xms_cc": { "values": ["cp1"] } }),
    );
    let challenge = ClaimsChallenge::new(request.clone());
    let header = challenge.www_authenticate();
    assert!(
        header.starts_with(r#"Bearer error="insufficient_claims""#),
        "{header}"
    );
    let parsed = idweb::parse_claims_challenge(&header).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&parsed).unwrap(),
        Value::Object(request)
    );

    // A realm that cannot be quoted is left out rather than breaking the header.
    let header = ClaimsChallenge::auth_context("c2")
        .with_realm("a\"b")
        .www_authenticate();
    assert!(header.starts_with(r#"Bearer error="insufficient_claims""#));
    assert!(idweb::parse_claims_challenge(&header).is_some());

    // An id with quotes is JSON-escaped inside base64: still one parameter.
    let header = ClaimsChallenge::auth_context("c\"3").www_authenticate();
    let parsed = idweb::parse_claims_challenge(&header).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&parsed).unwrap()["access_token"]["acrs"]["value"],
        "c\"3"
    );
}
