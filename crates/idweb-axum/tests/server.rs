//! `idweb_axum::serve`: connections that send nothing, half a header or half
//! a body are closed after their timeout; connections above the limit do not
//! starve a valid request. Raw TCP on a bound listener, with an idweb app
//! signed in at the dev IdP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use idweb_test_support::idweb_devidp::DevIdp;
use idweb_test_support::{AppOptions, TestApp, dev_idp, start_app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on waits for something that must happen (not a speed check).
const PATIENCE: Duration = Duration::from_secs(20);

async fn app(serve: fn(idweb_axum::Serve) -> idweb_axum::Serve) -> (TestApp, DevIdp) {
    let idp = dev_idp(true).await;
    let app = start_app(
        &idp,
        AppOptions {
            serve: Some(serve),
            ..AppOptions::default()
        },
    )
    .await;
    (app, idp)
}

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

fn short_head(s: idweb_axum::Serve) -> idweb_axum::Serve {
    s.with_header_read_timeout(Duration::from_millis(300))
        .with_idle_timeout(Duration::from_secs(600))
        .with_body_timeout(Duration::from_secs(600))
}

fn short_idle(s: idweb_axum::Serve) -> idweb_axum::Serve {
    s.with_header_read_timeout(Duration::from_secs(600))
        .with_idle_timeout(Duration::from_millis(300))
        .with_body_timeout(Duration::from_secs(600))
}

fn short_body(s: idweb_axum::Serve) -> idweb_axum::Serve {
    s.with_header_read_timeout(Duration::from_secs(600))
        .with_idle_timeout(Duration::from_secs(600))
        .with_body_timeout(Duration::from_millis(300))
}

fn four_connections(s: idweb_axum::Serve) -> idweb_axum::Serve {
    s.with_header_read_timeout(Duration::from_secs(600))
        .with_idle_timeout(Duration::from_secs(600))
        .with_max_connections(4)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let (app, _idp) = app(short_head).await;
    let mut silent = connect(&app).await;
    assert_eq!(read_until_closed(&mut silent).await, "");
    // The server still serves.
    let resp = reqwest::get(app.at("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_half_sent_header_is_closed_after_the_header_read_timeout() {
    let (app, _idp) = app(short_head).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /profile HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow).await;
    assert!(
        !answer.contains("200 OK"),
        "a request whose head never completed was answered: {answer}"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let (app, _idp) = app(short_idle).await;
    let mut conn = connect(&app).await;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    // The response comes, then nothing until the server closes the idle connection.
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("home"), "{answer}");
}

#[tokio::test]
async fn a_body_that_never_completes_gets_408_and_the_connection_is_closed() {
    let (app, _idp) = app(short_body).await;
    let mut conn = connect(&app).await;
    conn.write_all(
        b"POST /backchannel-logout HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nlogout_token=ab",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn idle_and_slow_connections_above_the_limit_do_not_starve_a_valid_request() {
    let (app, _idp) = app(four_connections).await;
    // Eight connections that never finish a request head: the limit is four.
    let mut squatters = Vec::new();
    for i in 0..8 {
        let mut s = connect(&app).await;
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
        }
        squatters.push(s);
    }
    // A valid request on a new connection is still answered.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, fresh.get(app.at("/")).send())
        .await
        .expect("the valid request was starved")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "home");
    // The longest-waiting connection made room: it is closed, with no answer.
    let first = read_until_closed(&mut squatters[0]).await;
    assert_eq!(first, "");
}
