//! What a newcomer meets in the demo, run as a user would run it (the
//! binary, real HTTP): the provider's start page, pages in one look with
//! navigation, sign-out buttons only for signed-in users, the token cache in
//! human terms, a sign-out refusal that says so, the README's recipe for
//! the `idweb` command, log lines that name their app, and a restart after
//! which both the apps and the provider still know the user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idweb_test_support::{
    browser, browser_across_restarts, follow, form, form_fields, get_page, location,
};
use reqwest::header::ACCEPT;

/// The demo process, killed when the test ends however it ends.
struct Demo {
    child: Child,
    /// Every line it printed on stdout so far.
    out: Arc<Mutex<Vec<String>>>,
    idp: String,
    app_a: String,
    control: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts the demo on `ports` (IdP, App A, App B, API, control room),
    /// with its data in `data_dir` and `RUST_LOG=log`.
    fn start(data_dir: &Path, ports: [u16; 5], log: &str) -> Demo {
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_idweb-demo"))
            .args(["--idp-listen", &addr(ports[0])])
            .args(["--app-listen", &addr(ports[1])])
            .args(["--app-b-listen", &addr(ports[2])])
            .args(["--api-listen", &addr(ports[3])])
            .args(["--control-listen", &addr(ports[4])])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start idweb-demo");
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = out.clone();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut ready = Some(tx);
            loop {
                let mut line = String::new();
                if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let done = line.contains("Ctrl-C");
                lines.lock().unwrap().push(line);
                if done && let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        });
        let mut demo = Demo {
            child,
            out,
            idp: String::new(),
            app_a: String::new(),
            control: String::new(),
        };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("the demo printed no URLs: {:?}", demo.lines());
        }
        demo.idp = demo.url_after("identity provider:");
        demo.app_a = demo.url_after("App A:");
        demo.control = demo.url_after("control room:");
        demo
    }

    fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    fn url_after(&self, label: &str) -> String {
        let lines = self.lines();
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
            .to_string()
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the demo did not stop within 10 s of SIGTERM");
    }
}

fn free_ports() -> [u16; 5] {
    let listeners: Vec<_> = (0..5)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    [ports[0], ports[1], ports[2], ports[3], ports[4]]
}

