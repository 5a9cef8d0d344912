//! idweb against npm `oidc-provider`, a certified OpenID Provider written by
//! others: sign-in and single sign-on through its development login and
//! consent pages, token refresh with rotation, RP-initiated logout with
//! back-channel logout tokens (with and without `sid`), RFC 7009 revocation
//! at sign-out — all with 9.x — and front-channel logout with 6.31.1, the last
//! release that has it.
//!
//! Every scenario runs on the in-memory store, on SQLite, on PostgreSQL and
//! on Redis (with its L1 cache), and checks the app's store (sessions, partitions, entries), not only cookies.
//!
//! The provider runs from `interop/oidc-provider` as a child process; it needs
//! Node.js 20 or later and the pinned npm packages (`scripts/setup-test-deps`
//! installs them). Without them the tests fail; they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idweb::{
    Clock, ManualClock, PartitionKey, Session, Store, SystemClock,
    msal::{CacheEntry, EntryKind},
};
use idweb_store_sqlite::SqliteStore;
use idweb_test_support::{
    AppOptions, TestApp, attrs, browser, form, get_page, location, only_session, origin,
    profile_json, start_app_for,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const SETUP_HINT: &str = "run scripts/setup-test-deps";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The provider process

/// Which `oidc-provider` to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// The pinned 9.x (`server.mjs`): everything but front-channel logout.
    Current,
    /// 6.31.1 (`server-6.cjs`): front-channel logout.
    FrontChannel,
}

impl Release {
    fn script(self) -> &'static str {
        match self {
            Release::Current => "server.mjs",
            Release::FrontChannel => "server-6.cjs",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Release::Current => "oidc-provider",
            Release::FrontChannel => "oidc-provider-6",
        }
    }
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/oidc-provider")
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Node and the pinned package are installed, in the pinned version.
fn check_prerequisites(release: Release) {
    let dir = interop_dir();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): {SETUP_HINT}"));
    assert!(
        node.status.success(),
        "`node --version` failed: {SETUP_HINT}"
    );
    let version = String::from_utf8_lossy(&node.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "Node.js {} is too old (20 or later needed): {SETUP_HINT}",
        version.trim()
    );
    let manifest =
        read_json(&dir.join("package.json")).expect("interop/oidc-provider/package.json");
    let pinned = manifest["dependencies"][release.package()]
        .as_str()
        .expect("pinned dependency");
    let pinned = pinned.rsplit('@').next().unwrap_or(pinned);
    let installed = read_json(
        &dir.join("node_modules")
            .join(release.package())
            .join("package.json"),
    )
    .unwrap_or_else(|| {
        panic!(
            "npm package `{}` is not installed: {SETUP_HINT}",
            release.package()
        )
    });
    assert_eq!(
        installed["version"].as_str(),
        Some(pinned),
        "npm package `{}` is not the pinned version: {SETUP_HINT}",
        release.package()
    );
}

/// A provider event printed by the server (`event NAME {JSON}`).
#[derive(Debug, Clone)]
struct Event {
    name: String,
    detail: Value,
}

/// A running `oidc-provider`; killed when dropped.
#[derive(Debug)]
struct OidcProvider {
    issuer: String,
    events: Arc<Mutex<Vec<Event>>>,
    stderr: Arc<Mutex<String>>,
    _child: Child,
}

