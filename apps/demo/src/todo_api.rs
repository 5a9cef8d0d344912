//! The sample downstream "todo" API: an OAuth 2.0 resource server.
//!
//! Callers present JWT access tokens (RFC 9068) from the configured issuer in
//! `Authorization: Bearer <token>`. A token is accepted only when
//!
//! * its header names RS256, PS256 or ES256 (never `none`, never HS*), has no
//!   `crit` extensions and a `typ` of `at+jwt` or `JWT`;
//! * its signature verifies with a key from the issuer's JWKS (fetched via
//!   discovery, refetched on an unknown `kid` at most once per 30 seconds);
//! * `iss` is exactly the issuer, `aud` contains the configured audience,
//!   `exp` has not passed and `nbf` (if present) has, both with 60 seconds of
//!   leeway, and `sub` is a non-empty string;
//! * its `scp` or `scope` claim (a space-separated string or an array)
//!   contains the read scope for `GET` and the write scope for `POST`,
//!   `PATCH` and `DELETE`.
//!
//! Failures are answered as RFC 6750 §3 says: 401 with
//! `WWW-Authenticate: Bearer realm="todo"` (plus `error="invalid_token"` when
//! a token was sent) or 403 with `error="insufficient_scope"` and the scope
//! needed. The token itself is never echoed or logged.
//!
//! Endpoints (items belong to the token's `iss` + `sub`, live in memory, and
//! every new caller starts with two sample items):
//!
//! | | |
//! |---|---|
//! | `GET /api/todos` | the caller's items, `[{"id", "title", "done"}]` |
//! | `POST /api/todos` | `{"title"}` (1 to 200 characters) → 201 with the new item |
//! | `PATCH /api/todos/{id}` | `{"done"}` → the updated item |
//! | `DELETE /api/todos/{id}` | → 204 |
//! | `GET /healthz` | `ok`, no token needed |
//!
//! Request bodies are limited to 16 KiB.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

/// The `realm` of the `WWW-Authenticate` challenges.
const REALM: &str = "todo";

/// The only signature algorithms accepted on access tokens.
const ALLOWED_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];

/// Least time between two JWKS fetches caused by unknown key ids.
const MIN_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: u64 = 60;

/// Largest access token looked at.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Largest request body accepted.
const MAX_REQUEST_BODY: usize = 16 * 1024;

/// Largest discovery document or JWKS read from the issuer.
const MAX_PROVIDER_BODY: usize = 512 * 1024;

/// Longest item title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// Most items one caller may have.
const MAX_ITEMS_PER_CALLER: usize = 1000;

/// The items every new caller starts with.
const SAMPLE_TITLES: [&str; 2] = ["Try idweb", "Sign out everywhere"];

/// Configuration of the todo API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoApiConfig {
    /// The issuer whose access tokens are accepted; its discovery document is
    /// at `{issuer}/.well-known/openid-configuration`. `https`, or `http` for
    /// a loopback host (development).
    pub issuer: String,
    /// The audience access tokens must be issued for, e.g. `api://todo`.
    pub audience: String,
    /// The scope needed to read items, e.g. `api://todo/todos.read`.
    pub required_scope_read: String,
    /// The scope needed to add, change or delete items, e.g.
    /// `api://todo/todos.write`.
    pub required_scope_write: String,
}

impl TodoApiConfig {
    /// The usual configuration for `issuer`: audience `api://todo`, scopes
    /// `api://todo/todos.read` and `api://todo/todos.write`.
    pub fn new(issuer: impl Into<String>) -> Self {
        TodoApiConfig {
            issuer: issuer.into(),
            audience: "api://todo".to_owned(),
            required_scope_read: "api://todo/todos.read".to_owned(),
            required_scope_write: "api://todo/todos.write".to_owned(),
        }
    }
}

/// Why the todo API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TodoApiError {
    /// A configuration value is not acceptable.
    #[error("the todo API's `{field}` is not acceptable: {reason}")]
    InvalidConfig {
        /// The configuration field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be created.
    #[error("cannot create the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The issuer could not be reached.
    #[error("cannot reach {url}")]
    Transport {
        /// The URL called.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The issuer answered with an unexpected HTTP status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The issuer answered a body larger than accepted.
    #[error("{url} answered a body larger than {MAX_PROVIDER_BODY} bytes")]
    TooLarge {
        /// The URL called.
        url: String,
    },
    /// The issuer answered a body that is not the JSON expected.
    #[error("{url} answered a body that is not the expected JSON")]
    Json {
        /// The URL called.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The discovery document names another issuer than the configured one.
    #[error(
        "the discovery document says the issuer is `{actual}`, but the todo API is configured for `{expected}`"
    )]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The `issuer` of the discovery document.
        actual: String,
    },
    /// The discovery document's `jwks_uri` is not acceptable.
    #[error("the discovery document's `jwks_uri` is not acceptable: {reason}")]
    BadJwksUri {
        /// Why.
        reason: String,
    },
}

