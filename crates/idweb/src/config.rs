//! Typed settings, loaded from a TOML file and `IDWEB_*` environment
//! variables, validated once at start-up.
//!
//! Every key can come from the file (`client_id = "..."`) or from the
//! environment (`IDWEB_CLIENT_ID`); the environment wins. For people coming
//! from Microsoft.Identity.Web, an `[AzureAd]` section (`Instance`,
//! `TenantId`, `ClientId`, `ClientSecret`, `CallbackPath`,
//! `SignedOutCallbackPath`, `RemoteSignOutPath`, and idweb's
//! `AllowedTenants` and `ClientCapabilities`) and the matching `AzureAd__*`
//! variables are accepted too.
//!
//! Route paths (`callback_path`, `signed_out_callback_path`, ...) are
//! relative to the public URL: with `public_url = "https://app.example/portal"`
//! the redirect URI is `https://app.example/portal/signin-oidc`, and
//! `idweb-axum` serves every route (the app's too) under `/portal`.
//!
//! ```
//! use idweb::Settings;
//!
//! let settings = Settings::from_sources(
//!     Some(r#"
//!         authority = "https://login.example.com"
//!         client_id = "my-app"
//!         public_url = "https://app.example.com"
//!     "#),
//!     [
//!         ("IDWEB_CLIENT_SECRET".to_string(), "s3cret".to_string()),
//!         ("IDWEB_COOKIE_KEY".to_string(), "a".repeat(88)),
//!         ("IDWEB_CACHE_KEYS".to_string(), format!("k1:{}", "A".repeat(43) + "=")),
//!     ],
//! )
//! .unwrap();
//! assert_eq!(settings.redirect_uri().as_str(), "https://app.example.com/signin-oidc");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use url::Url;

use crate::crypto::random_bytes;
use crate::keys::CacheKeys;
use crate::secret::Secret;

mod store_url;
pub use store_url::StoreUrl;

/// Keys of the file starting with this (`store_prefix`), and variables
/// starting with [`STORE_OPTION_VAR`] (`IDWEB_STORE_PREFIX`), are options of the store.
const STORE_OPTION_KEY: &str = "store_";
const STORE_OPTION_VAR: &str = "IDWEB_STORE_";

/// The default of [`Settings::signed_out_callback_path`] (Microsoft.Identity.Web's).
pub(crate) const DEFAULT_SIGNED_OUT_CALLBACK_PATH: &str = "/signout-callback-oidc";

/// A configuration problem found at start-up. It names the key to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is absent.
    #[error("missing setting {key}: {hint}")]
    Missing {
        /// The setting, as `file_key (ENV_VAR)`.
        key: String,
        /// What to put there.
        hint: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting, as `file_key (ENV_VAR)` or the name it was given under.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("cannot read configuration file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 §2.3.1). The default.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
}

/// How RP-initiated logout reaches the provider (see [`Settings::end_session_method`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EndSessionMethod {
    /// A form POST with `id_token_hint` (keeps the token out of URLs).
    #[default]
    Post,
    /// A GET redirect without `id_token_hint`.
    Get,
}

/// Where a key (cookie key, cache keys) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Configured (`IDWEB_COOKIE_KEY`, `IDWEB_CACHE_KEYS` or the file).
    Configured,
    /// Generated at start because none was configured and the public URL is
    /// a loopback address: what it protects will not survive a restart.
    Generated,
}

/// A downstream web API the app calls on behalf of its users.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownstreamApiSettings {
    /// The API's base URL; request paths are appended to it.
    pub base_url: Url,
    /// The scopes to ask a token for.
    pub scopes: Vec<String>,
}

