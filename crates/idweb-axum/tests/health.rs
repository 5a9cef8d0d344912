//! `/healthz` and `/readyz` over real HTTP: both answer without a session,
//! on the paths the settings give; `/readyz` is 200 while the store (here a
//! real Redis, reached through a relay) answers and its subscription is
//! live, and 503 once the link to Redis is cut.
//!
//! Redis must be running at 127.0.0.1:6379: without it the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use idweb::SessionId;
use idweb_test_support::{AppOptions, DelayRelay, dev_idp, start_app};
use serde_json::Value;

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn probes_answer_without_a_session_on_their_configured_paths() {
    let idp = dev_idp(true).await;
    let app = start_app(&idp, AppOptions::default()).await;
    let (status, body) = get(&app.at("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&app.at("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["checks"]["store"], "ok");
    assert_eq!(v["checks"]["provider"], "ok");
    assert_eq!(
        v["checks"]["subscription"], "none",
        "a memory store has no bus"
    );

    let moved = start_app(
        &idp,
        AppOptions {
            extra_env: vec![
                ("IDWEB_HEALTH_PATH", "/probe/live".into()),
                ("IDWEB_READY_PATH", "/probe/ready".into()),
            ],
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(get(&moved.at("/probe/live")).await.0, 200);
    assert_eq!(get(&moved.at("/probe/ready")).await.0, 200);
    assert_eq!(get(&moved.at("/healthz")).await.0, 404);
    assert_eq!(get(&moved.at("/readyz")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_turns_readyz_to_503() {
    let idp = dev_idp(true).await;
    let relay = DelayRelay::start("127.0.0.1:6379", Duration::ZERO)
        .await
        .expect("relay to Redis");
    let app = start_app(
        &idp,
        AppOptions {
            extra_env: vec![
                ("IDWEB_STORE", format!("redis://{}", relay.addr())),
                (
                    "IDWEB_STORE_PREFIX",
                    format!("health-{}", SessionId::generate().fingerprint()),
                ),
            ],
            ..AppOptions::default()
        },
    )
    .await;
    // The subscription goes live shortly after start: poll (bounded).
    let mut ready = (0, String::new());
    for _ in 0..250 {
        ready = get(&app.at("/readyz")).await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);
    let v: Value = serde_json::from_str(&ready.1).unwrap();
    assert_eq!(v["checks"]["subscription"], "ok");

    // Cut the link to Redis: every relayed connection closes, new ones are refused.
    drop(relay);
    let (status, body) = get(&app.at("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["checks"]["store"], "fail");
    // The process itself still serves.
    assert_eq!(get(&app.at("/healthz")).await.0, 200);
}
