//! Nothing the API logs — at any level — contains a token it refused or accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use idweb::SystemClock;
use reqwest::StatusCode;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let idp = dev_idp().await;
    let jwt = jwt_for(idp.issuer(), Arc::new(SystemClock)).await;
    let api = serve(api(&jwt)).await;

    let good = client_token(&idp, READ).await;
    let mut expired = claims(idp.issuer());
    expired["exp"] = json!(1);
    let mut tokens = vec![
        good.clone(),
        idp.mint_jwt(json!({ "typ": "at+jwt" }), expired),
        TestKey::generate("unknown-kid").sign(json!({ "typ": "at+jwt" }), &claims(idp.issuer())),
        "garbage-token-that-looks-secret-0123456789".to_owned(),
    ];
    tokens.push(format!("{}x", good));
    let mut statuses = Vec::new();
    for token in &tokens {
        statuses.push(get_with(&format!("{api}/me"), token).await.status);
        statuses.push(get_with(&format!("{api}/admin"), token).await.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::FORBIDDEN,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            // The unknown kid: the first request refetches the keys (401),
            // the second comes within the refetch interval (503, retryable).
            StatusCode::UNAUTHORIZED,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ]
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("refused an access token"),
        "the refusals are logged (without the token): {text}"
    );
    for token in &tokens {
        for piece in token.split('.').filter(|p| p.len() > 8) {
            assert!(!text.contains(piece), "a log line holds part of a token");
        }
    }
}
