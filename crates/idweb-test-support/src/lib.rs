//! Shared helpers for idweb's integration tests: a development identity
//! provider, relying-party apps on bound listeners, and a cookie-keeping
//! "browser" that does not follow redirects (tests follow them one by one).
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use idweb::{ClientAuthMethod, Clock, Settings, Store, SystemClock};
use idweb_axum::{AuthenticatedUser, IdWeb};
use idweb_devidp::{DevClient, DevIdp, DevIdpConfig};
use reqwest::header::{ACCEPT, LOCATION};
use tokio::net::TcpListener;
use url::Url;

pub use idweb_devidp;

mod controlled;
pub use controlled::{ControlledStore, Gate};

pub mod relay;
pub use relay::DelayRelay;

/// Starts a development IdP on 127.0.0.1 with alice and bob.
pub async fn dev_idp(auto_login: bool) -> DevIdp {
    DevIdp::start(
        ([127, 0, 0, 1], 0).into(),
        DevIdpConfig {
            auto_login,
            ..DevIdpConfig::default()
        },
    )
    .await
    .expect("start the dev IdP")
}

/// How to build a test app.
pub struct AppOptions {
    pub client_id: String,
    pub client_auth: ClientAuthMethod,
    pub clock: Arc<dyn Clock>,
    pub min_jwks_refetch_interval: Duration,
    /// More `IDWEB_*` settings (scopes, downstream APIs, keys, ...).
    pub extra_env: Vec<(&'static str, String)>,
    /// The store; default the one the settings name (`IDWEB_STORE` in
    /// `extra_env`, else a new `MemoryStore` on `clock`), opened as
    /// `IdWeb::builder` opens it.
    pub store: Option<Arc<dyn Store>>,
    /// The app's routes; default a public `/` and a protected JSON `/profile`.
    pub routes: Option<fn(&IdWeb) -> Router>,
    /// The host name of the public URL: `127.0.0.1` (default) or `localhost`.
    /// Two apps used by one browser need different host names, since
    /// browsers keep cookies per host, not per port.
    pub host: &'static str,
    /// The client registration at the IdP (redirect URI filled in); lets a
    /// test add logout URIs. Default: a plain client.
    pub client: fn(DevClient, &str) -> DevClient,
    /// The client secret; default a fresh random one.
    pub client_secret: Option<String>,
    /// Whether to register the client at the IdP (another instance of the
    /// same app needs no registration of its own). Default true.
    pub register: bool,
    /// The path of the public URL (`/portal`: the app is served below
    /// `http://host:port/portal`); `TestApp::url` stays the origin. Default
    /// none.
    pub path_base: &'static str,
    /// Serve with `idweb_axum::serve`, configured by this function, rather
    /// than with `axum::serve`. Default `None`.
    pub serve: Option<fn(idweb_axum::Serve) -> idweb_axum::Serve>,
    /// The time bound of sign-out listeners; default the builder's.
    pub sign_out_listener_timeout: Option<Duration>,
    /// The instance's name in audit events; default the builder's.
    pub instance_id: Option<&'static str>,
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            client_id: format!("app-{}", idweb::SessionId::generate().fingerprint()),
            client_auth: ClientAuthMethod::ClientSecretBasic,
            clock: Arc::new(SystemClock),
            min_jwks_refetch_interval: Duration::from_secs(30),
            extra_env: Vec::new(),
            store: None,
            routes: None,
            host: "127.0.0.1",
            client: |c, _| c,
            client_secret: None,
            register: true,
            path_base: "",
            serve: None,
            sign_out_listener_timeout: None,
            instance_id: None,
        }
    }
}

/// A relying-party app served on a bound loopback listener, with a public `/`
/// and a protected `/profile` (HTML, or JSON `{sub, name, sid}`).
#[derive(Debug)]
pub struct TestApp {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    pub store: Arc<dyn Store>,
    pub idweb: IdWeb,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    /// `self.url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Live sessions in the app's store.
    pub async fn session_count(&self) -> u64 {
        self.store.session_count().await.expect("count sessions")
    }
}

/// Registers a client at `idp` and starts an app using it.
pub async fn start_app(idp: &DevIdp, options: AppOptions) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let url = app_url(&listener, options.host);
    let secret = options
        .client_secret
        .clone()
        .unwrap_or_else(|| format!("secret-{}", idweb::SessionId::generate().fingerprint()));
    let client_id = options.client_id.clone();
    // Registered with the URIs the app's settings give (its callback paths
    // and the path of its public URL, when `extra_env` sets them).
    let settings = app_settings(&url, idp.issuer(), &client_id, &secret, &options);
    let mut client = DevClient::new(
        options.client_id.as_str(),
        secret.as_str(),
        settings.redirect_uri().to_string(),
    );
    client.post_logout_redirect_uris = vec![settings.post_logout_redirect_uri().to_string()];
    if options.register {
        idp.register_client((options.client)(client, &url));
    }
    serve_app(listener, url, idp.issuer(), &client_id, &secret, options).await
}