/// Builds the todo API: fetches the issuer's discovery document and JWKS,
/// then returns the router serving `/api/todos` and `/healthz`.
///
/// # Errors
/// The configuration is invalid, or the discovery document or the JWKS cannot
/// be fetched or do not fit the configuration.
pub async fn router(config: TodoApiConfig) -> Result<Router, TodoApiError> {
    let issuer_url = check_config(&config)?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(TodoApiError::HttpClient)?;

    let base = config.issuer.trim_end_matches('/');
    let discovery: Discovery =
        get_json(&http, &format!("{base}/.well-known/openid-configuration")).await?;
    if discovery.issuer != config.issuer && discovery.issuer != base {
        return Err(TodoApiError::IssuerMismatch {
            expected: config.issuer,
            actual: discovery.issuer,
        });
    }
    let jwks_uri = Url::parse(&discovery.jwks_uri).map_err(|e| TodoApiError::BadJwksUri {
        reason: e.to_string(),
    })?;
    if !acceptable_scheme(&jwks_uri, issuer_url.scheme() == "https") {
        return Err(TodoApiError::BadJwksUri {
            reason: "must be https (http only for a loopback development issuer)".to_owned(),
        });
    }

    let keys = KeyCache {
        http,
        jwks_uri: discovery.jwks_uri,
        state: RwLock::new(KeyState::default()),
        refetch: tokio::sync::Mutex::new(()),
    };
    keys.fetch().await?;

    let api = Arc::new(Api {
        issuer: discovery.issuer,
        audience: config.audience,
        scope_read: config.required_scope_read,
        scope_write: config.required_scope_write,
        keys,
        todos: Mutex::new(HashMap::new()),
    });
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/todos", get(list_todos).post(create_todo))
        .route("/api/todos/{id}", patch(update_todo).delete(delete_todo))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(api))
}

/// Checks the configuration; returns the parsed issuer URL.
fn check_config(config: &TodoApiConfig) -> Result<Url, TodoApiError> {
    let invalid = |field: &'static str, reason: &str| TodoApiError::InvalidConfig {
        field,
        reason: reason.to_owned(),
    };
    let issuer = Url::parse(&config.issuer).map_err(|e| TodoApiError::InvalidConfig {
        field: "issuer",
        reason: e.to_string(),
    })?;
    if !acceptable_scheme(&issuer, false) {
        return Err(invalid(
            "issuer",
            "must be https (http only for a loopback development issuer)",
        ));
    }
    if issuer.query().is_some() || issuer.fragment().is_some() {
        return Err(invalid("issuer", "must not have a query or a fragment"));
    }
    if config.audience.is_empty() {
        return Err(invalid("audience", "must not be empty"));
    }
    for (field, scope) in [
        ("required_scope_read", &config.required_scope_read),
        ("required_scope_write", &config.required_scope_write),
    ] {
        // RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ).
        let ok = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !ok {
            return Err(invalid(
                field,
                "must be one scope token (printable ASCII, no space, quote or backslash)",
            ));
        }
    }
    Ok(issuer)
}