/// Validated settings of one relying party (web app).
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The issuer URL of the OpenID Provider; discovery is at
    /// `{authority}/.well-known/openid-configuration`. (`IDWEB_AUTHORITY`)
    pub authority: Url,
    /// The client id registered at the provider. (`IDWEB_CLIENT_ID`)
    pub client_id: String,
    /// The client secret. (`IDWEB_CLIENT_SECRET`)
    pub client_secret: Secret,
    /// How the secret is sent to the token endpoint. Default `client_secret_basic`. (`IDWEB_CLIENT_AUTH`)
    pub client_auth: ClientAuthMethod,
    /// The external base URL of the app, without a trailing slash. (`IDWEB_PUBLIC_URL`)
    pub public_url: Url,
    /// The path of the redirect URI, below the public URL. Default
    /// `/signin-oidc`. (`IDWEB_CALLBACK_PATH`, `[AzureAd] CallbackPath`)
    pub callback_path: String,
    /// The path of the post-logout redirect URI (where the provider sends
    /// the browser back after RP-initiated logout), below the public URL.
    /// Default `/signout-callback-oidc`. (`IDWEB_SIGNED_OUT_CALLBACK_PATH`,
    /// `[AzureAd] SignedOutCallbackPath`)
    pub signed_out_callback_path: String,
    /// The path of the front-channel logout URI, below the public URL.
    /// Default `/signout-oidc`. (`IDWEB_REMOTE_SIGN_OUT_PATH`,
    /// `[AzureAd] RemoteSignOutPath`)
    pub remote_sign_out_path: String,
    /// The path of the back-channel logout URI, below the public URL.
    /// Default `/backchannel-logout`. (`IDWEB_BACK_CHANNEL_LOGOUT_PATH`)
    pub back_channel_logout_path: String,
    /// The path that starts a sign-in (`GET`), below the public URL.
    /// Default `/account/signin`. (`IDWEB_SIGN_IN_PATH`)
    pub sign_in_path: String,
    /// The path that signs out (`POST`), below the public URL.
    /// Default `/account/signout`. (`IDWEB_SIGN_OUT_PATH`)
    pub sign_out_path: String,
    /// The liveness probe (`GET`, answers 200 while the process serves),
    /// below the public URL. Default `/healthz`. (`IDWEB_HEALTH_PATH`)
    pub health_path: String,
    /// The readiness probe (`GET`, 200 when the provider's metadata is
    /// loaded, the store answers and its subscriptions are live, else 503),
    /// below the public URL. Default `/readyz`. (`IDWEB_READY_PATH`)
    pub ready_path: String,
    /// The address the app listens on. Default `127.0.0.1:5000`. (`IDWEB_LISTEN`)
    pub listen: SocketAddr,
    /// Scopes requested at sign-in. Default `openid profile offline_access`; `openid` is always included. (`IDWEB_SCOPES`)
    pub scopes: Vec<String>,
    /// The store: a URL the store crates understand (`memory`,
    /// `sqlite://PATH`, `redis://HOST:PORT`, ...), with its options
    /// (`IDWEB_STORE_NAME` variables, `store_name` keys). Default `memory`.
    /// `idweb-stores` opens it; [`RelyingParty::builder`](crate::RelyingParty::builder)
    /// refuses to start without a store unless it is `memory`. (`IDWEB_STORE`)
    pub store: StoreUrl,
    /// How long a session lasts after sign-in. Default 12 hours. (`IDWEB_SESSION_LIFETIME`, seconds)
    pub session_lifetime: Duration,
    /// Whether local sign-out revokes the refresh token at the provider
    /// (RFC 7009), when it has a revocation endpoint. Default true. (`IDWEB_REVOKE_ON_SIGN_OUT`)
    pub revoke_on_sign_out: bool,
    /// How the browser is sent to the provider's end-session endpoint:
    /// `post` (default: a form POST carrying `id_token_hint`) or `get` (a
    /// redirect without `id_token_hint`, so no token is put in a URL; the
    /// provider finds its session by its own cookie). Use `get` for providers
    /// that refuse POST there. (`IDWEB_END_SESSION_METHOD`)
    pub end_session_method: EndSessionMethod,
    /// Rules for back-channel logout tokens. Defaults: `iat` at most 10
    /// minutes old, `exp` required, `typ` checked when present.
    /// (`IDWEB_LOGOUT_TOKEN_MAX_AGE` seconds, `IDWEB_LOGOUT_TOKEN_REQUIRE_TYP`,
    /// `IDWEB_DANGER_ACCEPT_LOGOUT_TOKENS_WITHOUT_EXP` for providers that predate errata 1)
    pub logout_tokens: LogoutTokenPolicy,
    /// Downstream APIs by name (`[downstream.NAME]`, or `IDWEB_DOWNSTREAM__NAME__BASE_URL` / `__SCOPES`).
    pub downstream: BTreeMap<String, DownstreamApiSettings>,
    /// How often the app deletes expired sessions, tombstones and logout-token
    /// ids from the store ([`Store::purge_expired`](crate::Store::purge_expired)).
    /// Default 5 minutes; `0` turns the purge off. (`IDWEB_PURGE_INTERVAL`, seconds)
    pub purge_interval: Duration,
    /// The tenants whose users may sign in (Microsoft Entra tenant ids,
    /// lower case), or `None` for every tenant the authority accepts. With a
    /// list, every ID token and logout token must carry a `tid` on it.
    /// Comma- or space-separated. (`IDWEB_ALLOWED_TENANTS`,
    /// `[AzureAd] AllowedTenants`)
    pub allowed_tenants: Option<Vec<String>>,
    /// Client capabilities announced to the provider, e.g. `cp1` (Microsoft
    /// Entra continuous access evaluation): sent as the claims request
    /// `{"access_token":{"xms_cc":{"values":[...]}}}` with every
    /// authorization and token request. Default none. Comma- or
    /// space-separated. (`IDWEB_CLIENT_CAPABILITIES`, `[AzureAd] ClientCapabilities`)
    pub client_capabilities: Vec<String>,
    cookie_key: Secret,
    cookie_key_source: KeySource,
    cache_keys: Arc<CacheKeys>,
    cache_keys_source: KeySource,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("authority", &self.authority.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_auth", &self.client_auth)
            .field("public_url", &self.public_url.as_str())
            .field("callback_path", &self.callback_path)
            .field("signed_out_callback_path", &self.signed_out_callback_path)
            .field("remote_sign_out_path", &self.remote_sign_out_path)
            .field("back_channel_logout_path", &self.back_channel_logout_path)
            .field("sign_in_path", &self.sign_in_path)
            .field("sign_out_path", &self.sign_out_path)
            .field("health_path", &self.health_path)
            .field("ready_path", &self.ready_path)
            .field("listen", &self.listen)
            .field("scopes", &self.scopes)
            .field("store", &self.store)
            .field("session_lifetime", &self.session_lifetime)
            .field("cookie_key", &self.cookie_key)
            .field("cookie_key_source", &self.cookie_key_source)
            .field("cache_keys", &self.cache_keys)
            .field("cache_keys_source", &self.cache_keys_source)
            .field("downstream", &self.downstream)
            .field("revoke_on_sign_out", &self.revoke_on_sign_out)
            .field("end_session_method", &self.end_session_method)
            .field("logout_tokens", &self.logout_tokens)
            .field("purge_interval", &self.purge_interval)
            .field("allowed_tenants", &self.allowed_tenants)
            .field("client_capabilities", &self.client_capabilities)
            .finish()
    }
}