/// Starts an app against any provider at `issuer`, with a client registered
/// there beforehand (`client_id`, `client_secret`; `options.client_id`,
/// `options.client_secret`, `options.client` and `options.register` are not
/// used). The app listens on `IDWEB_LISTEN` when `options.extra_env` sets it
/// (so that a provider configured before the app starts can know its URIs),
/// else on a free port of 127.0.0.1.
pub async fn start_app_for(
    issuer: &str,
    client_id: &str,
    client_secret: &str,
    options: AppOptions,
) -> TestApp {
    let listen = options
        .extra_env
        .iter()
        .rev()
        .find(|(k, _)| *k == "IDWEB_LISTEN")
        .map_or_else(|| "127.0.0.1:0".to_string(), |(_, v)| v.clone());
    let listener = TcpListener::bind(listen.as_str())
        .await
        .unwrap_or_else(|e| panic!("bind app on {listen}: {e}"));
    let url = app_url(&listener, options.host);
    serve_app(listener, url, issuer, client_id, client_secret, options).await
}

/// `http://{host}:{port of listener}`.
fn app_url(listener: &TcpListener, host: &str) -> String {
    format!(
        "http://{host}:{}",
        listener.local_addr().expect("addr").port()
    )
}

/// The settings of a test app at `url` (its origin): the `IDWEB_*` of the
/// client, then `options.extra_env` (which may replace any of them).
fn app_settings(
    url: &str,
    issuer: &str,
    client_id: &str,
    secret: &str,
    options: &AppOptions,
) -> Settings {
    let auth = match options.client_auth {
        ClientAuthMethod::ClientSecretPost => "client_secret_post",
        _ => "client_secret_basic",
    };
    let env: Vec<(String, String)> = [
        ("IDWEB_AUTHORITY", issuer.to_string()),
        ("IDWEB_CLIENT_ID", client_id.to_string()),
        ("IDWEB_CLIENT_SECRET", secret.to_string()),
        ("IDWEB_PUBLIC_URL", format!("{url}{}", options.path_base)),
        ("IDWEB_CLIENT_AUTH", auth.to_string()),
    ]
    .into_iter()
    .chain(options.extra_env.iter().cloned())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Settings::from_sources(None, env).expect("settings")
}

/// Builds the relying party of a test app and serves it on `listener`.
async fn serve_app(
    listener: TcpListener,
    url: String,
    issuer: &str,
    client_id: &str,
    secret: &str,
    options: AppOptions,
) -> TestApp {
    let settings = app_settings(&url, issuer, client_id, secret, &options);
    // As an app would: the store the settings name (`IDWEB_STORE` in
    // `extra_env`; default `memory`, on `clock`) unless one is given.
    let mut builder = IdWeb::builder(settings)
        .with_clock(options.clock.clone())
        .with_min_jwks_refetch_interval(options.min_jwks_refetch_interval);
    if let Some(store) = options.store {
        builder = builder.with_store(store);
    }
    if let Some(id) = options.instance_id {
        builder = builder.with_instance_id(id);
    }
    if let Some(timeout) = options.sign_out_listener_timeout {
        builder = builder.with_sign_out_listener_timeout(timeout);
    }
    let idweb = builder
        .build()
        .await
        .unwrap_or_else(|e| panic!("start the app: {}", error_chain(&e)));
    let store = idweb.relying_party().store().clone();
    let app = match options.routes {
        Some(routes) => routes(&idweb),
        None => idweb.mount(
            Router::new().route("/", get(|| async { "home" })).route(
                "/profile",
                get(|user: AuthenticatedUser| async move {
                    axum::Json(serde_json::json!({ "sub": user.sub(), "name": user.name(), "sid": user.sid() }))
                }),
            ),
        ),
    };
    let server = match options.serve {
        Some(configure) => {
            let server = configure(idweb_axum::serve(listener, app));
            tokio::spawn(async move {
                let _ = server.await;
            })
        }
        None => tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }),
    };
    TestApp {
        url,
        client_id: client_id.to_string(),
        client_secret: secret.to_string(),
        store,
        idweb,
        server,
    }
}

/// An error and its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A browser: keeps cookies, follows no redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// [`browser`] for tests that restart a server on the same port: it keeps
/// no idle connection, so the first request after the restart cannot go
/// out on a pooled keep-alive connection to the stopped process (which
/// fails it with "connection closed before message completed").
pub fn browser_across_restarts() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// The `Location` of a redirect, resolved against the request URL.
pub fn location(resp: &reqwest::Response) -> String {
    let loc = resp
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| {
            panic!(
                "no Location header in a {} response from {}",
                resp.status(),
                resp.url()
            )
        })
        .to_str()
        .expect("ascii Location");
    resp.url()
        .join(loc)
        .expect("resolvable Location")
        .to_string()
}

/// GET with the browser.
pub async fn get_page(browser: &reqwest::Client, url: &str) -> reqwest::Response {
    browser.get(url).send().await.expect("GET")
}

