//! The apps of the HTTP benchmark (`benches/http.rs`): a real idweb-axum
//! app over a chosen store, with four routes of increasing work
//! ([`BARE`], [`USER`], [`TOKEN`], [`BACKCHANNEL`]); a sign-in driven over
//! HTTP through the development identity provider, as a browser would; the
//! provider's logout tokens; and the in-process RS256 verification of those
//! tokens, the floor the back-channel route is compared with.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use hyper::header::{COOKIE, HeaderValue, LOCATION};
use idweb::{BoxError, MemoryStore, RelyingParty, SessionId, Settings, Store, SystemClock};
use idweb_axum::{ApiRejection, AuthenticatedUser, IdWeb};
use idweb_devidp::{DevClient, DevIdp};
use idweb_store_redis::{CachingStore, RedisStore};
use idweb_store_sqlite::SqliteStore;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::cookie::{CookieStore, Jar};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::HIT_SCOPE;
use crate::cpu::{self, Cpu};

/// A plain axum handler: no extractor, no store.
pub const BARE: &str = "/bare";
/// Extracts [`AuthenticatedUser`]: reads the session cookie and the session.
pub const USER: &str = "/user";
/// Extracts [`AuthenticatedUser`] and gets a token for [`HIT_SCOPE`] (a
/// cache hit).
pub const TOKEN: &str = "/token";
/// idweb's back-channel logout endpoint.
pub const BACKCHANNEL: &str = "/backchannel-logout";

/// The user the benchmark signs in.
pub const USERNAME: &str = "alice";

/// How long connecting to a store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The app's routes besides idweb's own (which [`IdWeb::mount`] adds, with
/// the layer the extractor needs; [`BARE`] is behind that layer too, so
/// that the routes differ only in their handlers).
pub fn router(idweb: &IdWeb) -> Router {
    idweb.mount(
        Router::new()
            .route(BARE, get(bare))
            .route(USER, get(user))
            .route(TOKEN, get(token)),
    )
}

async fn bare() -> &'static str {
    "ok"
}

async fn user(user: AuthenticatedUser) -> &'static str {
    std::hint::black_box(user.sub());
    "ok"
}

async fn token(user: AuthenticatedUser) -> Result<&'static str, ApiRejection> {
    let token = user.token(&[HIT_SCOPE]).await?;
    std::hint::black_box(&token);
    Ok("ok")
}

/// Which store an app uses.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// [`MemoryStore`].
    Memory,
    /// [`SqliteStore`] on a new file in this directory.
    Sqlite(std::path::PathBuf),
    /// [`CachingStore`] (the in-process cache, "L1") over [`RedisStore`]
    /// at this URL, with keys under this prefix.
    RedisL1 {
        /// `redis://HOST:PORT`.
        url: String,
        /// The key prefix.
        prefix: String,
    },
}

impl StoreKind {
    /// The short name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite(_) => "sqlite",
            StoreKind::RedisL1 { .. } => "redis+L1",
        }
    }
}

/// An opened store, with what it needs closing.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    sqlite: Option<SqliteStore>,
    caching: Option<Arc<CachingStore>>,
}

impl OpenedStore {
    /// Opens (creating) the store of `kind`. Call it on the runtime that
    /// will serve the app: a store's background tasks run there.
    ///
    /// # Errors
    /// The store cannot be opened, or the in-process cache does not become
    /// active within 10 seconds.
    pub async fn open(kind: &StoreKind) -> Result<Self, BoxError> {
        Ok(match kind {
            StoreKind::Memory => Self {
                store: Arc::new(MemoryStore::new()),
                sqlite: None,
                caching: None,
            },
            StoreKind::Sqlite(dir) => {
                let path = dir.join(format!(
                    "http-{}.sqlite",
                    SessionId::generate().fingerprint()
                ));
                let s = SqliteStore::from_url(&format!("sqlite://{}", path.display())).await?;
                Self {
                    store: Arc::new(s.clone()),
                    sqlite: Some(s),
                    caching: None,
                }
            }
            StoreKind::RedisL1 { url, prefix } => {
                let redis = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    RedisStore::open_with_prefix(url, prefix, Arc::new(SystemClock)),
                )
                .await
                .map_err(|_| format!("Redis did not answer within {CONNECT_TIMEOUT:?}"))??;
                let cached = Arc::new(CachingStore::new(redis)?);
                if !cached.wait_until_active(CONNECT_TIMEOUT).await {
                    return Err("the in-process cache over Redis did not become active".into());
                }
                Self {
                    store: cached.clone(),
                    sqlite: None,
                    caching: Some(cached),
                }
            }
        })
    }

    /// The in-process cache, for the Redis store.
    pub fn caching(&self) -> Option<&Arc<CachingStore>> {
        self.caching.as_ref()
    }

    /// Closes the store (SQLite: waits for its connections to close).
    pub async fn close(&self) {
        if let Some(s) = &self.sqlite {
            s.close().await;
        }
    }
}