/// The keys a TOML file may hold at the top level, with their variables.
const KEYS: &[(&str, &str)] = &[
    ("authority", "IDWEB_AUTHORITY"),
    ("client_id", "IDWEB_CLIENT_ID"),
    ("client_secret", "IDWEB_CLIENT_SECRET"),
    ("client_auth", "IDWEB_CLIENT_AUTH"),
    ("public_url", "IDWEB_PUBLIC_URL"),
    ("callback_path", "IDWEB_CALLBACK_PATH"),
    ("signed_out_callback_path", "IDWEB_SIGNED_OUT_CALLBACK_PATH"),
    ("remote_sign_out_path", "IDWEB_REMOTE_SIGN_OUT_PATH"),
    ("back_channel_logout_path", "IDWEB_BACK_CHANNEL_LOGOUT_PATH"),
    ("sign_in_path", "IDWEB_SIGN_IN_PATH"),
    ("sign_out_path", "IDWEB_SIGN_OUT_PATH"),
    ("health_path", "IDWEB_HEALTH_PATH"),
    ("ready_path", "IDWEB_READY_PATH"),
    ("listen", "IDWEB_LISTEN"),
    ("scopes", "IDWEB_SCOPES"),
    ("store", "IDWEB_STORE"),
    ("cookie_key", "IDWEB_COOKIE_KEY"),
    ("session_lifetime", "IDWEB_SESSION_LIFETIME"),
    ("cache_keys", "IDWEB_CACHE_KEYS"),
    ("revoke_on_sign_out", "IDWEB_REVOKE_ON_SIGN_OUT"),
    ("end_session_method", "IDWEB_END_SESSION_METHOD"),
    ("purge_interval", "IDWEB_PURGE_INTERVAL"),
    ("logout_token_max_age", "IDWEB_LOGOUT_TOKEN_MAX_AGE"),
    ("logout_token_require_typ", "IDWEB_LOGOUT_TOKEN_REQUIRE_TYP"),
    (
        "danger_accept_logout_tokens_without_exp",
        "IDWEB_DANGER_ACCEPT_LOGOUT_TOKENS_WITHOUT_EXP",
    ),
    ("allowed_tenants", "IDWEB_ALLOWED_TENANTS"),
    ("client_capabilities", "IDWEB_CLIENT_CAPABILITIES"),
];

const AZURE_KEYS: &[&str] = &[
    "Instance",
    "TenantId",
    "ClientId",
    "ClientSecret",
    "CallbackPath",
    "SignedOutCallbackPath",
    "RemoteSignOutPath",
    "AllowedTenants",
    "ClientCapabilities",
];

/// One raw value and the name it was given under (for error messages).
#[derive(Debug)]
struct Raw {
    value: String,
    name: String,
}

