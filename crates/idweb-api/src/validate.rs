//! Access-token validation: the signature through idweb's [`Provider`], then
//! the claims with the injected clock.

use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderMap, header};
use idweb::{Clock, JwsError, Provider, ProviderError};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::caller::ApiCaller;
use crate::config::{JwtBearerBuilder, TypPolicy};
use crate::rejection::{ApiRejection, RejectionReason};

/// Validates `Authorization: Bearer` JWT access tokens issued by one
/// provider for this API.
///
/// Cheap to clone (an `Arc` inside). Build it once at start-up with
/// [`JwtBearer::builder`], install it with [`layer`](Self::layer), and take
/// an [`ApiCaller`] in the handlers. A token is accepted when:
///
/// * it is at most [`with_max_token_length`](JwtBearerBuilder::with_max_token_length)
///   bytes (16 KiB by default) and a compact JWS;
/// * its header names an accepted asymmetric algorithm (never `none`, never
///   HS*), has no `crit`, and a `typ` the [`TypPolicy`] accepts;
/// * its signature verifies with a key of the issuer's JWKS — idweb's
///   [`Provider`] key cache, refetched (at most once per 30 seconds by
///   default) when the `kid` is unknown;
/// * `iss` is exactly the issuer of the discovery document — or, for a
///   multi-tenant authority (Entra's `common`, `organizations`), its
///   `{tenantid}` template filled in with the token's own `tid`;
/// * `aud` (a string or an array) contains one of the configured audiences;
/// * `exp` is present and not passed, and `nbf`, when present, is passed,
///   both with the configured leeway (60 seconds by default) on the
///   injected [`Clock`];
/// * `sub` is a non-empty string;
/// * `scp` / `scope`, when present, are a space-separated string or an array
///   of strings, and `roles`, when present, an array of strings (or one string).
///
/// Scopes and app roles are then required per route: see
/// [`RequireScope`](crate::RequireScope), [`RequireRole`](crate::RequireRole)
/// and [`ApiCaller::require_scope`].
#[derive(Clone)]
pub struct JwtBearer {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) provider: Arc<Provider>,
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) typ: TypPolicy,
    /// Seconds.
    pub(crate) leeway: i64,
    pub(crate) max_token_len: usize,
    pub(crate) realm: Option<Arc<str>>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for JwtBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtBearer")
            .field("issuer", &self.inner.issuer)
            .field("audiences", &self.inner.audiences)
            .field("algorithms", &self.inner.algorithms)
            .field("typ", &self.inner.typ)
            .field("leeway_secs", &self.inner.leeway)
            .field("max_token_len", &self.inner.max_token_len)
            .field("realm", &self.inner.realm)
            .finish_non_exhaustive()
    }
}

/// Why an access token was refused. Each reason's text is what the caller
/// reads in `error_description`: a fixed sentence, never a part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// Longer than the configured maximum.
    #[error("The access token is longer than this API accepts.")]
    TooLong,
    /// Not a compact JWS, an unparseable header (`alg: none` included) or
    /// claims that are not a JSON object.
    #[error("The access token is not a well-formed signed JWT.")]
    Malformed,
    /// Signed with an algorithm that is not accepted (HS*, or not configured).
    #[error("The access token is signed with an algorithm that is not accepted.")]
    DisallowedAlgorithm,
    /// The header has `crit` extensions.
    #[error("The access token header has critical extensions that are not understood.")]
    CriticalHeader,
    /// The header `typ` is not accepted by the [`TypPolicy`].
    #[error("The access token header typ is not accepted.")]
    WrongType,
    /// No key of the issuer matches the `kid`, even after a JWKS refetch
    /// (or the refetch was rate-limited).
    #[error("The access token is signed with an unknown key.")]
    UnknownKey,
    /// The signature does not verify.
    #[error("The access token signature is invalid.")]
    BadSignature,
    /// `iss` is not the issuer.
    #[error("The access token is from another issuer.")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("The access token is not intended for this API.")]
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    #[error("The access token has expired.")]
    Expired,
    /// `nbf` has not come yet (beyond the leeway).
    #[error("The access token is not valid yet.")]
    NotYetValid,
    /// A required claim is absent or empty (`exp`, `sub`).
    #[error("The access token lacks the {0} claim.")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type (`exp`, `nbf`, `scp`, `scope`, `roles`).
    #[error("The access token {0} claim is malformed.")]
    MalformedClaim(&'static str),
}