/// A listener bound on a free loopback port, and the app URL it serves.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The address.
    pub addr: SocketAddr,
}

impl Bound {
    /// Binds `127.0.0.1:0`. Call it on the runtime that will serve the app.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn new() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            url: format!("http://{addr}"),
            addr,
        })
    }
}

/// A client registration at the provider, shared by every app of a run
/// (one redirect URI per app), so that one set of logout tokens serves all
/// of them.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client id (the logout tokens' `aud`).
    pub client_id: String,
    secret: String,
}

impl Client {
    /// Registers a new client at `idp` for the apps at `app_urls`.
    pub fn register(idp: &DevIdp, app_urls: &[&str]) -> Self {
        let client_id = format!("http-bench-{}", SessionId::generate().fingerprint());
        let secret = format!("secret-{}", SessionId::generate().fingerprint());
        let mut client = DevClient::new(client_id.as_str(), secret.as_str(), "");
        client.redirect_uris = app_urls
            .iter()
            .map(|u| format!("{u}/signin-oidc"))
            .collect();
        idp.register_client(client);
        Self { client_id, secret }
    }

    /// The settings of the app at `url`: sign-in asks for
    /// [`TOKEN_TARGET`](crate::TOKEN_TARGET) besides `openid profile
    /// offline_access`, so that the sign-in leaves a token for
    /// [`HIT_SCOPE`] in the session's cache.
    ///
    /// # Errors
    /// The settings do not validate.
    pub fn settings(&self, idp: &DevIdp, url: &str) -> Result<Settings, BoxError> {
        let env = [
            ("IDWEB_AUTHORITY", idp.issuer().to_string()),
            ("IDWEB_CLIENT_ID", self.client_id.clone()),
            ("IDWEB_CLIENT_SECRET", self.secret.clone()),
            ("IDWEB_PUBLIC_URL", url.to_string()),
            (
                "IDWEB_SCOPES",
                format!("openid profile offline_access {}", crate::TOKEN_TARGET),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v));
        Ok(Settings::from_sources(None, env)?)
    }
}

/// A running app.
#[derive(Debug)]
pub struct WebApp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its store.
    pub store: OpenedStore,
    server: JoinHandle<()>,
}

impl WebApp {
    /// Builds the relying party (which fetches the provider's discovery
    /// document and keys) and serves [`router`] on `bound`. Call it on the
    /// runtime that is to serve the app.
    ///
    /// # Errors
    /// The relying party cannot start.
    pub async fn start(
        bound: Bound,
        settings: Settings,
        store: OpenedStore,
    ) -> Result<Self, BoxError> {
        let rp = RelyingParty::builder(settings)
            .with_store(store.store.clone())
            .build()
            .await?;
        let app = router(&IdWeb::new(rp));
        let listener = bound.listener;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("the benchmark app stopped: {e}");
            }
        });
        Ok(Self {
            url: bound.url,
            addr: bound.addr,
            store,
            server,
        })
    }

    /// The `Host` header value of the app.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stops serving and closes the store.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.store.close().await;
    }
}

/// Signs [`USERNAME`] in to the app at `app_url` the way a browser does
/// (the provider must sign users in automatically): `GET
/// /account/signin`, the redirects to the provider and back, the callback;
/// then checks that [`TOKEN`] answers 200 with the session cookie. Returns
/// the `Cookie` header to send.
///
/// # Errors
/// A step answers something else than expected.
pub async fn sign_in(app_url: &str) -> Result<HeaderValue, BoxError> {
    let jar = Arc::new(Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let landing = format!("{app_url}{TOKEN}");
    let mut url = format!("{app_url}/account/signin?returnUrl=%2Ftoken&loginHint={USERNAME}");
    for _ in 0..10 {
        if url == landing {
            break;
        }
        let resp = browser.get(&url).send().await?;
        let status = resp.status();
        if !status.is_redirection() {
            return Err(format!("sign-in stopped at a {status} answer").into());
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .ok_or("a redirect without Location")?
            .to_str()?;
        url = resp.url().join(location)?.to_string();
    }
    if url != landing {
        return Err("the sign-in did not come back to the app".into());
    }
    let cookie = jar
        .cookies(&url::Url::parse(&landing)?)
        .ok_or("no session cookie after the sign-in")?;
    let status = reqwest::Client::new()
        .get(&landing)
        .header(COOKIE, cookie.clone())
        .header("accept", "application/json")
        .send()
        .await?
        .status();
    if status != 200 {
        return Err(format!("{TOKEN} answered {status} after the sign-in").into());
    }
    Ok(cookie)
}

/// `count` distinct logout tokens from `idp` for `client_id`, each for a
/// provider session no app knows (`sid` drawn at random, `sub` a user no
/// app knows), signed by the provider's current key with a fresh `jti`,
/// valid for 120 seconds: what the provider sends on a back-channel logout.
/// Signing takes `threads` threads named `name`.
///
/// # Errors
/// A thread cannot be started, or signing fails.
pub fn logout_tokens(
    idp: &DevIdp,
    client_id: &str,
    count: usize,
    threads: usize,
    name: &str,
) -> Result<Vec<String>, BoxError> {
    let run = SessionId::generate().fingerprint();
    let threads = threads.max(1);
    let per = count.div_ceil(threads);
    let parts: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (idp, run) = (idp.clone(), run.clone());
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn_scoped(scope, move || {
                        (t * per..((t + 1) * per).min(count))
                            .map(|i| {
                                idp.logout_token_for(
                                    client_id,
                                    Some("bench-unknown-user"),
                                    Some(&format!("bench-{run}-{i}")),
                                )
                            })
                            .collect::<Vec<String>>()
                    })
            })
            .collect::<Result<_, _>>()?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| BoxError::from("a signing thread panicked"))
            })
            .collect::<Result<Vec<_>, BoxError>>()
    })?;
    let tokens: Vec<String> = parts.into_iter().flatten().collect();
    if tokens.len() != count || tokens.iter().any(String::is_empty) {
        return Err("the provider could not sign every logout token".into());
    }
    Ok(tokens)
}