impl Settings {
    /// Loads settings from an optional TOML file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?,
            ),
            None => None,
        };
        Self::from_sources(text.as_deref(), std::env::vars()).map_err(|e| match (e, file) {
            (ConfigError::File { source, .. }, Some(path)) => ConfigError::File {
                path: path.to_path_buf(),
                source,
            },
            (e, _) => e,
        })
    }

    /// Builds settings from TOML text and an explicit set of environment
    /// variables (variables win over the file). Useful in tests.
    pub fn from_sources(
        toml_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        let mut downstream: BTreeMap<(String, String), Raw> = BTreeMap::new();
        let mut store_options: BTreeMap<String, Raw> = BTreeMap::new();
        if let Some(text) = toml_text {
            read_toml(text, &mut raw, &mut downstream, &mut store_options)?;
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (k, v) in &env {
            if let Some(option) = k.strip_prefix(STORE_OPTION_VAR) {
                store_options.insert(
                    option.to_ascii_lowercase(),
                    Raw {
                        value: v.clone(),
                        name: k.clone(),
                    },
                );
                continue;
            }
            if let Some(rest) = k.strip_prefix("IDWEB_DOWNSTREAM__") {
                let Some((name, field)) = rest.split_once("__") else {
                    return Err(ConfigError::Invalid {
                        key: k.clone(),
                        reason: "expected IDWEB_DOWNSTREAM__NAME__BASE_URL or IDWEB_DOWNSTREAM__NAME__SCOPES".into(),
                    });
                };
                downstream.insert(
                    (name.to_ascii_lowercase(), field.to_ascii_lowercase()),
                    Raw {
                        value: v.clone(),
                        name: k.clone(),
                    },
                );
            }
        }
        let azure: BTreeMap<&str, Raw> = AZURE_KEYS
            .iter()
            .filter_map(|k| {
                let name = format!("AzureAd__{k}");
                env.get(&name).map(|v| {
                    (
                        *k,
                        Raw {
                            value: v.clone(),
                            name,
                        },
                    )
                })
            })
            .collect();
        apply_azure(azure, &mut raw, true)?;
        for (key, var) in KEYS {
            if let Some(v) = env.get(*var) {
                raw.insert(
                    key,
                    Raw {
                        value: v.clone(),
                        name: (*var).to_string(),
                    },
                );
            }
        }
        Self::validate(raw, downstream, store_options)
    }

    fn validate(
        mut raw: BTreeMap<&'static str, Raw>,
        downstream_raw: BTreeMap<(String, String), Raw>,
        store_options: BTreeMap<String, Raw>,
    ) -> Result<Self, ConfigError> {
        let authority_raw = required(
            &mut raw,
            "authority",
            "the issuer URL of your OpenID Provider",
        )?;
        let authority = parse_url(&authority_raw)?;
        let public_raw = required(
            &mut raw,
            "public_url",
            "the external base URL of this app, e.g. https://app.example.com",
        )?;
        let mut public_url = parse_url(&public_raw)?;
        let trimmed = public_url.path().trim_end_matches('/').to_string();
        if !trimmed.is_empty() {
            check_path(&trimmed).map_err(|reason| {
                invalid(
                    &public_raw,
                    format!("its path `{trimmed}` (where the app is served) {reason}"),
                )
            })?;
        }
        public_url.set_path(&trimmed);

        let client_id = required(
            &mut raw,
            "client_id",
            "the client id registered at the provider",
        )?;
        let client_id = nonblank(client_id)?;
        let client_secret = required(
            &mut raw,
            "client_secret",
            "the client secret registered at the provider",
        )?;
        let client_secret = Secret::new(nonblank(client_secret)?);

        let client_auth = match raw.remove("client_auth") {
            None => ClientAuthMethod::default(),
            Some(r) => match r.value.trim() {
                "client_secret_basic" => ClientAuthMethod::ClientSecretBasic,
                "client_secret_post" => ClientAuthMethod::ClientSecretPost,
                other => {
                    return Err(invalid(
                        &r,
                        format!("`{other}` is not one of client_secret_basic, client_secret_post"),
                    ));
                }
            },
        };

        let base = public_url.path().trim_end_matches('/').to_string();
        let mut routes: Vec<(String, String)> = Vec::new();
        let mut route = |key: &'static str, default: &str| -> Result<String, ConfigError> {
            let (path, name) = match raw.remove(key) {
                None => (default.to_string(), describe(key)),
                Some(r) => (route_path(&r, &base)?, r.name),
            };
            if let Some((_, other)) = routes.iter().find(|(p, _)| *p == path) {
                return Err(ConfigError::Invalid {
                    key: name,
                    reason: format!(
                        "`{path}` is already the path of {other}; every route needs its own path"
                    ),
                });
            }
            routes.push((path.clone(), name));
            Ok(path)
        };
        let callback_path = route("callback_path", "/signin-oidc")?;
        let signed_out_callback_path =
            route("signed_out_callback_path", DEFAULT_SIGNED_OUT_CALLBACK_PATH)?;
        let remote_sign_out_path = route("remote_sign_out_path", "/signout-oidc")?;
        let back_channel_logout_path = route("back_channel_logout_path", "/backchannel-logout")?;
        let sign_in_path = route("sign_in_path", "/account/signin")?;
        let sign_out_path = route("sign_out_path", "/account/signout")?;
        let health_path = route("health_path", "/healthz")?;
        let ready_path = route("ready_path", "/readyz")?;

        let listen = match raw.remove("listen") {
            None => SocketAddr::from(([127, 0, 0, 1], 5000)),
            Some(r) => r.value.trim().parse().map_err(|e| {
                invalid(
                    &r,
                    format!("expected ADDRESS:PORT, e.g. 127.0.0.1:5000 ({e})"),
                )
            })?,
        };

        let mut scopes: Vec<String> = match raw.remove("scopes") {
            None => vec!["openid".into(), "profile".into(), "offline_access".into()],
            Some(r) => {
                let s: Vec<String> = r.value.split_whitespace().map(str::to_string).collect();
                if let Some(bad) = s.iter().find(|s| !s.chars().all(is_scope_char)) {
                    return Err(invalid(
                        &r,
                        format!("`{bad}` is not a valid scope token (RFC 6749 §3.3)"),
                    ));
                }
                s
            }
        };
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }

        let store = store_url(raw.remove("store"), store_options)?;

        let session_lifetime = match raw.remove("session_lifetime") {
            None => Duration::from_secs(12 * 3600),
            Some(r) => {
                let secs: u64 = r
                    .value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(&r, "expected a number of seconds".into()))?;
                if !(60..=400 * 24 * 3600).contains(&secs) {
                    return Err(invalid(
                        &r,
                        "must be between 60 seconds and 400 days".into(),
                    ));
                }
                Duration::from_secs(secs)
            }
        };

        let (cookie_key, cookie_key_source) = match raw.remove("cookie_key") {
            Some(r) => {
                let bytes = decode_base64(r.value.trim())
                    .ok_or_else(|| invalid(&r, "not valid base64".into()))?;
                if bytes.len() < 64 {
                    return Err(invalid(
                        &r,
                        format!(
                            "must hold at least 64 random bytes, it holds {}",
                            bytes.len()
                        ),
                    ));
                }
                (Secret::new(STANDARD.encode(bytes)), KeySource::Configured)
            }
            None if is_loopback(&public_url) => (
                Secret::new(STANDARD.encode(random_bytes::<64>())),
                KeySource::Generated,
            ),
            None => {
                return Err(ConfigError::Missing {
                    key: describe("cookie_key"),
                    hint: "base64 of at least 64 random bytes (e.g. `openssl rand -base64 64`); \
                           only a loopback public_url may run without one",
                });
            }
        };

        let (cache_keys, cache_keys_source) = match raw.remove("cache_keys") {
            Some(r) => (
                CacheKeys::parse(&r.value).map_err(|e| invalid(&r, e.to_string()))?,
                KeySource::Configured,
            ),
            None if is_loopback(&public_url) => (CacheKeys::generate(), KeySource::Generated),
            None => {
                return Err(ConfigError::Missing {
                    key: describe("cache_keys"),
                    hint: "KEY_ID:BASE64(32 random bytes), e.g. `k1:$(openssl rand -base64 32)`; \
                           only a loopback public_url may run without one",
                });
            }
        };

        let downstream = downstream_apis(downstream_raw)?;
        let revoke_on_sign_out = flag(raw.remove("revoke_on_sign_out"), true)?;
        let end_session_method = match raw.remove("end_session_method") {
            None => EndSessionMethod::Post,
            Some(r) => match r.value.trim().to_ascii_lowercase().as_str() {
                "post" => EndSessionMethod::Post,
                "get" => EndSessionMethod::Get,
                _ => return Err(invalid(&r, "expected post or get".into())),
            },
        };
        let mut logout_tokens = LogoutTokenPolicy {
            require_typ: flag(raw.remove("logout_token_require_typ"), false)?,
            require_exp: !flag(raw.remove("danger_accept_logout_tokens_without_exp"), false)?,
            ..LogoutTokenPolicy::default()
        };
        if let Some(r) = raw.remove("logout_token_max_age") {
            let secs: u64 = r
                .value
                .trim()
                .parse()
                .map_err(|_| invalid(&r, "expected a number of seconds".into()))?;
            if !(10..=86_400).contains(&secs) {
                return Err(invalid(&r, "must be between 10 seconds and one day".into()));
            }
            logout_tokens.max_age = Duration::from_secs(secs);
        }

        let purge_interval = match raw.remove("purge_interval") {
            None => Duration::from_secs(300),
            Some(r) => {
                let secs: u64 = r
                    .value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(&r, "expected a number of seconds".into()))?;
                if secs > 86_400 {
                    return Err(invalid(
                        &r,
                        "must be at most one day (0 turns the purge off)".into(),
                    ));
                }
                Duration::from_secs(secs)
            }
        };

        let allowed_tenants = match raw.remove("allowed_tenants") {
            None => None,
            Some(r) => Some(tenant_list(&r)?),
        };
        let client_capabilities = match raw.remove("client_capabilities") {
            None => Vec::new(),
            Some(r) => capability_list(&r)?,
        };

        Ok(Settings {
            purge_interval,
            allowed_tenants,
            client_capabilities,
            end_session_method,
            revoke_on_sign_out,
            logout_tokens,
            downstream,
            cache_keys: Arc::new(cache_keys),
            cache_keys_source,
            authority,
            client_id,
            client_secret,
            client_auth,
            public_url,
            callback_path,
            signed_out_callback_path,
            remote_sign_out_path,
            back_channel_logout_path,
            sign_in_path,
            sign_out_path,
            health_path,
            ready_path,
            listen,
            scopes,
            store,
            session_lifetime,
            cookie_key,
            cookie_key_source,
        })
    }

    /// The redirect URI: the public URL followed by the callback path.
    pub fn redirect_uri(&self) -> Url {
        self.app_url(&self.callback_path)
    }

    /// The post-logout redirect URI: the public URL followed by
    /// [`signed_out_callback_path`](Self::signed_out_callback_path).
    pub fn post_logout_redirect_uri(&self) -> Url {
        self.app_url(&self.signed_out_callback_path)
    }

    /// The front-channel logout URI to register at the provider: the public
    /// URL followed by [`remote_sign_out_path`](Self::remote_sign_out_path).
    pub fn front_channel_logout_uri(&self) -> Url {
        self.app_url(&self.remote_sign_out_path)
    }

    /// The back-channel logout URI to register at the provider: the public
    /// URL followed by [`back_channel_logout_path`](Self::back_channel_logout_path).
    pub fn back_channel_logout_uri(&self) -> Url {
        self.app_url(&self.back_channel_logout_path)
    }

    /// The path the app is served under: the public URL's path without its
    /// trailing slash, e.g. `/portal` for `https://app.example/portal`, or
    /// `""` when the app is at the root of its host.
    pub fn path_base(&self) -> &str {
        self.public_url.path().trim_end_matches('/')
    }

    /// `path` (a route path such as [`sign_in_path`](Self::sign_in_path),
    /// or `/`) as the browser sees it: below [`path_base`](Self::path_base).
    /// `/` is the app's home: `/portal` under `/portal`, `/` at the root.
    pub fn app_path(&self, path: &str) -> String {
        match (self.path_base(), path) {
            ("", p) => p.to_string(),
            (base, "/") => base.to_string(),
            (base, p) => format!("{base}{p}"),
        }
    }

    /// The public URL of `path` (see [`app_path`](Self::app_path)).
    pub fn app_url(&self, path: &str) -> Url {
        let mut u = self.public_url.clone();
        u.set_path(&self.app_path(path));
        u
    }

    /// The origin (`scheme://host:port`) of the public URL.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    /// Whether cookies must carry `Secure` (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// Where the cookie key came from; [`KeySource::Generated`] means
    /// sessions will not survive a restart.
    pub fn cookie_key_source(&self) -> KeySource {
        self.cookie_key_source
    }

    /// Where the cache keys came from; [`KeySource::Generated`] means cached
    /// tokens will not be readable after a restart.
    pub fn cache_keys_source(&self) -> KeySource {
        self.cache_keys_source
    }

    /// The key ring encrypting token-cache entries.
    pub fn cache_keys(&self) -> &Arc<CacheKeys> {
        &self.cache_keys
    }

    /// Replaces the cache key ring (e.g. to share a generated ring between processes in tests).
    pub fn with_cache_keys(mut self, keys: Arc<CacheKeys>) -> Self {
        self.cache_keys = keys;
        self.cache_keys_source = KeySource::Configured;
        self
    }

    /// The cookie key material (at least 64 bytes).
    pub(crate) fn cookie_key_bytes(&self) -> Vec<u8> {
        STANDARD
            .decode(self.cookie_key.secret())
            .unwrap_or_default()
    }
}