/// `https` always; `http` only for a loopback host and when `secure` is false.
fn acceptable_scheme(url: &Url, secure: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => !secure && is_loopback(url),
        _ => false,
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The part of the discovery document the API uses.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// GETs `url` and parses its JSON body (at most [`MAX_PROVIDER_BODY`] bytes).
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, TodoApiError> {
    let transport = |source| TodoApiError::Transport {
        url: url.to_owned(),
        source,
    };
    let mut resp = http
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    if !resp.status().is_success() {
        return Err(TodoApiError::Status {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    let too_large = || TodoApiError::TooLarge {
        url: url.to_owned(),
    };
    if resp
        .content_length()
        .is_some_and(|len| len > MAX_PROVIDER_BODY as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_PROVIDER_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|source| TodoApiError::Json {
        url: url.to_owned(),
        source,
    })
}

// ---------------------------------------------------------------------------
// The issuer's signing keys
// ---------------------------------------------------------------------------

/// A verification key from the JWKS.
struct CachedKey {
    kid: Option<String>,
    alg: Option<KeyAlgorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct KeyState {
    keys: Vec<Arc<CachedKey>>,
    /// When an unknown key id last caused a refetch (the fetch at start does not count).
    last_refetch: Option<Instant>,
}

/// The issuer's JWKS, refetched (rate-limited) when a token names a key that
/// is not in it.
struct KeyCache {
    http: reqwest::Client,
    jwks_uri: String,
    state: RwLock<KeyState>,
    /// Serializes refetches.
    refetch: tokio::sync::Mutex<()>,
}

impl KeyCache {
    async fn fetch(&self) -> Result<(), TodoApiError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let set: RawSet = get_json(&self.http, &self.jwks_uri).await?;
        let keys: Vec<Arc<CachedKey>> = set
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| usable_key(&jwk))
            .map(Arc::new)
            .collect();
        tracing::debug!(keys = keys.len(), jwks_uri = %self.jwks_uri, "fetched the issuer's keys");
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .keys = keys;
        Ok(())
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<CachedKey>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut candidates = state.keys.iter().filter(|k| key_fits(k, alg));
        match kid {
            Some(kid) => candidates
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(Arc::clone),
            None => {
                // Without a kid, the key must be unambiguous.
                let first = candidates.next()?;
                candidates.next().is_none().then(|| Arc::clone(first))
            }
        }
    }

    /// The key for a token signed with `alg` under `kid`, refetching the JWKS
    /// (at most once per [`MIN_JWKS_REFETCH_INTERVAL`]) when none matches.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<CachedKey>> {
        if let Some(key) = self.find(kid, alg) {
            return Some(key);
        }
        let _guard = self.refetch.lock().await;
        // Another request may have refetched while this one waited.
        if let Some(key) = self.find(kid, alg) {
            return Some(key);
        }
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if state
                .last_refetch
                .is_some_and(|last| last.elapsed() < MIN_JWKS_REFETCH_INTERVAL)
            {
                tracing::debug!(?kid, "unknown key id; JWKS refetch rate-limited");
                return None;
            }
            state.last_refetch = Some(Instant::now());
        }
        tracing::info!(?kid, "unknown key id; refetching the issuer's JWKS");
        if let Err(error) = self.fetch().await {
            tracing::warn!(%error, "could not refetch the issuer's JWKS");
            return None;
        }
        self.find(kid, alg)
    }
}

/// Only asymmetric signature keys for the allowed algorithms are kept: RSA
/// keys, and EC keys on P-256. Symmetric (`oct`) keys are never trusted.
fn usable_key(jwk: &Jwk) -> Option<CachedKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {}
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {}
        _ => return None,
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(CachedKey {
        kid: jwk.common.key_id.clone(),
        alg: jwk.common.key_algorithm,
        key,
    })
}

fn key_fits(key: &CachedKey, alg: Algorithm) -> bool {
    if let Some(key_alg) = key.alg
        && key_alg != KeyAlgorithm::from(alg)
    {
        return false;
    }
    key.key.family() == alg.family()
}

// ---------------------------------------------------------------------------
// Access-token validation
// ---------------------------------------------------------------------------

/// Shared state of the API.
struct Api {
    /// The issuer identifier from discovery; `iss` must equal it exactly.
    issuer: String,
    audience: String,
    scope_read: String,
    scope_write: String,
    keys: KeyCache,
    todos: Mutex<HashMap<Owner, CallerTodos>>,
}

/// Why an access token was refused. The messages go to the caller in
/// `error_description`: fixed texts, never parts of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenRejection {
    Malformed,
    DisallowedAlgorithm,
    CriticalHeader,
    WrongType,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    BadScopeClaim,
}

impl TokenRejection {
    fn description(self) -> &'static str {
        match self {
            Self::Malformed => "The access token is not a well-formed signed JWT.",
            Self::DisallowedAlgorithm => {
                "The access token is signed with an algorithm that is not accepted."
            }
            Self::CriticalHeader => {
                "The access token header has critical extensions that are not understood."
            }
            Self::WrongType => "The access token header typ is not at+jwt.",
            Self::UnknownKey => "The access token is signed with an unknown key.",
            Self::BadSignature => "The access token signature is invalid.",
            Self::Expired => "The access token has expired.",
            Self::NotYetValid => "The access token is not valid yet.",
            Self::WrongIssuer => "The access token is from another issuer.",
            Self::WrongAudience => "The access token is not intended for this API.",
            Self::MissingClaim => "The access token lacks a required claim.",
            Self::BadScopeClaim => "The access token scope claim is malformed.",
        }
    }
}