/// The form body of a back-channel logout request carrying `token`.
pub fn logout_form(token: &str) -> Bytes {
    Bytes::from(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", token)
            .finish(),
    )
}

/// Verifies logout tokens as a relying party would, with jsonwebtoken and
/// the provider's public key: RS256 signature, `iss`, `aud`, `exp`.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// Fetches the provider's JWKS and takes its (first) key.
    ///
    /// # Errors
    /// The JWKS cannot be fetched or has no RSA key.
    pub async fn new(idp: &DevIdp, client_id: &str) -> Result<Self, BoxError> {
        let jwks: serde_json::Value = reqwest::get(format!("{}/jwks", idp.issuer()))
            .await?
            .error_for_status()?
            .json()
            .await?;
        let key = &jwks["keys"][0];
        let (Some(n), Some(e)) = (key["n"].as_str(), key["e"].as_str()) else {
            return Err("the provider's JWKS has no RSA key".into());
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[idp.issuer()]);
        validation.set_audience(&[client_id]);
        Ok(Self {
            key: DecodingKey::from_rsa_components(n, e)?,
            validation,
        })
    }

    /// Whether `token` verifies.
    pub fn verify(&self, token: &str) -> bool {
        jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation).is_ok()
    }
}

/// What [`verify_all`] measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyReport {
    /// Tokens that verified.
    pub verified: u64,
    /// Tokens that did not.
    pub failed: u64,
    /// Wall time, from the start of the first thread to the end of the last.
    pub elapsed: Duration,
    /// CPU of the verifying threads.
    pub cpu: Cpu,
}

impl VerifyReport {
    /// Verifications per second.
    pub fn rate(&self) -> f64 {
        self.verified as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Microseconds of CPU per verification.
    pub fn us_per_token(&self) -> Option<f64> {
        (self.verified > 0 && self.cpu.run_ns > 0)
            .then(|| self.cpu.run_ns as f64 / 1e3 / self.verified as f64)
    }
}

/// Verifies every token once, split over `threads` threads named `name`.
///
/// # Errors
/// A thread cannot be started or panics.
pub fn verify_all(
    verifier: &Verifier,
    tokens: &[String],
    threads: usize,
    name: &str,
) -> Result<VerifyReport, BoxError> {
    let threads = threads.max(1);
    let per = tokens.len().div_ceil(threads).max(1);
    let start = Instant::now();
    let results: Vec<(u64, u64, Cpu)> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .chunks(per)
            .map(|chunk| {
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn_scoped(scope, move || {
                        let before = cpu::this_thread().unwrap_or_default();
                        let ok = chunk.iter().filter(|t| verifier.verify(t)).count() as u64;
                        let used = cpu::this_thread().unwrap_or_default().since(before);
                        (ok, chunk.len() as u64 - ok, used)
                    })
            })
            .collect::<Result<_, _>>()?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| BoxError::from("a verifying thread panicked"))
            })
            .collect::<Result<Vec<_>, BoxError>>()
    })?;
    let elapsed = start.elapsed();
    let mut report = VerifyReport {
        elapsed,
        ..VerifyReport::default()
    };
    for (ok, failed, used) in results {
        report.verified += ok;
        report.failed += failed;
        report.cpu.run_ns += used.run_ns;
        report.cpu.wait_ns += used.wait_ns;
    }
    Ok(report)
}

/// The type of the file system holding `path` (from `/proc/mounts`: the
/// longest mount point that is a prefix of it), e.g. `ext4` or `tmpfs`.
pub fn file_system_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}