fn data_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("stumbles-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Signs `user` in to App A through the provider's login page.
async fn sign_in(b: &reqwest::Client, demo: &Demo, user: &str) {
    let mut url = format!("{}/profile", demo.app_a);
    let login_page = loop {
        let resp = get_page(b, &url).await;
        if resp.status() == 200 {
            break resp.text().await.unwrap();
        }
        url = location(&resp);
    };
    let resp = b
        .post(format!("{}/authorize/login", demo.idp))
        .form(&form_fields(&login_page, ("username", user)))
        .send()
        .await
        .unwrap();
    let resp = get_page(b, &location(&resp)).await;
    assert_eq!(location(&resp), format!("{}/profile", demo.app_a));
}

async fn todos_json(b: &reqwest::Client, demo: &Demo) -> reqwest::Response {
    b.get(format!("{}/todos", demo.app_a))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_a_newcomer_meets() {
    let dir = data_dir("pages");
    let demo = Demo::start(&dir, free_ports(), "info,idweb_devidp=debug");
    let b = browser();

    // The provider's root URL (in the README) is a start page, not a blank 404.
    let idp_home = get_page(&b, &format!("{}/", demo.idp)).await;
    assert_eq!(idp_home.status(), 200);
    let html = idp_home.text().await.unwrap();
    assert!(html.contains("Development identity provider"), "{html}");
    assert!(
        html.contains(&format!("<a href=\"{}/\">app-a</a>", demo.app_a)),
        "{html}"
    );
    assert!(html.contains("Control room"), "{html}");

    // Signed out: no sign-out buttons; a way to sign in; the shared look.
    let home = get_page(&b, &format!("{}/", demo.app_a))
        .await
        .text()
        .await
        .unwrap();
    assert!(!home.contains("id=\"signout\""), "{home}");
    assert!(!home.contains("id=\"signout-all\""), "{home}");
    assert!(home.contains("id=\"nav-signin\""), "{home}");
    assert!(
        home.contains("<link rel=\"stylesheet\" href=\"/style.css\">"),
        "{home}"
    );
    assert!(
        home.contains(&format!("<a href=\"{}/\">Control room</a>", demo.control)),
        "{home}"
    );
    for base in [&demo.app_a, &demo.control, &demo.idp] {
        let css = get_page(&b, &format!("{base}/style.css")).await;
        assert_eq!(css.status(), 200, "{base}");
        assert_eq!(
            css.text().await.unwrap(),
            idweb_devidp_stylesheet(),
            "{base}"
        );
    }

    sign_in(&b, &demo, "bob").await;
    assert_eq!(todos_json(&b, &demo).await.status(), 200);
    let home = get_page(&b, &format!("{}/", demo.app_a))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("id=\"signout\""),
        "signed in: sign-out offered: {home}"
    );

    // The token cache in human terms: expiry as a time, every row described.
    let cache = get_page(&b, &format!("{}/cache", demo.app_a))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        cache.contains("in 60 min (") || cache.contains("in 59 min ("),
        "{cache}"
    );
    assert!(cache.contains(" UTC)"), "{cache}");
    assert!(!cache.contains("Unix time"), "{cache}");
    assert!(
        cache.contains("the signed-in account (no secret)"),
        "{cache}"
    );
    assert!(
        cache.contains("this app's client record (no secret)"),
        "{cache}"
    );
    assert!(
        cache.contains("who signed in (the provider's ID token)"),
        "{cache}"
    );
    assert!(cache.contains("when used up or revoked"), "{cache}");

    // A sign-out refused by the Origin check says so, in the app's look.
    let refused = b
        .post(format!("{}/account/signout", demo.app_a))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let html = refused.text().await.unwrap();
    assert!(html.contains("<title>Sign-out refused</title>"), "{html}");
    assert!(html.contains("<header class=\"bar\">"), "{html}");

    // The README's recipe for the `idweb` command works on the demo's store.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains("cargo run -p idweb-cli -- cache list"),
        "README names the command"
    );
    assert!(
        readme.contains(".idweb-demo/app-a/keys.env"),
        "README names the keys file"
    );
    assert!(
        readme.contains("sqlite://.idweb-demo/app-a.sqlite"),
        "README names the store"
    );
    let keys = std::fs::read_to_string(dir.join("app-a/keys.env")).unwrap();
    let cache_keys = keys
        .lines()
        .find_map(|l| l.strip_prefix("IDWEB_CACHE_KEYS="))
        .expect("IDWEB_CACHE_KEYS in keys.env");
    let store =
        idweb_cli::open_store_url(&format!("sqlite://{}", dir.join("app-a.sqlite").display()))
            .await
            .unwrap();
    let listed = idweb_cli::list(
        store,
        Arc::new(idweb::CacheKeys::parse(cache_keys).unwrap()),
        &idweb_cli::Filter::default(),
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name.as_deref(), Some("Bob Example"));
    assert!(listed[0].entries.iter().any(|e| e.kind == "AccessToken"));
    assert_eq!(
        listed[0].unreadable_entries, 0,
        "the keys of keys.env read the entries"
    );

    // Sign out (RP-initiated): App A's log lines name App A, the provider's name it.
    let resp = b
        .post(format!("{}/account/signout", demo.app_a))
        .header("origin", demo.app_a.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (action, fields) = form(&resp.text().await.unwrap());
    let resp = b.post(action).form(&fields).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let lines = demo.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("demo{app=App A}") && l.contains("signed out")),
        "a line of App A names it: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("devidp:") && l.contains("ended an IdP session")),
        "a line of the provider names it: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains('\u{1b}')),
        "no terminal colours in a log that is not a terminal"
    );
    demo.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn idweb_devidp_stylesheet() -> &'static str {
    idweb_devidp::STYLESHEET
}

#[tokio::test]
async fn after_a_restart_the_apps_and_the_provider_still_know_the_user() {
    let dir = data_dir("restart");
    let ports = free_ports();
    let demo = Demo::start(&dir, ports, "warn");
    let b = browser_across_restarts();
    sign_in(&b, &demo, "alice").await;
    assert_eq!(todos_json(&b, &demo).await.status(), 200);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("idp-state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the provider's state is the owner's only"
        );
    }
    demo.stop().await;

    let demo = Demo::start(&dir, ports, "warn");
    // The cached access token still passes the todo API: the provider
    // signs with the same key.
    let todos = todos_json(&b, &demo).await;
    assert_eq!(todos.status(), 200, "no fall into sign-in after a restart");
    // Sign-out completes: the provider accepts the ID token as a hint and
    // knows the session.
    let resp = b
        .post(format!("{}/account/signout", demo.app_a))
        .header("origin", demo.app_a.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (action, fields) = form(&resp.text().await.unwrap());
    assert!(action.starts_with(&demo.idp), "{action}");
    let resp = b.post(action).form(&fields).send().await.unwrap();
    assert_eq!(resp.status(), 303, "no 400 at the provider");
    let signed_out = follow(&b, &location(&resp)).await;
    assert_eq!(signed_out.status(), 200);
    assert!(
        signed_out
            .text()
            .await
            .unwrap()
            .contains("You have signed out.")
    );
    demo.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
