//! `idweb-demo webapp` with `IDWEB_METRICS=true`, run as a process: after a
//! real sign-in, a token request and a back-channel sign-out, `GET /metrics`
//! over HTTP shows them in Prometheus's text format, store latency as
//! histogram buckets; without the variable there is no `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_webapp, stop};
use idweb_test_support::idweb_devidp::{DevClient, DevIdp};
use idweb_test_support::{browser, dev_idp, sign_in_at};

const COOKIE_KEY: &str = "bWV0cmljcy10ZXN0cy1vbmx5LW1ldHJpY3MtdGVzdHMtb25seS1tZXRyaWNzLXRlc3RzLW9ubHktbWV0cmljcy10ZXN0cw==";
const CACHE_KEYS: &str = "m1:dGhpcnR5LXR3by1ieXRlcy1mb3ItbWV0cmljcy1vayE=";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn app_env(idp: &DevIdp, client_id: &str, metrics: bool) -> (String, Vec<(&'static str, String)>) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    idp.register_client(DevClient::new(
        client_id,
        "metrics-secret",
        format!("{base}/signin-oidc"),
    ));
    let env = vec![
        ("IDWEB_AUTHORITY", idp.issuer().to_string()),
        ("IDWEB_CLIENT_ID", client_id.to_string()),
        ("IDWEB_CLIENT_SECRET", "metrics-secret".to_string()),
        ("IDWEB_PUBLIC_URL", base.clone()),
        ("IDWEB_LISTEN", format!("127.0.0.1:{port}")),
        ("IDWEB_COOKIE_KEY", COOKIE_KEY.to_string()),
        ("IDWEB_CACHE_KEYS", CACHE_KEYS.to_string()),
        ("IDWEB_METRICS", metrics.to_string()),
    ];
    (base, env)
}

/// The value of the sample `line_start` (name and labels, as rendered).
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webapp_serves_its_metrics_when_asked() {
    let idp = dev_idp(true).await;
    let (base, env) = app_env(&idp, "metrics-app", true);
    let app = tokio::task::spawn_blocking(move || start_webapp(&env))
        .await
        .unwrap();

    let b = browser();
    let profile = sign_in_at(&b, &base, "alice").await;
    let sub = profile["sub"].as_str().unwrap().to_string();
    // The app's /todos asks for a token for the todo API (no API runs here:
    // the token request is what counts).
    let _ = b.get(format!("{base}/todos")).send().await.unwrap();
    let token = idp.logout_token_for("metrics-app", Some(&sub), None);
    let resp = reqwest::Client::new()
        .post(format!("{base}/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = reqwest::Client::new()
        .post(format!("{base}/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "the replay");

    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert_eq!(sample(&text, "idweb_sign_ins_total"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"idweb_sign_outs_total{path="back_channel",outcome="signed_out"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"idweb_sign_out_sessions_removed_total{path="back_channel"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "idweb_logout_token_replays_total"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("idweb_token_requests_total{")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            r#"idweb_store_operation_duration_seconds_bucket{operation="sign_out",backend="memory",le="#
        )),
        "store latency as histogram buckets: {text}"
    );
    assert!(!text.contains(&sub), "no user id in any label");
    stop(app);

    // Without IDWEB_METRICS there is no /metrics.
    let (base, env) = app_env(&idp, "metrics-off", false);
    let app = tokio::task::spawn_blocking(move || start_webapp(&env))
        .await
        .unwrap();
    assert_eq!(
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .status(),
        404
    );
    stop(app);
}