fn describe(key: &str) -> String {
    match KEYS.iter().find(|(k, _)| *k == key) {
        Some((k, var)) => format!("`{k}` ({var})"),
        None => format!("`{key}`"),
    }
}

/// The store URL and its options. Which options a store takes is the
/// store's business; the core only refuses options for `memory`, which has
/// none (an option set while `IDWEB_STORE` is forgotten must not fall back
/// to a private in-process store unnoticed).
fn store_url(url: Option<Raw>, options: BTreeMap<String, Raw>) -> Result<StoreUrl, ConfigError> {
    let mut store = match url {
        None => StoreUrl::memory(),
        Some(r) => StoreUrl::parse(&r.value).map_err(|e| match e {
            ConfigError::Invalid { reason, .. } => invalid(&r, reason),
            other => other,
        })?,
    };
    for (name, r) in options {
        if store.is_memory() {
            return Err(invalid(
                &r,
                format!(
                    "a store option, but {} is `memory`, which takes none; \
                     set IDWEB_STORE to the store it is meant for",
                    describe("store")
                ),
            ));
        }
        store = store
            .with_option(&name, r.value.trim())
            .map_err(|e| match e {
                ConfigError::Invalid { reason, .. } => invalid(&r, reason),
                other => other,
            })?;
    }
    Ok(store)
}