impl OidcProvider {
    async fn start(release: Release, clients: Vec<Value>) -> Self {
        check_prerequisites(release);
        let config = json!({ "port": 0, "host": "127.0.0.1", "clients": clients });
        let mut child = Command::new("node")
            .arg(release.script())
            .arg(config.to_string())
            .current_dir(interop_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node` ({e}): {SETUP_HINT}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let err_buf = stderr.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                err_buf
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let sink = events.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(issuer.trim().to_string());
                    }
                } else if let Some(rest) = line.strip_prefix("event ") {
                    let (name, detail) = rest.split_once(' ').unwrap_or((rest, "null"));
                    sink.lock().unwrap().push(Event {
                        name: name.to_string(),
                        detail: serde_json::from_str(detail).unwrap_or(Value::Null),
                    });
                }
            }
        });
        let issuer = match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(issuer)) => issuer,
            outcome => {
                // Let the error output arrive before showing it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let why = if outcome.is_err() {
                    "did not print `ready` in time"
                } else {
                    "exited before it was ready"
                };
                panic!(
                    "oidc-provider ({}) {why}; its error output:\n{}\n({SETUP_HINT} if packages are missing)",
                    release.script(),
                    stderr.lock().unwrap()
                );
            }
        };
        Self {
            issuer,
            events,
            stderr,
            _child: child,
        }
    }

    fn events(&self, name: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.detail.clone())
            .collect()
    }

    /// Waits until an event `name` whose detail satisfies `matches` was printed.
    async fn wait_event(&self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(e) = self.events(name).into_iter().find(|d| matches(d)) {
                return e;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "oidc-provider printed no matching `{name}` event; events: {:?}\nerror output:\n{}",
                    self.events.lock().unwrap(),
                    self.stderr.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// No error event was printed (a back-channel delivery that failed, a
    /// revocation or token request refused, a server error).
    fn assert_no_errors(&self) {
        let errors: Vec<Event> = self
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.name.ends_with(".error") || e.name == "server_error")
            .cloned()
            .collect();
        assert!(
            errors.is_empty(),
            "oidc-provider reported errors: {errors:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Two apps against one provider

/// Where the apps keep sessions and tokens.
#[derive(Debug, Clone, Copy)]
enum StoreKind {
    Memory,
    Sqlite,
    /// Redis at 127.0.0.1:6379 with the L1 cache, under a fresh key prefix.
    Redis,
    /// PostgreSQL at 127.0.0.1:5432, in a fresh schema per app (dropped at the end).
    Postgres,
}

/// The PostgreSQL the tests share: `IDWEB_TEST_POSTGRES_URL`, or the local default.
fn postgres_url() -> String {
    std::env::var("IDWEB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Drops `schema` from a plain thread (usable in `Drop`).
fn drop_schema(schema: String) {
    let url = postgres_url();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            }
        });
    })
    .join();
}

/// On 9.x App A (127.0.0.1) hears sign-outs by back-channel with `sid`, App B
/// (localhost) by back-channel without `sid`; on 6.31.1 App B hears them by
/// front-channel. Different host names keep their cookies apart in one browser.
struct Setup {
    op: OidcProvider,
    a: TestApp,
    b: TestApp,
    files: Vec<PathBuf>,
    schemas: Vec<String>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for schema in self.schemas.drain(..) {
            drop_schema(schema);
        }
        for f in &self.files {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = f.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn db_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("idweb-interop");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!(
        "{}-{}-{name}.db",
        std::process::id(),
        idweb::SessionId::generate().fingerprint()
    ))
}

fn client(id: &str, secret: &str, url: &str) -> Value {
    json!({
        "client_id": id,
        "client_secret": secret,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [format!("{url}/signin-oidc")],
        "post_logout_redirect_uris": [format!("{url}/signout-callback-oidc")],
    })
}

impl Setup {
    async fn start(release: Release, store: StoreKind, clock: Arc<dyn Clock>) -> Self {
        // The provider's client registrations need the apps' URLs, and the
        // apps need the provider to start: hold two free ports until then.
        let hold_a = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let hold_b = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let (port_a, port_b) = (
            hold_a.local_addr().unwrap().port(),
            hold_b.local_addr().unwrap().port(),
        );
        let url_a = format!("http://127.0.0.1:{port_a}");
        let url_b = format!("http://localhost:{port_b}");
        let suffix = idweb::SessionId::generate().fingerprint();
        let (secret_a, secret_b) = (format!("secret-a-{suffix}"), format!("secret-b-{suffix}"));

        let mut client_a = client("app-a", &secret_a, &url_a);
        let mut client_b = client("app-b", &secret_b, &url_b);
        match release {
            Release::Current => {
                client_a["backchannel_logout_uri"] = json!(format!("{url_a}/backchannel-logout"));
                client_a["backchannel_logout_session_required"] = json!(true);
                client_b["backchannel_logout_uri"] = json!(format!("{url_b}/backchannel-logout"));
                client_b["backchannel_logout_session_required"] = json!(false);
            }
            // 6.31.1's logout tokens have `typ: JWT` and no `exp` (they
            // predate Back-Channel Logout errata 1); idweb refuses them, so
            // App A gets no back-channel URI there.
            Release::FrontChannel => {
                client_b["frontchannel_logout_uri"] = json!(format!("{url_b}/signout-oidc"));
                client_b["frontchannel_logout_session_required"] = json!(true);
            }
        }
        let op = OidcProvider::start(release, vec![client_a, client_b]).await;

        let mut files = Vec::new();
        let mut schemas = Vec::new();
        let mut app =
            async |id: &str, secret: &str, host: &'static str, hold: std::net::TcpListener| {
                let store: Option<Arc<dyn Store>> = match store {
                    StoreKind::Memory => None,
                    StoreKind::Redis => {
                        let prefix = format!(
                            "interop-{id}-{}",
                            idweb::SessionId::generate().fingerprint()
                        );
                        let redis = idweb_store_redis::RedisStore::open_with_prefix(
                            "redis://127.0.0.1:6379",
                            &prefix,
                            clock.clone(),
                        )
                        .await
                        .expect("the Redis at 127.0.0.1:6379 must be running");
                        let l1 = idweb_store_redis::CachingStore::new(redis).expect("L1 cache");
                        assert!(
                            l1.wait_until_active(std::time::Duration::from_secs(5))
                                .await
                        );
                        Some(Arc::new(l1))
                    }
                    StoreKind::Postgres => {
                        let schema = format!(
                            "idweb_test_interop_{}_{}",
                            id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                                .to_ascii_lowercase(),
                            idweb::SessionId::generate().fingerprint()
                        );
                        schemas.push(schema.clone());
                        Some(Arc::new(
                            idweb_store_postgres::PostgresConfig::parse(&postgres_url())
                                .expect("the test URL")
                                .with_schema(&schema)
                                .expect("a schema name")
                                .open(clock.clone())
                                .await
                                .expect("the PostgreSQL at 127.0.0.1:5432 must be running"),
                        ))
                    }
                    StoreKind::Sqlite => {
                        let path = db_path(id);
                        files.push(path.clone());
                        Some(Arc::new(
                            SqliteStore::open_with_clock(&path, clock.clone())
                                .await
                                .expect("open SQLite store"),
                        ))
                    }
                };
                let listen = hold.local_addr().unwrap().to_string();
                drop(hold);
                start_app_for(
                    &op.issuer,
                    id,
                    secret,
                    AppOptions {
                        clock: clock.clone(),
                        store,
                        host,
                        extra_env: vec![("IDWEB_LISTEN", listen)],
                        ..AppOptions::default()
                    },
                )
                .await
            };
        let a = app("app-a", &secret_a, "127.0.0.1", hold_a).await;
        let b = app("app-b", &secret_b, "localhost", hold_b).await;
        assert_eq!(a.url, url_a);
        assert_eq!(b.url, url_b);
        Self {
            op,
            a,
            b,
            files,
            schemas,
        }
    }
}

// ---------------------------------------------------------------------------
// The browser's steps

/// What a sign-in went through.
struct SignIn {
    /// `/profile` afterwards.
    profile: Value,
    /// The provider's pages on the way (`login`, `consent`).
    prompts: Vec<String>,
}

/// Signs `user` in to `app` with `prompt=consent`: oidc-provider honours
/// `offline_access` (a refresh token) only then (OpenID Connect Core 1.0 §11).
async fn sign_in(b: &reqwest::Client, app: &TestApp, user: &str) -> SignIn {
    sign_in_with(b, app, user, "&prompt=consent").await
}

/// Signs `user` in to `app` through the provider's development login and
/// consent pages (`query` is added to `/account/signin`).
async fn sign_in_with(b: &reqwest::Client, app: &TestApp, user: &str, query: &str) -> SignIn {
    let callback = app.at("/signin-oidc");
    let mut url = app.at(&format!("/account/signin?returnUrl=%2Fprofile{query}"));
    let mut prompts = Vec::new();
    for _ in 0..20 {
        if url.starts_with(&callback) {
            let resp = get_page(b, &url).await;
            let status = resp.status();
            if status != 303 {
                panic!(
                    "the callback answered {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
            assert_eq!(location(&resp), app.at("/profile"));
            let profile = profile_json(b, app).await.expect("signed in");
            return SignIn { profile, prompts };
        }
        let resp = get_page(b, &url).await;
        if resp.status().is_redirection() {
            url = location(&resp);
            continue;
        }
        let page = resp.url().clone();
        let status = resp.status();
        let html = resp.text().await.unwrap();
        assert!(
            status == 200 && page.path().starts_with("/interaction/"),
            "unexpected {status} at {page}: {html}"
        );
        let (action, mut fields) = form(&html);
        let prompt = fields
            .iter()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no prompt field in the form at {page}: {html}"));
        if prompt == "login" {
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "x".into()));
        }
        prompts.push(prompt);
        let resp = b
            .post(page.join(&action).unwrap())
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_redirection(),
            "the provider answered {} to the {} form",
            resp.status(),
            prompts.last().unwrap()
        );
        url = location(&resp);
    }
    panic!("sign-in did not come back to {callback}");
}

/// Signs out of `app` and, at the provider, of everything (its confirmation
/// form with `logout=yes`); returns the provider's answer to that form.
async fn sign_out_everywhere(b: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    let resp = b
        .post(app.at("/account/signout"))
        .header("origin", origin(&app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the app answers a form to the provider");
    let (action, fields) = form(&resp.text().await.unwrap());
    let resp = b.post(&action).form(&fields).send().await.unwrap();
    let page = resp.url().clone();
    let status = resp.status();
    let html = resp.text().await.unwrap();
    assert_eq!(status, 200, "the provider's logout confirmation: {html}");
    let (confirm, mut fields) = form(&html);
    assert!(
        fields.iter().any(|(k, v)| k == "xsrf" && !v.is_empty()),
        "{html}"
    );
    fields.push(("logout".into(), "yes".into()));
    b.post(page.join(&confirm).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap()
}

async fn stats(app: &TestApp) -> (u64, u64, u64) {
    let s = app.store.stats().await.unwrap();
    (s.sessions, s.partitions, s.entries)
}

async fn assert_empty(app: &TestApp, what: &str) {
    assert_eq!(
        stats(app).await,
        (0, 0, 0),
        "{what}: sessions, partitions and cache entries are all gone"
    );
}

/// `/profile` answers 401 with a JSON body.
async fn assert_profile_401(b: &reqwest::Client, app: &TestApp) {
    let resp = b
        .get(app.at("/profile"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let ct = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let _: Value = resp.json().await.expect("a JSON body");
}

async fn sessions(app: &TestApp) -> Vec<Session> {
    app.store.list_sessions(None, 100).await.unwrap()
}

async fn cached(app: &TestApp, session: &Session) -> Vec<CacheEntry> {
    app.idweb
        .relying_party()
        .token_cache()
        .read(&PartitionKey::Session(session.id.clone()))
        .await
        .unwrap()
        .entries
}

async fn entry_count(app: &TestApp, session: &Session) -> u64 {
    cached(app, session).await.len() as u64
}

fn secret_of(entries: &[CacheEntry], kind: EntryKind) -> String {
    let found: Vec<&CacheEntry> = entries.iter().filter(|e| e.kind() == kind).collect();
    assert_eq!(found.len(), 1, "one {kind:?} in the cache");
    found[0].secret().expect("a secret").to_string()
}

/// A refresh-token grant sent straight to the provider's token endpoint with
/// `app`'s client credentials: (status, JSON body).
async fn redeem(app: &TestApp, refresh_token: &str) -> (u16, Value) {
    let endpoint = &app
        .idweb
        .relying_party()
        .provider()
        .metadata()
        .token_endpoint;
    let resp = reqwest::Client::new()
        .post(endpoint)
        .basic_auth(&app.client_id, Some(&app.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

// ---------------------------------------------------------------------------
// Scenarios (each runs on every store, see the end of the file)

/// One browser signs in to App A (login and consent), then to App B by single
/// sign-on (consent only: a new client); both apps hold a session with
/// tokens, including a refresh token (offline_access with prompt=consent).
async fn sign_in_to_both_apps_with_one_browser(store: StoreKind) {
    let s = Setup::start(Release::Current, store, system_clock()).await;
    let b = browser();
    let a = sign_in(&b, &s.a, "alice").await;
    assert_eq!(a.prompts, ["login", "consent"]);
    let sso = sign_in(&b, &s.b, "alice").await;
    assert_eq!(sso.prompts, ["consent"], "no second login: single sign-on");
    assert_eq!(a.profile["sub"], "alice");
    assert_eq!(a.profile["name"], "alice");
    assert_eq!(sso.profile["sub"], "alice");
    assert!(a.profile["sid"].is_string(), "App A's ID token has a sid");
    assert!(
        sso.profile["sid"].is_null(),
        "App B does not require sessions in logout tokens: no sid"
    );
    assert!(profile_json(&b, &s.a).await.is_some());
    assert!(profile_json(&b, &s.b).await.is_some());

    for app in [&s.a, &s.b] {
        let (sessions_n, partitions, entries) = stats(app).await;
        assert_eq!((sessions_n, partitions), (1, 1), "{}", app.url);
        assert!(
            entries >= 4,
            "account, ID, access and refresh token: {entries}"
        );
        let session = only_session(app).await;
        assert_eq!(session.iss, s.op.issuer);
        assert_eq!(session.sub, "alice");
        let entries = cached(app, &session).await;
        secret_of(&entries, EntryKind::RefreshToken);
        secret_of(&entries, EntryKind::AccessToken);
    }

    // Without prompt=consent oidc-provider drops offline_access: a session
    // with ID and access token, but no refresh token.
    let plain = browser();
    let p = sign_in_with(&plain, &s.a, "carol", "").await;
    assert_eq!(p.prompts, ["login", "consent"]);
    let carol = sessions(&s.a)
        .await
        .into_iter()
        .find(|x| x.sub == "carol")
        .expect("carol's session");
    let entries = cached(&s.a, &carol).await;
    secret_of(&entries, EntryKind::AccessToken);
    assert!(!entries.iter().any(|e| e.kind() == EntryKind::RefreshToken));

    let codes = s.op.events("grant.success");
    assert_eq!(codes.len(), 3, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| c["grant_type"] == "authorization_code")
    );
    s.op.assert_no_errors();
}

/// idweb's clock runs an hour ahead: the cached access token counts as
/// expired, so `token_for_user` redeems the refresh token at the provider
/// and stores the rotated one; the next refresh uses the stored one, and the
/// provider refuses the consumed first one.
async fn token_refresh_rotates_the_refresh_token(store: StoreKind) {
    let clock = Arc::new(ManualClock::starting_now());
    let s = Setup::start(Release::Current, store, clock.clone()).await;
    let b = browser();
    sign_in(&b, &s.a, "alice").await;
    let session = only_session(&s.a).await;
    let rp = s.a.idweb.relying_party();
    let first = cached(&s.a, &session).await;
    let (rt0, at0) = (
        secret_of(&first, EntryKind::RefreshToken),
        secret_of(&first, EntryKind::AccessToken),
    );

    let t = rp
        .token_for_user(&session, &["openid", "profile"])
        .await
        .unwrap();
    assert_eq!(t.secret.secret(), at0, "still valid: from the cache");
    assert!(
        s.op.events("refresh_token.consumed").is_empty(),
        "no refresh yet"
    );

    clock.advance(Duration::from_secs(3600));
    let t1 = rp
        .token_for_user(&session, &["openid", "profile"])
        .await
        .unwrap();
    assert_ne!(t1.secret.secret(), at0, "a new access token");
    assert!(t1.expires_at > clock.unix_now() + 300);
    s.op.wait_event("grant.success", |d| {
        d["grant_type"] == "refresh_token" && d["client_id"] == "app-a"
    })
    .await;
    s.op.wait_event("refresh_token.consumed", |d| d["client_id"] == "app-a")
        .await;
    let second = cached(&s.a, &session).await;
    let rt1 = secret_of(&second, EntryKind::RefreshToken);
    assert_ne!(rt1, rt0, "the rotated refresh token is stored");
    assert_eq!(
        secret_of(&second, EntryKind::AccessToken),
        t1.secret.secret()
    );
    assert_eq!(stats(&s.a).await.0, 1);

    // The stored refresh token is the one the provider honours.
    clock.advance(Duration::from_secs(3600));
    let t2 = rp
        .token_for_user(&session, &["openid", "profile"])
        .await
        .unwrap();
    assert_ne!(t2.secret.secret(), t1.secret.secret());
    let rt2 = secret_of(&cached(&s.a, &session).await, EntryKind::RefreshToken);
    assert_ne!(rt2, rt1);
    assert_eq!(s.op.events("refresh_token.consumed").len(), 2);
    s.op.assert_no_errors();

    // The consumed first refresh token is dead at the provider.
    let (status, body) = redeem(&s.a, &rt0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

/// Sign-out in App B, then at the provider (`logout=yes`): the provider sends
/// back-channel logout tokens; App A's session and every cache entry of it
/// are gone, and App A answers 401.
async fn rp_initiated_logout_from_app_b_reaches_app_a_by_back_channel(store: StoreKind) {
    let s = Setup::start(Release::Current, store, system_clock()).await;
    let b = browser();
    sign_in(&b, &s.a, "alice").await;
    sign_in(&b, &s.b, "alice").await;
    let sid_a = only_session(&s.a)
        .await
        .sid
        .expect("App A's session has a sid");
    assert!(stats(&s.a).await.2 >= 4);

    let resp = sign_out_everywhere(&b, &s.b).await;
    assert_eq!(resp.status(), 303);
    let back = location(&resp);
    assert!(
        back.starts_with(&s.b.at("/signout-callback-oidc?")),
        "{back}"
    );

    let to_a =
        s.op.wait_event("backchannel.success", |d| d["client_id"] == "app-a")
            .await;
    assert_eq!(
        to_a["sid"],
        sid_a.as_str(),
        "App A's logout token names its sid"
    );
    assert_empty(&s.a, "App A").await;
    assert_empty(&s.b, "App B").await;
    assert_profile_401(&b, &s.a).await;
    assert_profile_401(&b, &s.b).await;

    // The provider sends the browser back to App B with the state it was given.
    let resp = get_page(&b, &back).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("You have signed out"));
    s.op.assert_no_errors();
}

/// App B's client does not require sessions: its logout token has no `sid`,
/// so App B ends every session of that user (both browsers), while App A,
/// whose token names the `sid`, ends only the one of the browser that signed
/// out. Another user's session stays.
async fn logout_token_without_sid_ends_every_session_of_the_user(store: StoreKind) {
    let s = Setup::start(Release::Current, store, system_clock()).await;
    let (first, second, bob) = (browser(), browser(), browser());
    sign_in(&first, &s.a, "alice").await;
    sign_in(&first, &s.b, "alice").await;
    let kept = sign_in(&second, &s.a, "alice").await;
    sign_in(&second, &s.b, "alice").await;
    sign_in(&bob, &s.b, "bob").await;
    assert_eq!(stats(&s.a).await.0, 2);
    assert_eq!(stats(&s.b).await.0, 3);

    let resp = sign_out_everywhere(&first, &s.a).await;
    assert_eq!(resp.status(), 303);
    let to_b =
        s.op.wait_event("backchannel.success", |d| d["client_id"] == "app-b")
            .await;
    assert!(
        to_b["sid"].is_null(),
        "App B's logout token has no sid: {to_b}"
    );
    assert_eq!(to_b["sub"], "alice");

    let left_b = sessions(&s.b).await;
    assert_eq!(left_b.len(), 1, "only bob's session is left in App B");
    assert_eq!(left_b[0].sub, "bob");
    assert_eq!(
        stats(&s.b).await,
        (1, 1, entry_count(&s.b, &left_b[0]).await),
        "App B keeps only bob's partition"
    );
    assert_profile_401(&second, &s.b).await;
    assert!(profile_json(&bob, &s.b).await.is_some());

    let left_a = sessions(&s.a).await;
    assert_eq!(
        left_a.len(),
        1,
        "App A ends only the first browser's session"
    );
    assert_eq!(left_a[0].sid.as_deref(), kept.profile["sid"].as_str());
    assert_profile_401(&first, &s.a).await;
    assert!(profile_json(&second, &s.a).await.is_some());
    s.op.assert_no_errors();
}

/// Local sign-out revokes the refresh token (RFC 7009) and the provider
/// accepts it: the token is destroyed there and a refresh with it is refused
/// (`invalid_grant`), while the other session's refresh token still works.
async fn local_sign_out_revokes_the_refresh_token(store: StoreKind) {
    let s = Setup::start(Release::Current, store, system_clock()).await;
    let (first, second) = (browser(), browser());
    let signed_out = sign_in(&first, &s.a, "alice").await;
    sign_in(&second, &s.a, "alice").await;
    let all = sessions(&s.a).await;
    assert_eq!(all.len(), 2);
    let (gone, other): (Vec<Session>, Vec<Session>) = all
        .into_iter()
        .partition(|x| x.sid.as_deref() == signed_out.profile["sid"].as_str());
    let rt_gone = secret_of(&cached(&s.a, &gone[0]).await, EntryKind::RefreshToken);
    let rt_other = secret_of(&cached(&s.a, &other[0]).await, EntryKind::RefreshToken);

    // Only the app: the browser does not go on to the provider.
    let resp = first
        .post(s.a.at("/account/signout"))
        .header("origin", origin(&s.a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.op.wait_event("refresh_token.destroyed", |d| d["client_id"] == "app-a")
        .await;
    s.op.wait_event("grant.revoked", |d| d["route"] == "revocation")
        .await;
    let left = sessions(&s.a).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id.fingerprint(), other[0].id.fingerprint());
    assert_profile_401(&first, &s.a).await;
    s.op.assert_no_errors();

    let (status, body) = redeem(&s.a, &rt_gone).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, body) = redeem(&s.a, &rt_other).await;
    assert_eq!(
        status, 200,
        "the other session's refresh token works: {body}"
    );
}

/// 6.31.1, front-channel: sign-out of App A ends at the provider with a page
/// whose iframe points at App B's `/signout-oidc?iss=&sid=`; loaded as the
/// browser does it cross-site (without App B's cookie), it removes App B's
/// session and every cache entry of it.
async fn front_channel_logout_with_oidc_provider_6(store: StoreKind) {
    let s = Setup::start(Release::FrontChannel, store, system_clock()).await;
    let b = browser();
    let a = sign_in(&b, &s.a, "alice").await;
    assert_eq!(a.prompts, ["login", "consent"]);
    let sso = sign_in(&b, &s.b, "alice").await;
    assert_eq!(sso.prompts, ["consent"]);
    let session_b = only_session(&s.b).await;
    let sid_b = session_b.sid.clone().expect("App B's session has a sid");
    secret_of(&cached(&s.b, &session_b).await, EntryKind::RefreshToken);

    let resp = sign_out_everywhere(&b, &s.a).await;
    assert_eq!(
        resp.status(),
        200,
        "the page with the front-channel iframes"
    );
    let page = resp.text().await.unwrap();
    assert_empty(&s.a, "App A (signed out locally)").await;
    let frames = attrs(&page, "<iframe", "src");
    assert_eq!(frames.len(), 1, "{page}");
    assert!(
        frames[0].starts_with(&s.b.at("/signout-oidc?")),
        "{}",
        frames[0]
    );
    let frame = url::Url::parse(&frames[0]).unwrap();
    let q: HashMap<String, String> = frame.query_pairs().into_owned().collect();
    assert_eq!(q["iss"], s.op.issuer);
    assert_eq!(q["sid"], sid_b);

    assert_eq!(
        stats(&s.b).await.0,
        1,
        "App B is signed in until the iframe loads"
    );
    let resp = reqwest::Client::new()
        .get(frame.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_empty(&s.b, "App B").await;
    assert_profile_401(&b, &s.b).await;
    s.op.assert_no_errors();
}

// ---------------------------------------------------------------------------

macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::StoreKind::Memory).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::StoreKind::Sqlite).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::StoreKind::Redis).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::StoreKind::Postgres).await;
                }
            )*
        }
    };
}

on_every_store!(
    sign_in_to_both_apps_with_one_browser,
    token_refresh_rotates_the_refresh_token,
    rp_initiated_logout_from_app_b_reaches_app_a_by_back_channel,
    logout_token_without_sid_ends_every_session_of_the_user,
    local_sign_out_revokes_the_refresh_token,
    front_channel_logout_with_oidc_provider_6,
);