/// What the API needs from a valid access token.
struct AccessToken {
    owner: Owner,
    scopes: Vec<String>,
}

impl Api {
    /// Validates an access token: header, signature, `iss`, `aud`, `exp`,
    /// `nbf`, `sub` and the shape of the scope claims.
    async fn validate(&self, token: &str) -> Result<AccessToken, TokenRejection> {
        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(TokenRejection::Malformed);
        }
        // Unknown `alg` values (`none` among them) fail to parse here.
        let header = decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(TokenRejection::DisallowedAlgorithm);
        }
        if header.crit.is_some() {
            return Err(TokenRejection::CriticalHeader);
        }
        if !header.typ.as_deref().is_some_and(acceptable_typ) {
            return Err(TokenRejection::WrongType);
        }
        let key = self
            .keys
            .key_for(header.kid.as_deref(), header.alg)
            .await
            .ok_or(TokenRejection::UnknownKey)?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenRejection::BadSignature,
                    ErrorKind::ExpiredSignature => TokenRejection::Expired,
                    ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
                    ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
                    ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
                    ErrorKind::MissingRequiredClaim(_) => TokenRejection::MissingClaim,
                    _ => TokenRejection::Malformed,
                }
            })?;
        let claims = data.claims;

        // jsonwebtoken also accepts an array `iss` naming the issuer; only
        // the exact string is.
        let iss = claims.get("iss").and_then(Value::as_str);
        if iss != Some(self.issuer.as_str()) {
            return Err(TokenRejection::WrongIssuer);
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(TokenRejection::MissingClaim)?;
        let mut scopes = Vec::new();
        for name in ["scp", "scope"] {
            match claims.get(name) {
                None => {}
                Some(Value::String(s)) => {
                    scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
                }
                Some(Value::Array(items)) => {
                    for item in items {
                        let s = item.as_str().ok_or(TokenRejection::BadScopeClaim)?;
                        scopes.push(s.to_owned());
                    }
                }
                Some(_) => return Err(TokenRejection::BadScopeClaim),
            }
        }
        Ok(AccessToken {
            owner: Owner {
                iss: self.issuer.clone(),
                sub: sub.to_owned(),
            },
            scopes,
        })
    }
}

/// `at+jwt` (RFC 9068) or `JWT`, with or without the `application/` prefix,
/// compared case-insensitively (RFC 7515 §4.1.9).
fn acceptable_typ(typ: &str) -> bool {
    let lower = typ.to_ascii_lowercase();
    let media = lower.strip_prefix("application/").unwrap_or(&lower);
    media == "at+jwt" || media == "jwt"
}

// ---------------------------------------------------------------------------
// Bearer authentication (RFC 6750)
// ---------------------------------------------------------------------------

/// An RFC 6750 failure answer.
#[derive(Debug)]
enum AuthError {
    /// No bearer token in the request: 401 with a bare challenge.
    Missing,
    /// The request is malformed (e.g. several Authorization headers): 400.
    InvalidRequest(&'static str),
    /// The token is invalid: 401 `invalid_token`.
    InvalidToken(&'static str),
    /// The token lacks the scope: 403 `insufficient_scope`.
    InsufficientScope(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, error, description, scope) = match &self {
            AuthError::Missing => (StatusCode::UNAUTHORIZED, None, None, None),
            AuthError::InvalidRequest(d) => (
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                Some(*d),
                None,
            ),
            AuthError::InvalidToken(d) => (
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                Some(*d),
                None,
            ),
            AuthError::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                Some("The access token does not grant the scope this request needs."),
                Some(scope.as_str()),
            ),
        };
        // The values are fixed texts and validated scope tokens: no quotes,
        // backslashes or control characters.
        let mut challenge = format!("Bearer realm=\"{REALM}\"");
        if let Some(error) = error {
            challenge.push_str(&format!(", error=\"{error}\""));
        }
        if let Some(description) = description {
            challenge.push_str(&format!(", error_description=\"{description}\""));
        }
        if let Some(scope) = scope {
            challenge.push_str(&format!(", scope=\"{scope}\""));
        }
        let mut response = match error {
            Some(error) => (
                status,
                Json(json!({ "error": error, "error_description": description })),
            )
                .into_response(),
            None => status.into_response(),
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The bearer token of the request, if it has one.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(
            "The request has more than one Authorization header.",
        ));
    }
    let malformed = || AuthError::InvalidToken(TokenRejection::Malformed.description());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another authentication scheme: no bearer token was presented.
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// The authenticated caller of an `/api` request, allowed to make it.
///
/// Extracting it validates the bearer token and checks the scope the request
/// method needs (read for `GET`/`HEAD`, write otherwise). It runs before the
/// body is read.
struct Caller {
    owner: Owner,
}

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, AuthError> {
        let needed = if parts.method == Method::GET || parts.method == Method::HEAD {
            &api.scope_read
        } else {
            &api.scope_write
        };
        let token = bearer_token(&parts.headers)?;
        let access = api.validate(token).await.map_err(|rejection| {
            tracing::debug!(reason = rejection.description(), "refused an access token");
            AuthError::InvalidToken(rejection.description())
        })?;
        if !access.scopes.iter().any(|s| s == needed) {
            tracing::debug!(scope = %needed, "access token lacks the scope");
            return Err(AuthError::InsufficientScope(needed.clone()));
        }
        Ok(Caller {
            owner: access.owner,
        })
    }
}