/// Items of a comma- or space-separated list.
fn list_items(r: &Raw) -> Vec<String> {
    r.value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A non-empty list of tenant ids (GUIDs), lower-cased.
fn tenant_list(r: &Raw) -> Result<Vec<String>, ConfigError> {
    let items = list_items(r);
    if items.is_empty() {
        return Err(invalid(
            r,
            "an empty list would refuse everyone; leave the setting out to accept every tenant"
                .into(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !crate::tenant::is_tenant_id(&item) {
            return Err(invalid(
                r,
                format!(
                    "`{item}` is not a tenant id; use the directory (tenant) id, a GUID such as \
                     72f988bf-86f1-41af-91ab-2d7cd011db47, not a domain name"
                ),
            ));
        }
        let lower = item.to_ascii_lowercase();
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// Client capabilities: short tokens such as `cp1`.
fn capability_list(r: &Raw) -> Result<Vec<String>, ConfigError> {
    let items = list_items(r);
    if let Some(bad) = items.iter().find(|c| {
        c.len() > 64
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    }) {
        return Err(invalid(
            r,
            format!("`{bad}` is not a client capability (e.g. cp1)"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

fn required(
    raw: &mut BTreeMap<&'static str, Raw>,
    key: &'static str,
    hint: &'static str,
) -> Result<Raw, ConfigError> {
    raw.remove(key).ok_or_else(|| ConfigError::Missing {
        key: describe(key),
        hint,
    })
}

fn invalid(r: &Raw, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: r.name.clone(),
        reason,
    }
}

/// Checks the characters and segments of a path (of a route, or the public
/// URL's). Axum's own syntax (`{capture}`, `*`, `:`) and anything a browser
/// or proxy would rewrite (`.`/`..` segments, `//`, percent-escapes, a
/// trailing `/`) is refused, so the path served is the path configured.
fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("must start with `/`".into());
    }
    if p.contains(['?', '#']) {
        return Err("must not have a query or fragment".into());
    }
    if p.ends_with('/') {
        return Err("must not end with `/`".into());
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~!$&'()+,;=@".contains(*c)))
    {
        return Err(format!(
            "has `{}`; use letters, digits, `/` and - . _ ~ ! $ & ' ( ) + , ; = @",
            c.escape_default()
        ));
    }
    if p[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("must not have empty, `.` or `..` segments".into());
    }
    Ok(())
}

/// A route path: absolute, relative to the public URL (`base`), checked by
/// [`check_path`].
fn route_path(r: &Raw, base: &str) -> Result<String, ConfigError> {
    let p = r.value.trim();
    if p == "/" {
        return Err(invalid(r, "must not be `/` (the app's home)".into()));
    }
    check_path(p).map_err(|reason| {
        invalid(
            r,
            format!("`{p}` {reason} (an absolute path, relative to the public URL)"),
        )
    })?;
    if !base.is_empty() && (p == base || p.starts_with(&format!("{base}/"))) {
        return Err(invalid(
            r,
            format!(
                "`{p}` repeats the public URL's path `{base}`; route paths are relative to \
                 the public URL (write `{}`)",
                p.strip_prefix(base)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("/...")
            ),
        ));
    }
    Ok(p.to_string())
}

fn flag(r: Option<Raw>, default: bool) -> Result<bool, ConfigError> {
    match r {
        None => Ok(default),
        Some(r) => match r.value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(invalid(&r, "expected true or false".into())),
        },
    }
}

fn nonblank(r: Raw) -> Result<String, ConfigError> {
    let v = r.value.trim();
    if v.is_empty() {
        return Err(invalid(&r, "must not be empty".into()));
    }
    Ok(v.to_string())
}

fn is_scope_char(c: char) -> bool {
    c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c)
}

/// Parses an http(s) URL; plain http only for loopback hosts.
fn parse_url(r: &Raw) -> Result<Url, ConfigError> {
    let url = Url::parse(r.value.trim()).map_err(|e| invalid(r, format!("not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                r,
                "must use https (plain http is accepted only for loopback hosts, for development)"
                    .into(),
            ));
        }
        other => {
            return Err(invalid(
                r,
                format!("unsupported scheme `{other}`; use https"),
            ));
        }
    }
    if url.host().is_none() {
        return Err(invalid(r, "has no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(r, "must not have a query or fragment".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(r, "must not carry credentials".into()));
    }
    Ok(url)
}

/// Whether the URL's host is a loopback name or address.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
}

fn read_toml(
    text: &str,
    raw: &mut BTreeMap<&'static str, Raw>,
    downstream: &mut BTreeMap<(String, String), Raw>,
    store_options: &mut BTreeMap<String, Raw>,
) -> Result<(), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: PathBuf::from("<toml>"),
            source: Box::new(e),
        })?;
    let mut azure = BTreeMap::new();
    for (k, v) in &table {
        if k == "downstream" {
            let apis = v.as_table().ok_or_else(|| ConfigError::Invalid {
                key: "downstream".into(),
                reason: "must be a table of [downstream.NAME] tables".into(),
            })?;
            for (name, api) in apis {
                let fields = api.as_table().ok_or_else(|| ConfigError::Invalid {
                    key: format!("downstream.{name}"),
                    reason: "must be a table with base_url and scopes".into(),
                })?;
                for (field, value) in fields {
                    let key = format!("downstream.{name}.{field}");
                    let value = toml_scalar(value, &key)?;
                    downstream.insert(
                        (name.to_ascii_lowercase(), field.clone()),
                        Raw { value, name: key },
                    );
                }
            }
            continue;
        }
        if k == "AzureAd" {
            let section = v.as_table().ok_or_else(|| ConfigError::Invalid {
                key: "AzureAd".into(),
                reason: "must be a table".into(),
            })?;
            for (ak, av) in section {
                let Some(known) = AZURE_KEYS.iter().find(|x| *x == ak) else {
                    return Err(ConfigError::Invalid {
                        key: format!("AzureAd.{ak}"),
                        reason: format!("unknown key; known keys: {}", AZURE_KEYS.join(", ")),
                    });
                };
                let name = format!("AzureAd.{ak}");
                azure.insert(
                    *known,
                    Raw {
                        value: toml_scalar(av, &name)?,
                        name,
                    },
                );
            }
            continue;
        }
        if let Some(option) = k.strip_prefix(STORE_OPTION_KEY) {
            store_options.insert(
                option.to_ascii_lowercase(),
                Raw {
                    value: toml_scalar(v, k)?,
                    name: format!("`{k}` (file)"),
                },
            );
            continue;
        }
        let Some((key, _)) = KEYS.iter().find(|(known, _)| known == k) else {
            let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(ConfigError::Invalid {
                key: format!("`{k}`"),
                reason: format!(
                    "unknown key; known keys: {}, store_* (options of the store), [AzureAd]",
                    known.join(", ")
                ),
            });
        };
        raw.insert(
            key,
            Raw {
                value: toml_scalar(v, k)?,
                name: format!("`{k}` (file)"),
            },
        );
    }
    apply_azure(azure, raw, false)
}

fn downstream_apis(
    raw: BTreeMap<(String, String), Raw>,
) -> Result<BTreeMap<String, DownstreamApiSettings>, ConfigError> {
    let mut by_name: BTreeMap<String, (Option<Raw>, Option<Raw>)> = BTreeMap::new();
    for ((name, field), r) in raw {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                &r,
                "API names use only letters, digits, - and _".into(),
            ));
        }
        let slot = by_name.entry(name).or_default();
        match field.as_str() {
            "base_url" => slot.0 = Some(r),
            "scopes" => slot.1 = Some(r),
            _ => {
                return Err(invalid(
                    &r,
                    "unknown field; known fields: base_url, scopes".into(),
                ));
            }
        }
    }
    let mut apis = BTreeMap::new();
    for (name, (base, scopes)) in by_name {
        let base = base.ok_or_else(|| ConfigError::Missing {
            key: format!(
                "downstream.{name}.base_url (IDWEB_DOWNSTREAM__{}__BASE_URL)",
                name.to_ascii_uppercase()
            ),
            hint: "the API's base URL",
        })?;
        let mut base_url = parse_url(&base)?;
        if !base_url.path().ends_with('/') {
            let p = format!("{}/", base_url.path());
            base_url.set_path(&p);
        }
        let scopes = scopes.ok_or_else(|| ConfigError::Missing {
            key: format!(
                "downstream.{name}.scopes (IDWEB_DOWNSTREAM__{}__SCOPES)",
                name.to_ascii_uppercase()
            ),
            hint: "the scopes to ask a token for, e.g. api://todo/todos.read",
        })?;
        let list: Vec<String> = scopes
            .value
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if list.is_empty() || list.iter().any(|s| !s.chars().all(is_scope_char)) {
            return Err(invalid(
                &scopes,
                "expected space-separated scope tokens".into(),
            ));
        }
        apis.insert(
            name,
            DownstreamApiSettings {
                base_url,
                scopes: list,
            },
        );
    }
    Ok(apis)
}

fn toml_scalar(v: &toml::Value, name: &str) -> Result<String, ConfigError> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: name.to_string(),
                        reason: "array items must be strings".into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(" ")),
        _ => Err(ConfigError::Invalid {
            key: name.to_string(),
            reason: "expected a string, a number or an array of strings".into(),
        }),
    }
}