/// Follows redirects from `url` until a non-redirect answer; returns it.
pub async fn follow(browser: &reqwest::Client, url: &str) -> reqwest::Response {
    let mut url = url.to_string();
    for _ in 0..10 {
        let resp = get_page(browser, &url).await;
        if !resp.status().is_redirection() {
            return resp;
        }
        url = location(&resp);
    }
    panic!("too many redirects");
}

/// Follows redirects from `url` until the next one would go to `stop_prefix`;
/// returns that URL without requesting it.
pub async fn follow_until(browser: &reqwest::Client, url: &str, stop_prefix: &str) -> String {
    let mut url = url.to_string();
    for _ in 0..10 {
        if url.starts_with(stop_prefix) {
            return url;
        }
        let resp = get_page(browser, &url).await;
        assert!(
            resp.status().is_redirection(),
            "expected a redirect from {url}, got {}",
            resp.status()
        );
        url = location(&resp);
    }
    panic!("too many redirects");
}

/// Signs `username` in to `app` through the IdP's automatic mode
/// (`loginHint`), and returns the JSON of `/profile`.
pub async fn sign_in(
    browser: &reqwest::Client,
    app: &TestApp,
    username: &str,
) -> serde_json::Value {
    sign_in_at(browser, &app.url, username).await
}

/// Signs `username` in to the app at `base` (its origin) through the IdP's
/// automatic mode, and returns the JSON of `/profile`.
pub async fn sign_in_at(
    browser: &reqwest::Client,
    base: &str,
    username: &str,
) -> serde_json::Value {
    let start = format!("{base}/account/signin?returnUrl=%2Fprofile&loginHint={username}");
    let callback = follow_until(browser, &start, &format!("{base}/signin-oidc")).await;
    let resp = get_page(browser, &callback).await;
    assert_eq!(
        resp.status(),
        303,
        "callback: {}",
        resp.text().await.unwrap_or_default()
    );
    assert_eq!(location(&resp), format!("{base}/profile"));
    profile_json_at(browser, base).await.expect("signed in")
}

/// `/profile` as JSON, or `None` when the app answers 401.
pub async fn profile_json(browser: &reqwest::Client, app: &TestApp) -> Option<serde_json::Value> {
    profile_json_at(browser, &app.url).await
}

/// `{base}/profile` as JSON, or `None` when the app answers 401.
pub async fn profile_json_at(browser: &reqwest::Client, base: &str) -> Option<serde_json::Value> {
    let resp = browser
        .get(format!("{base}/profile"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .expect("GET /profile");
    match resp.status().as_u16() {
        200 => Some(resp.json().await.expect("profile JSON")),
        401 => None,
        other => panic!("/profile answered {other}"),
    }
}

/// The hidden fields and the action of the first form in `html`, with the
/// submit button `name=value` added.
pub fn form_fields(html: &str, button: (&str, &str)) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input type=\"hidden\"") {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("input end");
        let tag = &rest[..end];
        fields.push((attr(tag, "name"), attr(tag, "value")));
    }
    fields.push((button.0.to_string(), button.1.to_string()));
    fields
}

fn attr(tag: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    let start = tag.find(&key).expect("attribute") + key.len();
    let end = tag[start..].find('"').expect("attribute end") + start;
    unescape(&tag[start..end])
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `Set-Cookie` headers of `resp`.
pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| {
            v.to_str()
                .expect("a Set-Cookie header in ASCII")
                .to_string()
        })
        .collect()
}

/// The only session `app`'s store holds (panics unless there is exactly one).
pub async fn only_session(app: &TestApp) -> idweb::Session {
    let mut sessions = app.store.list_sessions(None, 10).await.expect("list");
    assert_eq!(
        sessions.len(),
        1,
        "one session in {}: {sessions:?}",
        app.url
    );
    sessions.remove(0)
}

/// The origin of a URL, e.g. `http://127.0.0.1:1234`.
pub fn origin(url: &str) -> String {
    Url::parse(url).expect("url").origin().ascii_serialization()
}

/// The values of attribute `attr` of every tag starting with `tag` (e.g.
/// `<iframe`) in `html`, HTML-unescaped.
pub fn attrs(html: &str, tag: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(tag) {
        rest = &rest[i + tag.len()..];
        let end = rest.find('>').unwrap_or(rest.len());
        let t = &rest[..end];
        let key = format!("{attr}=\"");
        if let Some(start) = t.find(&key) {
            let v = &t[start + key.len()..];
            if let Some(stop) = v.find('"') {
                out.push(unescape(&v[..stop]));
            }
        }
    }
    out
}

/// The action of the first form in `html` and its hidden fields.
pub fn form(html: &str) -> (String, Vec<(String, String)>) {
    let action = attrs(html, "<form", "action")
        .into_iter()
        .next()
        .expect("a form");
    let mut fields = form_fields(html, ("", ""));
    fields.pop();
    (action, fields)
}
