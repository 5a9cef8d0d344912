//! The demo binary, run as a user would: it starts, prints its URLs, a user
//! signs in through the dev IdP's login page, and it stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use idweb_test_support::{browser, form_fields, get_page, location};
use reqwest::header::ACCEPT;

fn url_after<'a>(lines: &'a [String], label: &str) -> &'a str {
    let line = lines
        .iter()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no `{label}` line in {lines:?}"));
    let start = line.find("http://").expect("a URL");
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
}

#[tokio::test]
async fn demo_starts_signs_in_and_stops_cleanly() {
    demo_story(None).await;
}

#[tokio::test]
async fn demo_runs_its_apps_on_redis() {
    demo_story(Some("redis://127.0.0.1:6379")).await;
}

/// The demo's story; with `store`, both web apps use that store (IDWEB_STORE).
async fn demo_story(store: Option<&str>) {
    let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "demo-{}-{}",
        std::process::id(),
        store.is_some()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_idweb-demo"))
        .args([
            "--idp-listen",
            "127.0.0.1:0",
            "--app-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(["--app-b-listen", "127.0.0.1:0"])
        .args(["--control-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "warn")
        .envs(store.map(|s| ("IDWEB_STORE", s)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start idweb-demo");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "demo exited early: {lines:?}"
        );
        let done = line.contains("Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let idp = url_after(&lines, "identity provider:").to_string();
    let app = url_after(&lines, "App A:").to_string();
    let app_b = url_after(&lines, "App B:").to_string();
    assert!(app_b.starts_with("http://localhost:"), "{app_b}");
    let api = url_after(&lines, "todo API:").to_string();

    let b = browser();
    let home = get_page(&b, &format!("{app}/")).await;
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("not signed in"));
    let anonymous = get_page(&b, &api).await;
    assert_eq!(anonymous.status(), 401, "the todo API wants a bearer token");
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"todo\""
    );

    // /profile → sign-in → the IdP's login page → bob → back to /profile.
    let mut url = format!("{app}/profile");
    let login_page = loop {
        let resp = get_page(&b, &url).await;
        if resp.status() == 200 {
            break resp.text().await.unwrap();
        }
        url = location(&resp);
    };
    let resp = b
        .post(format!("{idp}/authorize/login"))
        .form(&form_fields(&login_page, ("username", "bob")))
        .send()
        .await
        .unwrap();
    let resp = get_page(&b, &location(&resp)).await;
    assert_eq!(location(&resp), format!("{app}/profile"));
    let html = get_page(&b, &format!("{app}/profile"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Bob Example"), "{html}");
    let json: serde_json::Value = b
        .get(format!("{app}/profile"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["name"], "Bob Example");
    assert_eq!(
        json["sub"],
        idweb_test_support::idweb_devidp::subject_for("bob")
    );
    assert!(json["sid"].is_string());
    let home = get_page(&b, &format!("{app}/")).await.text().await.unwrap();
    assert!(home.contains("Signed in as <b>Bob Example</b>"), "{home}");

    // The same browser opens App B: single sign-on at the provider, no form.
    let resp = idweb_test_support::follow(&b, &format!("{app_b}/profile")).await;
    assert_eq!(resp.status(), 200, "signed in to App B silently");
    assert!(resp.text().await.unwrap().contains("Bob Example"));
    let cache_a = get_page(&b, &format!("{app}/cache")).await;
    assert_eq!(cache_a.status(), 200);
    assert!(cache_a.text().await.unwrap().contains("RefreshToken"));

    // Sign out in App B: App B's page POSTs to the provider, which tells App A by back-channel.
    let resp = b
        .post(format!("{app_b}/account/signout"))
        .header("origin", app_b.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (action, fields) = idweb_test_support::form(&resp.text().await.unwrap());
    assert!(action.starts_with(&idp));
    let resp = b.post(action).form(&fields).send().await.unwrap();
    assert!(resp.status().is_success() || resp.status().is_redirection());
    // App A's cache page now asks to sign in: its session and tokens are gone.
    let resp = get_page(&b, &format!("{app}/cache")).await;
    assert_eq!(resp.status(), 302, "App A asks to sign in again");
    assert!(location(&resp).contains("/account/signin"));

    // SIGTERM → clean shutdown with exit status 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    for _ in 0..50 {
        if let Some(status) = child.try_wait().unwrap() {
            std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
            assert!(status.success(), "exit status {status}");
            assert!(rest.contains("stopped"), "{rest}");
            let sqlite_files =
                data_dir.join("app-a.sqlite").exists() || data_dir.join("app-b.sqlite").exists();
            assert_eq!(
                sqlite_files,
                store.is_none(),
                "the apps used the store they were given"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("the demo did not stop within 5 s of SIGTERM");
}