// ---------------------------------------------------------------------------
// The todo items
// ---------------------------------------------------------------------------

/// Who owns items: the token's issuer and subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owner {
    iss: String,
    sub: String,
}

/// One item.
#[derive(Debug, Clone, Serialize)]
struct Todo {
    id: u64,
    title: String,
    done: bool,
}

/// One caller's items.
struct CallerTodos {
    next_id: u64,
    items: Vec<Todo>,
}

impl CallerTodos {
    fn with_samples() -> Self {
        let mut todos = CallerTodos {
            next_id: 1,
            items: Vec::new(),
        };
        for title in SAMPLE_TITLES {
            todos.add(title.to_owned());
        }
        todos
    }

    fn add(&mut self, title: String) -> Todo {
        let todo = Todo {
            id: self.next_id,
            title,
            done: false,
        };
        self.next_id += 1;
        self.items.push(todo.clone());
        todo
    }
}

impl Api {
    /// Runs `f` on the caller's items, creating the samples on first use.
    fn with_todos<T>(&self, owner: Owner, f: impl FnOnce(&mut CallerTodos) -> T) -> T {
        let mut all = self.todos.lock().unwrap_or_else(PoisonError::into_inner);
        f(all.entry(owner).or_insert_with(CallerTodos::with_samples))
    }
}

/// A JSON error answer for a request that passed authentication.
fn api_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn body_error(rejection: &JsonRejection) -> Response {
    let status = rejection.status();
    let description = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than 16 KiB.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "The request body must be application/json.",
        _ => "The request body is not the JSON expected.",
    };
    api_error(status, "invalid_request", description)
}

fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "not_found", "There is no such item.")
}

async fn list_todos(State(api): State<Arc<Api>>, caller: Caller) -> Response {
    let items = api.with_todos(caller.owner, |todos| todos.items.clone());
    Json(items).into_response()
}

#[derive(Deserialize)]
struct NewTodo {
    title: String,
}

async fn create_todo(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Result<Json<NewTodo>, JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(&rejection),
    };
    let chars = new.title.chars().count();
    if chars == 0
        || chars > MAX_TITLE_CHARS
        || new.title.trim().is_empty()
        || new.title.chars().any(char::is_control)
    {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_title",
            "The title must have 1 to 200 characters, not all blank, and no control characters.",
        );
    }
    let created = api.with_todos(caller.owner, |todos| {
        (todos.items.len() < MAX_ITEMS_PER_CALLER).then(|| todos.add(new.title))
    });
    let Some(todo) = created else {
        return api_error(
            StatusCode::CONFLICT,
            "too_many_items",
            "The list is full; delete items first.",
        );
    };
    let mut response = (StatusCode::CREATED, Json(&todo)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/todos/{}", todo.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[derive(Deserialize)]
struct TodoChange {
    done: bool,
}

async fn update_todo(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<TodoChange>, JsonRejection>,
) -> Response {
    let Json(change) = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(&rejection),
    };
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let updated = api.with_todos(caller.owner, |todos| {
        todos.items.iter_mut().find(|t| t.id == id).map(|todo| {
            todo.done = change.done;
            todo.clone()
        })
    });
    match updated {
        Some(todo) => Json(todo).into_response(),
        None => not_found(),
    }
}

async fn delete_todo(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let removed = api.with_todos(caller.owner, |todos| {
        let before = todos.items.len();
        todos.items.retain(|t| t.id != id);
        todos.items.len() != before
    });
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found()
    }
}