/// Why [`JwtBearer::validate`] did not return a caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The token is not acceptable (answered 401 `invalid_token`).
    #[error(transparent)]
    Invalid(#[from] InvalidToken),
    /// The token names a key we do not have and the issuer's JWKS could not
    /// be fetched: nothing is known about the token (answered 503).
    #[error("cannot fetch the issuer's signing keys")]
    KeysUnavailable(#[source] ProviderError),
}

impl JwtBearer {
    /// A builder for the API that accepts tokens issued by `authority` (the
    /// issuer identifier; its discovery document is at
    /// `{authority}/.well-known/openid-configuration`). `https`, or `http`
    /// for a loopback development provider.
    ///
    /// For Microsoft Entra: `https://login.microsoftonline.com/{tenant}/v2.0`
    /// with tokens of version 2 (`"accessTokenAcceptedVersion": 2` in the
    /// API's app manifest).
    pub fn builder(authority: impl Into<String>) -> JwtBearerBuilder {
        JwtBearerBuilder::new(authority.into())
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The layer that makes this validator available to the [`ApiCaller`]
    /// extractor and the [`RequireScope`](crate::RequireScope) /
    /// [`RequireRole`](crate::RequireRole) layers: `router.layer(jwt.layer())`.
    /// It validates nothing by itself, so routes that do not ask for a
    /// caller (a health check) stay open.
    pub fn layer(&self) -> Extension<JwtBearer> {
        Extension(self.clone())
    }

    /// The issuer identifier tokens must carry in `iss`.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The accepted audiences.
    pub fn audiences(&self) -> &[String] {
        &self.inner.audiences
    }

    /// The `realm` of the challenges, if configured.
    pub fn realm(&self) -> Option<&str> {
        self.inner.realm.as_deref()
    }

    /// The provider whose keys verify the tokens.
    pub fn provider(&self) -> &Arc<Provider> {
        &self.inner.provider
    }

    /// Authenticates a request from its headers: finds the bearer token in
    /// `Authorization` and validates it.
    ///
    /// # Errors
    /// No bearer token (401 without `error`), several `Authorization`
    /// headers (400 `invalid_request`), an invalid token (401
    /// `invalid_token`), or the keys cannot be fetched (503).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<ApiCaller, ApiRejection> {
        let token = self.bearer_token(headers)?;
        self.validate(token).await.map_err(|e| {
            let reason = match e {
                ValidationError::Invalid(reason) => {
                    tracing::debug!(%reason, "refused an access token");
                    RejectionReason::InvalidToken(reason)
                }
                ValidationError::KeysUnavailable(source) => {
                    tracing::warn!(error = %source, "cannot fetch the issuer's keys to verify an access token");
                    RejectionReason::KeysUnavailable(source)
                }
            };
            self.rejection(reason)
        })
    }

    pub(crate) fn rejection(&self, reason: RejectionReason) -> ApiRejection {
        ApiRejection::new(reason, self.inner.realm.clone())
    }

    /// The token of the request's single `Authorization: Bearer` header.
    fn bearer_token<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, ApiRejection> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Err(self.rejection(RejectionReason::MissingToken));
        };
        if values.next().is_some() {
            return Err(self.rejection(RejectionReason::AmbiguousAuthorization));
        }
        let malformed = || self.rejection(RejectionReason::InvalidToken(InvalidToken::Malformed));
        let value = value.to_str().map_err(|_| malformed())?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            // Another authentication scheme: no bearer token was presented.
            return Err(self.rejection(RejectionReason::MissingToken));
        }
        let token = token.trim_matches(' ');
        if token.is_empty() {
            return Err(malformed());
        }
        Ok(token)
    }

    /// Validates an access token (without the `Bearer ` prefix) and returns
    /// its caller. Scopes and roles are not required here; see
    /// [`ApiCaller::require_scope`].
    ///
    /// # Errors
    /// [`ValidationError::Invalid`] says what is wrong with the token;
    /// [`ValidationError::KeysUnavailable`] when the issuer's JWKS was needed
    /// and could not be fetched.
    pub async fn validate(&self, token: &str) -> Result<ApiCaller, ValidationError> {
        let inner = &self.inner;
        if token.len() > inner.max_token_len {
            return Err(InvalidToken::TooLong.into());
        }
        let verified = inner
            .provider
            .verify_jws(token, &inner.algorithms)
            .await
            .map_err(|e| match e {
                JwsError::DisallowedAlgorithm(_) => InvalidToken::DisallowedAlgorithm.into(),
                JwsError::CriticalHeader => InvalidToken::CriticalHeader.into(),
                JwsError::BadSignature => InvalidToken::BadSignature.into(),
                JwsError::Key(ProviderError::Fetch(e)) => {
                    ValidationError::KeysUnavailable(ProviderError::Fetch(e))
                }
                // A key the provider may have just rotated in, while the key
                // set may not be fetched again yet: retryable, not a verdict
                // on the token (a client told 401 would only fetch another
                // token signed with the same new key).
                JwsError::Key(e @ ProviderError::KeyRefetchRateLimited { .. }) => {
                    ValidationError::KeysUnavailable(e)
                }
                JwsError::Key(_) => InvalidToken::UnknownKey.into(),
                _ => InvalidToken::Malformed.into(),
            })?;
        if !inner.typ.accepts(verified.typ.as_deref()) {
            return Err(InvalidToken::WrongType.into());
        }
        let claims = verified.claims;
        // The provider's rule: its issuer, or for a multi-tenant authority
        // the `{tenantid}` template with the token's own `tid` (and, with an
        // allow-list of tenants on the provider, a tenant on it).
        let iss = claims.get("iss").and_then(Value::as_str);
        let tid = claims.get("tid").and_then(Value::as_str);
        if iss.is_none_or(|iss| inner.provider.check_issuer(iss, tid).is_err()) {
            return Err(InvalidToken::WrongIssuer.into());
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => inner.audiences.contains(aud),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| inner.audiences.iter().any(|a| a == aud)),
            _ => false,
        };
        if !audience_ok {
            return Err(InvalidToken::WrongAudience.into());
        }
        let now = inner.clock.unix_now();
        let exp = match claims.get("exp") {
            None => return Err(InvalidToken::MissingClaim("exp").into()),
            Some(v) => seconds(v).ok_or(InvalidToken::MalformedClaim("exp"))?,
        };
        if now >= exp.saturating_add(inner.leeway) {
            return Err(InvalidToken::Expired.into());
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = seconds(nbf).ok_or(InvalidToken::MalformedClaim("nbf"))?;
            if now.saturating_add(inner.leeway) < nbf {
                return Err(InvalidToken::NotYetValid.into());
            }
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(InvalidToken::MissingClaim("sub"))?
            .to_string();
        let mut scopes = Vec::new();
        for name in ["scp", "scope"] {
            match claims.get(name) {
                None => {}
                Some(Value::String(s)) => {
                    scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_string));
                }
                Some(Value::Array(items)) => {
                    for item in items {
                        let s = item.as_str().ok_or(InvalidToken::MalformedClaim(name))?;
                        scopes.push(s.to_string());
                    }
                }
                Some(_) => return Err(InvalidToken::MalformedClaim(name).into()),
            }
        }
        let roles = match claims.get("roles") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(InvalidToken::MalformedClaim("roles"))?,
            Some(_) => return Err(InvalidToken::MalformedClaim("roles").into()),
        };
        Ok(ApiCaller::new(
            self.clone(),
            sub,
            exp,
            scopes,
            roles,
            claims,
        ))
    }

    /// Whether a granted scope satisfies a required one: equal, or the
    /// required scope is `{audience}/{granted}` for a configured audience
    /// (Microsoft Entra puts only the scope's name in `scp`).
    pub(crate) fn scope_satisfies(&self, granted: &str, required: &str) -> bool {
        granted == required
            || (!granted.contains('/')
                && required
                    .strip_suffix(granted)
                    .and_then(|prefix| prefix.strip_suffix('/'))
                    .is_some_and(|resource| self.inner.audiences.iter().any(|a| a == resource)))
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds; fractions are cut.
fn seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

/// The claims of a caller, kept for [`ApiCaller::claims`].
pub(crate) type Claims = Map<String, Value>;