/// Maps Microsoft.Identity.Web's `AzureAd` settings onto ours. With
/// `overwrite` they replace values already present (environment over file);
/// without it, values already present (top-level keys of the file) win.
fn apply_azure(
    mut azure: BTreeMap<&str, Raw>,
    raw: &mut BTreeMap<&'static str, Raw>,
    overwrite: bool,
) -> Result<(), ConfigError> {
    let mut put = |key: &'static str, value: Raw| {
        if overwrite || !raw.contains_key(key) {
            raw.insert(key, value);
        }
    };
    if azure.is_empty() {
        return Ok(());
    }
    let instance = azure.remove("Instance");
    let tenant = azure.remove("TenantId");
    match (instance, tenant) {
        (Some(i), Some(t)) => {
            let authority = format!(
                "{}/{}/v2.0",
                i.value.trim().trim_end_matches('/'),
                t.value.trim()
            );
            put(
                "authority",
                Raw {
                    value: authority,
                    name: format!("{} + {}", i.name, t.name),
                },
            );
        }
        (None, Some(t)) => {
            let authority = format!("https://login.microsoftonline.com/{}/v2.0", t.value.trim());
            put(
                "authority",
                Raw {
                    value: authority,
                    name: t.name,
                },
            );
        }
        (Some(i), None) => {
            return Err(ConfigError::Missing {
                key: i.name.replace("Instance", "TenantId"),
                hint: "the directory (tenant) id, or `common` / `organizations`",
            });
        }
        (None, None) => {}
    }
    for (from, to) in [
        ("ClientId", "client_id"),
        ("ClientSecret", "client_secret"),
        ("CallbackPath", "callback_path"),
        ("SignedOutCallbackPath", "signed_out_callback_path"),
        ("RemoteSignOutPath", "remote_sign_out_path"),
        ("AllowedTenants", "allowed_tenants"),
        ("ClientCapabilities", "client_capabilities"),
    ] {
        if let Some(v) = azure.remove(from) {
            put(to, v);
        }
    }
    Ok(())
}

/// Rules for logout tokens beyond the spec's fixed ones.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LogoutTokenPolicy {
    /// Oldest acceptable `iat` (plus skew). Default 10 minutes.
    pub max_age: Duration,
    /// Tolerated clock difference. Default 5 minutes.
    pub skew: Duration,
    /// Whether `exp` is required (Back-Channel Logout errata 1). Default true.
    pub require_exp: bool,
    /// Whether the `typ` header must be `logout+jwt`. Default false (it is
    /// checked when present).
    pub require_typ: bool,
}

impl Default for LogoutTokenPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(600),
            skew: Duration::from_secs(300),
            require_exp: true,
            require_typ: false,
        }
    }
}

#[cfg(test)]
mod tests;
