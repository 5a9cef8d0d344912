//! The demo's whole story in a real browser: a headless Chromium, driven
//! through chromedriver (WebDriver), signs in to App A at the development
//! identity provider, gets single sign-on in App B, calls the todo API from
//! both, signs out in App B — and App A then asks to sign in again, because
//! its session and tokens are gone on the server.
//!
//! Chromium and chromedriver come from Debian's `chromium` and
//! `chromium-driver` packages; `scripts/setup-test-deps` installs them. The
//! test fails (it never skips) when they are missing. Each step leaves a
//! screenshot in `target/test-output/browser/`.
//!
//! A second story drives the demo's control room: every sign-out path it
//! starts empties both apps' caches, and its timeline says which app heard
//! it how (screenshots in `target/test-output/control-room/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thirtyfour::prelude::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one wait lasts before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// A child process that is killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("browser-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `target/test-output/NAME/`, emptied of an earlier run's files.
fn output_dir_named(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-output").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).is_file(),
            "the browser test needs {path} (Debian package {package}): run scripts/setup-test-deps"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver on a free port; returns it and its URL once it
/// answers that it is ready.
async fn start_chromedriver(log: &Path) -> (KillOnDrop, String) {
    let port = free_port();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {CHROMEDRIVER} ({e}): run scripts/setup-test-deps")
        });
    let mut driver = KillOnDrop(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = driver.0.try_wait().unwrap() {
            panic!("chromedriver exited at start ({status}): run scripts/setup-test-deps");
        }
        let ready = match http.get(format!("{url}/status")).send().await {
            Ok(resp) => resp
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true),
            Err(_) => false,
        };
        if ready {
            return (driver, url);
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not become ready in {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The demo's URLs, as it prints them.
struct Demo {
    _process: KillOnDrop,
    idp: String,
    app_a: String,
    app_b: String,
    control: String,
}

fn url_after(lines: &[String], label: &str) -> String {
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

/// Starts the demo binary on free ports with its stores in `data_dir`.
fn start_demo(data_dir: &Path, log: &Path) -> Demo {
    let log = std::fs::File::create(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_idweb-demo"))
        .args(["--idp-listen", "127.0.0.1:0", "--app-listen", "127.0.0.1:0"])
        .args([
            "--app-b-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start idweb-demo");
    let stdout = child.stdout.take().unwrap();
    let process = KillOnDrop(child);
    // Read the URLs on a thread, so that a demo that never prints them
    // fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = tx.send(Err(lines));
                return;
            }
            let done = line.contains("Ctrl-C");
            lines.push(line);
            if done {
                let _ = tx.send(Ok(lines));
                break;
            }
        }
        // Keep reading, so that the demo never blocks on a full pipe.
        let mut sink = String::new();
        while stdout.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    let lines = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(lines)) => lines,
        Ok(Err(lines)) => panic!("the demo exited before printing its URLs: {lines:?}"),
        Err(_) => panic!("the demo printed no URLs in 30 s"),
    };
    let demo = Demo {
        _process: process,
        idp: url_after(&lines, "identity provider:"),
        app_a: url_after(&lines, "App A:"),
        app_b: url_after(&lines, "App B:"),
        control: url_after(&lines, "control room:"),
    };
    assert!(
        demo.app_a.starts_with("http://127.0.0.1:"),
        "{}",
        demo.app_a
    );
    assert!(
        demo.app_b.starts_with("http://localhost:"),
        "{}",
        demo.app_b
    );
    demo
}

/// The browser, with the test's waits and screenshots.
struct Browser {
    driver: WebDriver,
    out: PathBuf,
    shots: std::cell::Cell<usize>,
}

impl Browser {
    async fn url(&self) -> String {
        self.driver
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The text of the first element matching `css`, if there is one.
    async fn text(&self, css: &str) -> Option<String> {
        self.driver.find(By::Css(css)).await.ok()?.text().await.ok()
    }

    /// Polls `probe` until it gives a value; fails the test after [`WAIT`],
    /// saying where the browser is and what it shows.
    async fn wait_for<T>(&self, what: &str, mut probe: impl AsyncFnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe(self).await {
                return value;
            }
            if Instant::now() >= deadline {
                let url = self.url().await;
                let text = self.text("body").await.unwrap_or_default();
                if let Ok(png) = self.driver.screenshot_as_png().await {
                    let _ = std::fs::write(self.out.join("timeout.png"), png);
                }
                panic!(
                    "waited {WAIT:?} for {what}; the browser is at {url} showing:\n{text}\n\
                     (screenshot: timeout.png)"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the page at a URL starting with `url_prefix` shows an
    /// element `css` whose text contains `expected`; returns that text.
    async fn wait_for_page(&self, url_prefix: &str, css: &str, expected: &str) -> String {
        let what = format!("a page at {url_prefix}… whose `{css}` shows “{expected}”");
        self.wait_for(&what, async |b: &Self| {
            if !b.url().await.starts_with(url_prefix) {
                return None;
            }
            b.text(css).await.filter(|t| t.contains(expected))
        })
        .await
    }

    /// Waits for the IdP's login page (the authorization endpoint, or the
    /// login form it posts to) asking to sign in to `client_id`.
    async fn wait_for_idp_login(&self, idp: &str, client_id: &str) {
        let what = format!("the identity provider's login page for {client_id}");
        self.wait_for(&what, async |b: &Self| {
            let url = b.url().await;
            let on_login = url.starts_with(&format!("{idp}/authorize"));
            let asks = b.text("body").await.is_some_and(|t| {
                t.contains(&format!("Sign in to {client_id} as:")) && t.contains("Alice Example")
            });
            let button = b
                .driver
                .find(By::Css("button[name=username][value=alice]"))
                .await
                .is_ok();
            (on_login && asks && button).then_some(())
        })
        .await;
    }

    /// The todo items shown at `url_prefix` once there are `count` of them.
    async fn wait_for_todos(&self, url_prefix: &str, count: usize) -> Vec<String> {
        let what = format!("{count} todo items at {url_prefix}");
        self.wait_for(&what, async |b: &Self| {
            if !b.url().await.starts_with(url_prefix) {
                return None;
            }
            let items = b.driver.find_all(By::Css("#todos li")).await.ok()?;
            let mut texts = Vec::new();
            for item in items {
                texts.push(item.text().await.ok()?);
            }
            (texts.len() == count).then_some(texts)
        })
        .await
    }

    async fn click(&self, css: &str) {
        let element = self
            .wait_for(&format!("a `{css}` to click"), async |b: &Self| {
                b.driver.find(By::Css(css)).await.ok()
            })
            .await;
        element.click().await.unwrap();
    }

    /// The provider session id App A's profile page shows.
    async fn profile_sid(&self) -> String {
        let dd = self
            .driver
            .find(By::XPath(
                "//dt[normalize-space()='Provider session (sid)']/following-sibling::dd[1]",
            ))
            .await
            .unwrap();
        dd.text().await.unwrap()
    }

    /// Saves a screenshot as `NN-name.png`, numbered in the order taken.
    async fn shot(&self, name: &str) {
        let n = self.shots.get() + 1;
        self.shots.set(n);
        let png = self.driver.screenshot_as_png().await.unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
        std::fs::write(self.out.join(format!("{n:02}-{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sso_and_sign_out_everywhere_in_a_real_browser() {
    in_browser("browser", async |b: &Browser, demo: &Demo| {
        story(b, demo).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_room_shows_every_sign_out_emptying_both_caches() {
    in_browser("control-room", async |b: &Browser, demo: &Demo| {
        control_room_story(b, demo).await
    })
    .await;
}

/// Starts the demo and a headless Chromium, runs `story`, and closes the
/// browser; screenshots and logs go to `target/test-output/NAME/`.
async fn in_browser(name: &str, story: impl AsyncFnOnce(&Browser, &Demo)) {
    require_browser();
    let out = output_dir_named(name);
    let data_dir = TempDir::new(&format!("{name}-data"));
    let profile_dir = TempDir::new(&format!("{name}-profile"));
    let demo = start_demo(&data_dir.0, &out.join("demo.log"));
    let (_chromedriver, driver_url) = start_chromedriver(&out.join("driver.log")).await;

    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(CHROMIUM).unwrap();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ] {
        caps.add_arg(arg).unwrap();
    }
    caps.add_arg(&format!("--user-data-dir={}", profile_dir.0.display()))
        .unwrap();
    let driver = WebDriver::builder(driver_url, caps)
        .request_timeout(Duration::from_secs(30))
        .await
        .expect("start a headless Chromium session");
    driver
        .set_window_rect(0, 0, 1280, 1400)
        .await
        .expect("size the window");
    driver
        .set_page_load_timeout(Duration::from_secs(15))
        .await
        .unwrap();
    let browser = Browser {
        driver: driver.clone(),
        out,
        shots: std::cell::Cell::new(0),
    };
    // The browser closes however the story ends.
    let result =
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(story(&browser, &demo)))
            .await;
    let quit = driver.quit().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    if let Err(e) = quit {
        panic!("the browser session failed to close: {e}");
    }
}

async fn story(b: &Browser, demo: &Demo) {
    let (idp, app_a, app_b) = (&demo.idp, &demo.app_a, &demo.app_b);

    // 1. App A's profile needs a user: the browser lands on the IdP's login page.
    b.driver.goto(format!("{app_a}/profile")).await.unwrap();
    b.wait_for_idp_login(idp, "app-a").await;
    b.shot("idp-login").await;

    // 2. Pick alice: back on App A's profile.
    b.click("button[name=username][value=alice]").await;
    b.wait_for_page(&format!("{app_a}/profile"), "#name", "Alice Example")
        .await;
    let first_sid = b.profile_sid().await;
    assert!(
        !first_sid.is_empty() && first_sid != "(none)",
        "{first_sid}"
    );
    b.shot("app-a-profile").await;

    // 3. App A calls the todo API with alice's access token.
    b.driver.goto(format!("{app_a}/todos")).await.unwrap();
    let todos = b.wait_for_todos(&format!("{app_a}/todos"), 2).await;
    assert!(todos[0].contains("Try idweb"), "{todos:?}");
    assert!(todos[1].contains("Sign out everywhere"), "{todos:?}");
    b.shot("app-a-todos").await;

    // 4. App A's token cache holds the session's tokens.
    b.driver.goto(format!("{app_a}/cache")).await.unwrap();
    b.wait_for_page(&format!("{app_a}/cache"), "#cache", "RefreshToken")
        .await;
    b.shot("app-a-cache").await;

    // 5. App B: signed in without a form (single sign-on at the provider):
    //    the browser goes through the provider by redirects alone and must
    //    never stop at its login page.
    b.driver.goto(format!("{app_b}/profile")).await.unwrap();
    b.wait_for(
        "App B's profile showing Alice Example, without a login form",
        async |b: &Browser| {
            let url = b.url().await;
            assert!(
                !(url.starts_with(idp)
                    && b.driver
                        .find(By::Css("button[name=username]"))
                        .await
                        .is_ok()),
                "App B showed the provider's login form: no single sign-on ({url})"
            );
            if !url.starts_with(&format!("{app_b}/profile")) {
                return None;
            }
            b.text("#name").await.filter(|t| t == "Alice Example")
        },
    )
    .await;
    b.shot("app-b-profile-sso").await;

    // 6. App B calls the todo API too.
    b.driver.goto(format!("{app_b}/todos")).await.unwrap();
    let todos = b.wait_for_todos(&format!("{app_b}/todos"), 2).await;
    assert!(todos[0].contains("Try idweb"), "{todos:?}");
    b.shot("app-b-todos").await;

    // 7. Sign out in App B: App B's page posts to the provider's logout,
    //    whose page loads the front-channel iframes…
    b.click("#signout").await;
    // (Read in one go: the page moves on by itself a second after loading.)
    let (iframe_src, continue_link) = b
        .wait_for(
            "the provider's signed-out page with its front-channel iframe",
            async |b: &Browser| {
                if !b.url().await.starts_with(&format!("{idp}/logout")) {
                    return None;
                }
                let frame = b.driver.find(By::Css("iframe")).await.ok()?;
                let src = frame.attr("src").await.ok()??;
                let link = b.text("#continue").await?;
                Some((src, link))
            },
        )
        .await;
    b.shot("idp-signed-out").await;
    assert!(
        iframe_src.starts_with(&format!("{app_b}/signout-oidc?")),
        "{iframe_src}"
    );
    assert_eq!(continue_link, "Continue");

    // 8. …then the meta refresh brings the browser back to App B's signed-out page.
    b.wait_for_page(
        &format!("{app_b}/signout-callback-oidc"),
        "#signed-out",
        "You have signed out.",
    )
    .await;
    b.shot("app-b-signed-out").await;

    // 9. App A heard of it by back-channel: its cache page asks to sign in.
    b.driver.goto(format!("{app_a}/cache")).await.unwrap();
    b.wait_for_idp_login(idp, "app-a").await;
    b.shot("app-a-cache-asks-sign-in").await;

    // 10. App A's home page: not signed in, although the browser still holds
    //     App A's session cookie — the session is gone on the server.
    b.driver.goto(format!("{app_a}/")).await.unwrap();
    b.wait_for_page(&format!("{app_a}/"), "#status", "You are not signed in.")
        .await;
    let cookies = b.driver.get_all_cookies().await.unwrap();
    assert!(
        cookies.iter().any(|c| c.name == "idweb.session"),
        "the browser should still hold App A's old session cookie; it has {:?}",
        cookies.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    b.shot("app-a-home-signed-out").await;

    // 11. Signing in again gives a new session: a new provider session id,
    //     nothing of the old one comes back.
    b.driver.goto(format!("{app_a}/cache")).await.unwrap();
    b.wait_for_idp_login(idp, "app-a").await;
    b.click("button[name=username][value=alice]").await;
    b.wait_for_page(&format!("{app_a}/cache"), "h1", "token cache")
        .await;
    b.driver.goto(format!("{app_a}/profile")).await.unwrap();
    b.wait_for_page(&format!("{app_a}/profile"), "#name", "Alice Example")
        .await;
    let second_sid = b.profile_sid().await;
    assert_ne!(
        first_sid, second_sid,
        "a new provider session after sign-out"
    );
    b.shot("app-a-signed-in-again").await;
}

impl Browser {
    /// Whether an element matches `css`.
    async fn has(&self, css: &str) -> bool {
        self.driver.find(By::Css(css)).await.is_ok()
    }

    /// Waits until the control room (at `control`) shows what `ready` wants.
    async fn wait_for_control_room(&self, control: &str, what: &str, ready: &[&str]) {
        self.wait_for(what, async |b: &Self| {
            if !b.url().await.starts_with(control) {
                return None;
            }
            for css in ready {
                if !b.has(css).await {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// Signs alice in to App A (through the provider's form, or silently)
    /// and App B (single sign-on), and fetches the todos in both, so that
    /// both caches hold an access token.
    async fn sign_in_to_both(&self, demo: &Demo) {
        let (idp, app_a, app_b) = (&demo.idp, &demo.app_a, &demo.app_b);
        self.driver.goto(format!("{app_a}/todos")).await.unwrap();
        let asked = self
            .wait_for(
                "App A's todos or the provider's login page",
                async |b: &Self| {
                    let url = b.url().await;
                    if url.starts_with(&format!("{app_a}/todos")) && b.has("#todos li").await {
                        return Some(false);
                    }
                    (url.starts_with(idp) && b.has("button[name=username][value=alice]").await)
                        .then_some(true)
                },
            )
            .await;
        if asked {
            self.click("button[name=username][value=alice]").await;
            self.wait_for_todos(&format!("{app_a}/todos"), 2).await;
        }
        self.driver.goto(format!("{app_b}/todos")).await.unwrap();
        self.wait_for_todos(&format!("{app_b}/todos"), 2).await;
    }
}

/// The control room: both apps' sessions and cache entries side by side;
/// each sign-out path — the provider's "end all sessions", the operator's
/// eviction, an RP-initiated sign-out in App B — empties both, and the
/// timeline says which app heard it how, and that cache entries went with
/// the sessions (the count the event carries).
async fn control_room_story(b: &Browser, demo: &Demo) {
    let (idp, app_a, app_b, control) = (&demo.idp, &demo.app_a, &demo.app_b, &demo.control);
    let both_full = [
        "#app-a .session .kind-AccessToken",
        "#app-a .session .kind-RefreshToken",
        "#app-b .session .kind-AccessToken",
        "#provider .idp-session",
    ];
    let both_empty = [
        "#app-a .no-sessions",
        "#app-b .no-sessions",
        "#provider .no-sessions",
    ];

    // 1. Signed in to both apps: the control room shows both caches.
    b.sign_in_to_both(demo).await;
    b.driver.goto(format!("{control}/")).await.unwrap();
    b.wait_for_control_room(control, "both apps' sessions and tokens", &both_full)
        .await;
    assert!(b.has("#timeline-empty").await, "no sign-out yet");
    let shown = b.text("#live").await.unwrap();
    assert!(shown.contains("api://todo/todos.read"), "{shown}");
    assert!(!shown.contains("eyJ"), "no token is ever shown: {shown}");
    assert!(
        shown.contains("signed in: ") && !shown.contains("signed in: in "),
        "a sign-in time in the past (microseconds read as seconds once): {shown}"
    );
    b.shot("control-room-signed-in").await;

    // 1b. Local: out of App A only. App A's cache empties; App B and the
    //     provider keep their sessions; then App A signs in again silently.
    b.click("#local-app-a").await;
    b.wait_for_page(&format!("{app_a}/sign-out"), "h1", "sign out")
        .await;
    b.click("#signout-app-only").await;
    b.wait_for_page(app_a, "#signed-out", "You have signed out of this app.")
        .await;
    b.shot("app-a-signed-out-of-this-app-only").await;
    b.driver.goto(format!("{control}/")).await.unwrap();
    b.wait_for_control_room(
        control,
        "App A empty, App B and the provider still signed in",
        &[
            "#app-a .no-sessions",
            "#app-b .session .kind-AccessToken",
            "#provider .idp-session",
            "li[data-app='App A'][data-path='local'].removed.with-entries",
        ],
    )
    .await;
    assert!(
        !b.has("li[data-app='App B'][data-path='local']").await,
        "App B heard nothing of App A's local sign-out"
    );
    b.shot("control-room-after-local-sign-out").await;
    b.sign_in_to_both(demo).await;
    b.driver.goto(format!("{control}/")).await.unwrap();
    b.wait_for_control_room(
        control,
        "App A signed in again (single sign-on)",
        &both_full,
    )
    .await;

    // 2. The provider's "end all sessions": its page loads App B's
    //    front-channel iframe and reports App A's back-channel answer.
    b.click("#end-alice").await;
    b.wait_for_page(idp, "#ended", "Ended 1 IdP session").await;
    assert!(
        b.has("iframe.logout-frame").await,
        "the front-channel iframe"
    );
    let notified = b.text("#notified").await.unwrap();
    assert!(
        notified.contains("app-a") && notified.contains("answered HTTP 200"),
        "{notified}"
    );
    assert!(
        notified.contains("app-b") && notified.contains("iframe rendered in this page"),
        "{notified}"
    );
    b.shot("idp-ended-all-sessions").await;
    b.driver
        .find(By::LinkText("Control room"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_control_room(
        control,
        "both caches empty, App A told by back-channel and App B by front-channel",
        &[
            both_empty.as_slice(),
            &[
                "li[data-app='App A'][data-path='back_channel'].removed.with-entries",
                "li[data-app='App B'][data-path='front_channel'].removed.with-entries",
            ],
        ]
        .concat(),
    )
    .await;
    b.shot("control-room-after-provider-sign-out").await;

    // 3. RP-initiated from App B: its sign-out page, the provider's page
    //    with the iframe, App B's signed-out page (styled, with navigation,
    //    no sign-out buttons), and App A told by back-channel.
    b.sign_in_to_both(demo).await;
    b.driver.goto(format!("{control}/")).await.unwrap();
    b.wait_for_control_room(control, "signed in once more", &both_full)
        .await;
    b.click("#rp-app-b").await;
    b.wait_for_page(&format!("{app_b}/sign-out"), "h1", "sign out")
        .await;
    b.click("#signout-here").await;
    b.wait_for_page(
        &format!("{app_b}/signout-callback-oidc"),
        "#signed-out",
        "You have signed out.",
    )
    .await;
    assert!(
        b.has("header.bar nav").await,
        "the signed-out page has navigation"
    );
    assert!(
        !b.has("#signout").await,
        "no sign-out button for a signed-out user"
    );
    assert!(b.has("#nav-signin").await, "a way to sign in again");
    b.shot("app-b-signed-out").await;
    b.driver
        .find(By::LinkText("Control room"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_control_room(
        control,
        "both caches empty after App B's sign-out",
        &[
            both_empty.as_slice(),
            &["li[data-app='App B'][data-path='rp_initiated'].removed.with-entries"],
        ]
        .concat(),
    )
    .await;
    b.wait_for("App A's second back-channel entry", async |b: &Browser| {
        let entries = b
            .driver
            .find_all(By::Css(
                "li[data-app='App A'][data-path='back_channel'].removed.with-entries",
            ))
            .await
            .ok()?;
        (entries.len() == 2).then_some(())
    })
    .await;
    b.shot("control-room-after-rp-initiated-sign-out").await;
    // 3b. All my sessions in App A: App A's own eviction of every session
    //     of alice, then the provider, which tells App B by its iframe.
    b.sign_in_to_both(demo).await;
    b.driver.goto(format!("{app_a}/sign-out")).await.unwrap();
    b.click("#signout-all-here").await;
    b.wait_for_page(
        &format!("{app_a}/signout-callback-oidc"),
        "#signed-out",
        "You have signed out.",
    )
    .await;
    b.driver.goto(format!("{control}/")).await.unwrap();
    b.wait_for_control_room(
        control,
        "both caches empty after App A's sign-out of all sessions",
        &[
            both_empty.as_slice(),
            &["li[data-app='App A'][data-path='all_sessions'].removed.with-entries"],
        ]
        .concat(),
    )
    .await;
    b.wait_for("App B's second front-channel entry", async |b: &Browser| {
        let entries = b
            .driver
            .find_all(By::Css(
                "li[data-app='App B'][data-path='front_channel'].removed.with-entries",
            ))
            .await
            .ok()?;
        (entries.len() == 2).then_some(())
    })
    .await;
    b.shot("control-room-after-all-sessions-sign-out").await;

    // 4. The operator's eviction (what `idweb cache evict --sub` does). Last:
    //    its (iss, sub) tombstone refuses sessions authenticated before it,
    //    so the provider's still-open session cannot sign alice in again.
    b.sign_in_to_both(demo).await;
    b.driver.goto(format!("{control}/")).await.unwrap();
    b.wait_for_control_room(control, "signed in again", &both_full)
        .await;
    b.click("#evict-alice").await;
    b.wait_for_control_room(
        control,
        "both app caches empty after the operator's eviction",
        &[
            "#app-a .no-sessions",
            "#app-b .no-sessions",
            "li[data-app='App A'][data-path='operator'].removed.with-entries",
            "li[data-app='App B'][data-path='operator'].removed.with-entries",
        ],
    )
    .await;
    b.shot("control-room-after-operator-eviction").await;
}
