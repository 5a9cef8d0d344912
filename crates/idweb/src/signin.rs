//! Sign-in: the authorization code flow with PKCE (S256), `state` and `nonce`
//! bound to the browser in a short-lived sealed cookie, code redemption and
//! ID-token validation (OpenID Connect Core 1.0 §3.1.3.7).

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::cache::{account_identity, entries_from_token_response};
use crate::client::{ProviderClient, TokenRequestError, TokenSet, merge_claims};
use crate::crypto::{Sealer, b64url, hex, random_token, sha256};
use crate::http::HttpError;
use crate::jwt::{self, JwsError, audiences, str_claim, time_claim};
use crate::observe::{count, names};
use crate::provider::{ASYMMETRIC_ALGORITHMS, Provider};
use crate::secret::{Secret, constant_time_eq};
use crate::session::{Session, SessionId};
use crate::sessions::Sessions;
use crate::store::StoreError;
use crate::tenant::IssuerError;
use crate::time::Clock;
use crate::token_cache::TokenCache;

/// How long a started sign-in may take before its cookie is refused.
pub const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(600);

/// The sealing purpose of the pending sign-in cookie.
pub(crate) const PENDING_PURPOSE: &str = "idweb signin v1";

/// The parameters the provider sends back to the redirect URI.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CallbackParams {
    /// The authorization code.
    pub code: Option<Secret>,
    /// The `state` sent in the authorization request.
    pub state: Option<String>,
    /// The issuer (RFC 9207).
    pub iss: Option<String>,
    /// An error code, when the provider refused.
    pub error: Option<String>,
    /// A human-readable error description.
    pub error_description: Option<String>,
}

/// Options of one sign-in.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SignInOptions {
    /// Where to send the user afterwards: a same-origin path or URL. Default `/`.
    pub return_url: Option<String>,
    /// `login_hint` for the provider.
    pub login_hint: Option<String>,
    /// `prompt` for the provider (`login`, `consent`, `select_account`, `none`).
    pub prompt: Option<String>,
    /// Scopes to request in addition to the configured ones (incremental consent).
    pub extra_scopes: Vec<String>,
    /// A claims request (JSON) for the provider, e.g. from an API's claims challenge.
    pub claims: Option<String>,
}

impl SignInOptions {
    /// Sign-in returning to `return_url`.
    pub fn returning_to(return_url: impl Into<String>) -> Self {
        Self {
            return_url: Some(return_url.into()),
            ..Self::default()
        }
    }

    /// Sets `login_hint`.
    pub fn with_login_hint(mut self, hint: impl Into<String>) -> Self {
        self.login_hint = Some(hint.into());
        self
    }

    /// Sets `prompt`.
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }
}

/// A started sign-in: send the browser to `authorization_url` and set the
/// cookie `cookie_name=cookie_value` (HttpOnly, SameSite=Lax, path = callback
/// path, for `max_age`).
#[derive(Debug)]
#[non_exhaustive]
pub struct SignInRequest {
    /// The provider's authorization endpoint with all request parameters.
    pub authorization_url: Url,
    /// The name of the cookie binding this sign-in to the browser.
    pub cookie_name: String,
    /// Its sealed value.
    pub cookie_value: Secret,
    /// Its lifetime.
    pub max_age: Duration,
}

/// What is wrong with an ID token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// The signature, header or key check failed.
    #[error(transparent)]
    Signature(#[from] JwsError),
    /// A required claim is missing or has the wrong type.
    #[error("the ID token has no valid `{0}` claim")]
    MissingClaim(&'static str),
    /// `iss` is not the provider's issuer (for a multi-tenant authority:
    /// not the issuer template filled in with the token's own `tid`, or no
    /// valid `tid`).
    #[error("the ID token was issued by someone else (iss)")]
    Issuer,
    /// The token's tenant (`tid`) may not sign in to this app: it is not on
    /// the allow-list (`IDWEB_ALLOWED_TENANTS`), or the authority excludes it.
    #[error("users of tenant {tenant} may not sign in to this app")]
    TenantNotAllowed {
        /// The token's `tid`.
        tenant: String,
    },
    /// `aud` does not contain this client, or `azp` names another client.
    #[error("the ID token is not meant for this app (aud/azp)")]
    Audience,
    /// `exp` has passed.
    #[error("the ID token has expired")]
    Expired,
    /// `iat` is in the future or too far in the past.
    #[error("the ID token's issue time is not acceptable (iat)")]
    IssuedAt,
    /// `nonce` differs from the one sent.
    #[error("the ID token's nonce does not match this sign-in")]
    Nonce,
    /// `at_hash` does not match the access token.
    #[error("the ID token's at_hash does not match the access token")]
    AtHash,
}

/// Why a sign-in failed. No session is created in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignInError {
    /// The return URL is not a same-origin path.
    #[error("the return URL must be a path on this site")]
    InvalidReturnUrl,
    /// The browser has no (valid, unexpired) pending sign-in for this `state`.
    #[error("this sign-in is unknown or expired; start again")]
    NoPendingSignIn,
    /// `state` does not match the pending sign-in.
    #[error("the sign-in response does not belong to this browser (state mismatch)")]
    StateMismatch,
    /// The response's `iss` is not the provider's issuer (RFC 9207), or is missing while the provider promises it.
    #[error("the sign-in response comes from another issuer")]
    IssuerMismatch,
    /// The response has no code.
    #[error("the sign-in response has no authorization code")]
    MissingCode,
    /// The provider answered the authorization request with an error.
    #[error("the identity provider refused the sign-in: {error}")]
    Provider {
        /// The OAuth error code.
        error: String,
        /// The provider's description, if any.
        description: Option<String>,
    },
    /// The token endpoint refused the code.
    #[error("the identity provider refused to redeem the code: {error}")]
    TokenRejected {
        /// The OAuth error code.
        error: String,
        /// The provider's description, if any.
        description: Option<String>,
    },
    /// The token endpoint could not be called or answered nonsense.
    #[error("cannot redeem the code at the identity provider")]
    TokenEndpoint(#[source] HttpError),
    /// The ID token is invalid.
    #[error("the ID token is invalid")]
    IdToken(#[from] IdTokenError),
    /// The session could not be stored.
    #[error("the session could not be stored")]
    Store(#[from] StoreError),
}

impl SignInError {
    /// The failure's label in `idweb_sign_in_failures_total`, from a fixed
    /// set: `invalid_return_url`, `no_pending_sign_in`, `state_mismatch`,
    /// `issuer_mismatch`, `missing_code`, `provider_error`,
    /// `token_rejected`, `token_endpoint`, `id_token`, `store`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidReturnUrl => "invalid_return_url",
            Self::NoPendingSignIn => "no_pending_sign_in",
            Self::StateMismatch => "state_mismatch",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::MissingCode => "missing_code",
            Self::Provider { .. } => "provider_error",
            Self::TokenRejected { .. } => "token_rejected",
            Self::TokenEndpoint(_) => "token_endpoint",
            Self::IdToken(_) => "id_token",
            Self::Store(_) => "store",
        }
    }
}

/// The content of the pending sign-in cookie.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Pending {
    state: String,
    nonce: String,
    pub(crate) verifier: String,
    pub(crate) return_url: String,
    pub(crate) created_at: i64,
    /// The claims request sent (a claims challenge and/or the client
    /// capabilities), sent again when the code is redeemed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) claims: Option<String>,
}

/// The name of the cookie holding the pending sign-in of `state`.
pub fn pending_cookie_name(state: &str) -> String {
    format!("idweb.signin.{}", hex(&sha256(state.as_bytes())[..8]))
}

/// Builds the authorization request; returns the URL and the pending state.
fn authorization_request(
    provider: &Provider,
    client_id: &str,
    redirect_uri: &Url,
    scopes: &[String],
    options: &SignInOptions,
    return_url: String,
    now: i64,
) -> Result<(Url, Pending), SignInError> {
    let claims = options.claims.clone();
    let state = random_token();
    let nonce = random_token();
    let verifier = random_token();
    let challenge = b64url(&sha256(verifier.as_bytes()));
    let mut url = Url::parse(&provider.metadata().authorization_endpoint)
        .map_err(|_| SignInError::InvalidReturnUrl)?;
    let mut all_scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    for s in &options.extra_scopes {
        if !all_scopes.contains(&s.as_str()) {
            all_scopes.push(s);
        }
    }
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair("scope", &all_scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = &options.login_hint {
            q.append_pair("login_hint", hint);
        }
        if let Some(prompt) = &options.prompt {
            q.append_pair("prompt", prompt);
        }
        if let Some(claims) = &claims {
            q.append_pair("claims", claims);
        }
    }
    Ok((
        url,
        Pending {
            state,
            nonce,
            verifier,
            return_url,
            created_at: now,
            claims,
        },
    ))
}

/// Checks that a return URL stays on this app: same origin as the public
/// URL and, when the app is served under a path (`https://host/portal`),
/// under that path. Returns it as a path (with query), dot segments resolved
/// as the browser would resolve them. The default is the app's home.
fn same_origin_path(raw: Option<&str>, public_url: &Url) -> Result<String, SignInError> {
    let base = public_url.path().trim_end_matches('/');
    let raw = match raw.map(str::trim) {
        None | Some("") => return Ok(if base.is_empty() { "/" } else { base }.to_string()),
        Some(r) => r,
    };
    if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c == '\\') {
        return Err(SignInError::InvalidReturnUrl);
    }
    // "//host" is a scheme-relative URL to another site.
    if raw.starts_with("//") {
        return Err(SignInError::InvalidReturnUrl);
    }
    let url = if raw.starts_with('/') {
        public_url.join(raw)
    } else {
        Url::parse(raw)
    }
    .map_err(|_| SignInError::InvalidReturnUrl)?;
    if url.origin() != public_url.origin() {
        return Err(SignInError::InvalidReturnUrl);
    }
    let path = url.path();
    if !(base.is_empty()
        || path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/')))
    {
        return Err(SignInError::InvalidReturnUrl);
    }
    let mut out = path.to_string();
    if let Some(q) = url.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = url.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Ok(out)
}

/// What is expected of an ID token.
pub(crate) struct IdTokenExpectations<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) nonce: Option<&'a str>,
    pub(crate) access_token: Option<&'a Secret>,
    pub(crate) now: i64,
    pub(crate) skew: i64,
    pub(crate) max_age: i64,
}

/// The algorithms acceptable for ID tokens from this provider.
pub(crate) fn id_token_algorithms(provider: &Provider) -> Vec<Algorithm> {
    let advertised = &provider.metadata().id_token_signing_alg_values_supported;
    let algs: Vec<Algorithm> = ASYMMETRIC_ALGORITHMS
        .iter()
        .copied()
        .filter(|a| {
            advertised
                .iter()
                .any(|s| s.parse::<Algorithm>().ok() == Some(*a))
        })
        .collect();
    if algs.is_empty() {
        vec![Algorithm::RS256]
    } else {
        algs
    }
}

/// Validates an ID token (OpenID Connect Core 1.0 §3.1.3.7); returns its claims.
async fn validate_id_token(
    provider: &Provider,
    token: &Secret,
    expect: &IdTokenExpectations<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let verified = jwt::verify(provider, token.secret(), &id_token_algorithms(provider)).await?;
    check_id_token_claims(provider, verified.alg, &verified.claims, expect)?;
    Ok(verified.claims)
}

/// The claim checks of [`validate_id_token`], on claims whose signature
/// (made with `alg`) was verified.
pub(crate) fn check_id_token_claims(
    provider: &Provider,
    alg: Algorithm,
    c: &Map<String, Value>,
    expect: &IdTokenExpectations<'_>,
) -> Result<(), IdTokenError> {
    let iss = str_claim(c, "iss").ok_or(IdTokenError::MissingClaim("iss"))?;
    provider
        .check_issuer(iss, str_claim(c, "tid"))
        .map_err(|e| match e {
            IssuerError::TenantNotAllowed { tenant } => IdTokenError::TenantNotAllowed { tenant },
            _ => IdTokenError::Issuer,
        })?;
    let sub = str_claim(c, "sub").ok_or(IdTokenError::MissingClaim("sub"))?;
    if sub.is_empty() || sub.len() > 255 {
        return Err(IdTokenError::MissingClaim("sub"));
    }
    let aud = audiences(c).ok_or(IdTokenError::MissingClaim("aud"))?;
    if !aud.contains(&expect.client_id) {
        return Err(IdTokenError::Audience);
    }
    match str_claim(c, "azp") {
        Some(azp) if azp != expect.client_id => return Err(IdTokenError::Audience),
        None if aud.len() > 1 => return Err(IdTokenError::Audience),
        _ => {}
    }
    let exp = time_claim(c, "exp").ok_or(IdTokenError::MissingClaim("exp"))?;
    if expect.now > exp.saturating_add(expect.skew) {
        return Err(IdTokenError::Expired);
    }
    let iat = time_claim(c, "iat").ok_or(IdTokenError::MissingClaim("iat"))?;
    if iat > expect.now.saturating_add(expect.skew)
        || iat < expect.now.saturating_sub(expect.max_age + expect.skew)
    {
        return Err(IdTokenError::IssuedAt);
    }
    if let Some(nbf) = time_claim(c, "nbf")
        && nbf > expect.now.saturating_add(expect.skew)
    {
        return Err(IdTokenError::IssuedAt);
    }
    if let Some(expected) = expect.nonce {
        let nonce = str_claim(c, "nonce").ok_or(IdTokenError::Nonce)?;
        if !constant_time_eq(nonce.as_bytes(), expected.as_bytes()) {
            return Err(IdTokenError::Nonce);
        }
    }
    if let (Some(at_hash), Some(access_token)) = (str_claim(c, "at_hash"), expect.access_token) {
        let alg = match alg {
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => &digest::SHA384,
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => &digest::SHA512,
            _ => &digest::SHA256,
        };
        let d = digest::digest(alg, access_token.secret().as_bytes());
        let half = &d.as_ref()[..d.as_ref().len() / 2];
        if !constant_time_eq(b64url(half).as_bytes(), at_hash.as_bytes()) {
            return Err(IdTokenError::AtHash);
        }
    }
    Ok(())
}

/// What the sign-in service needs to know of the app's settings.
#[derive(Debug, Clone)]
pub(crate) struct SignInConfig {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: Url,
    pub(crate) public_url: Url,
    pub(crate) scopes: Vec<String>,
    pub(crate) session_lifetime: i64,
    pub(crate) skew: i64,
}

/// A completed sign-in.
#[derive(Debug)]
#[non_exhaustive]
pub struct SignedIn {
    /// The new session (already stored).
    pub session: Session,
    /// Where to send the user: a same-origin path.
    pub return_url: String,
    /// The tokens from the code redemption.
    pub tokens: TokenSet,
}

/// Sign-in: starts the authorization code flow and completes it at the
/// redirect URI, creating the session and caching its tokens.
#[derive(Debug, Clone)]
pub struct SignIn {
    config: SignInConfig,
    client: Arc<ProviderClient>,
    sealer: Arc<Sealer>,
    sessions: Sessions,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
}

impl SignIn {
    pub(crate) fn new(
        config: SignInConfig,
        client: Arc<ProviderClient>,
        sealer: Arc<Sealer>,
        sessions: Sessions,
        cache: TokenCache,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            client,
            sealer,
            sessions,
            cache,
            clock,
        }
    }

    fn provider(&self) -> &Provider {
        self.client.provider()
    }

    /// Starts a sign-in. Fails with [`SignInError::InvalidReturnUrl`] when the
    /// return URL leaves this site (no open redirect).
    pub fn begin(&self, options: &SignInOptions) -> Result<SignInRequest, SignInError> {
        let return_url = same_origin_path(options.return_url.as_deref(), &self.config.public_url)?;
        let (authorization_url, pending) = authorization_request(
            self.provider(),
            &self.config.client_id,
            &self.config.redirect_uri,
            &self.config.scopes,
            // The claims request: the caller's (a claims challenge) merged
            // with the client capabilities.
            &SignInOptions {
                claims: merge_claims(options.claims.as_deref(), self.client.capabilities()),
                ..options.clone()
            },
            return_url,
            self.clock.unix_now(),
        )?;
        let json = serde_json::to_vec(&pending).map_err(|_| SignInError::NoPendingSignIn)?;
        Ok(SignInRequest {
            authorization_url,
            cookie_name: pending_cookie_name(&pending.state),
            cookie_value: Secret::new(self.sealer.seal(PENDING_PURPOSE, &json)),
            max_age: SIGN_IN_TIMEOUT,
        })
    }

    /// When the pending sign-in sealed in `pending_cookie` was started (Unix
    /// seconds); `None` when the cookie is not one of this app's. Lets the
    /// web layer keep only the newest few sign-ins of a browser.
    pub fn pending_started_at(&self, pending_cookie: &str) -> Option<i64> {
        self.sealer
            .open(PENDING_PURPOSE, pending_cookie)
            .and_then(|json| serde_json::from_slice::<Pending>(&json).ok())
            .map(|p| p.created_at)
    }

    /// Completes a sign-in at the redirect URI. `pending_cookie` is the value
    /// of the cookie named [`pending_cookie_name`]`(state)`. On success the
    /// session is stored; on any error nothing is stored.
    pub async fn complete(
        &self,
        pending_cookie: Option<&str>,
        params: &CallbackParams,
    ) -> Result<SignedIn, SignInError> {
        let result = self.complete_inner(pending_cookie, params).await;
        match &result {
            Ok(_) => metrics::counter!(names::SIGN_INS).increment(1),
            Err(e) => count(names::SIGN_IN_FAILURES, "reason", e.reason()),
        }
        result
    }

    async fn complete_inner(
        &self,
        pending_cookie: Option<&str>,
        params: &CallbackParams,
    ) -> Result<SignedIn, SignInError> {
        let now = self.clock.unix_now();
        let skew = self.config.skew;
        let pending: Pending = pending_cookie
            .and_then(|c| self.sealer.open(PENDING_PURPOSE, c))
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(SignInError::NoPendingSignIn)?;
        let timeout = i64::try_from(SIGN_IN_TIMEOUT.as_secs()).unwrap_or(600);
        if now > pending.created_at.saturating_add(timeout)
            || now < pending.created_at.saturating_sub(skew)
        {
            return Err(SignInError::NoPendingSignIn);
        }
        let state = params.state.as_deref().ok_or(SignInError::StateMismatch)?;
        if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
            return Err(SignInError::StateMismatch);
        }
        let provider = self.provider();
        match params.iss.as_deref() {
            Some(iss) if !provider.accepts_issuer(iss) => return Err(SignInError::IssuerMismatch),
            None if provider
                .metadata()
                .authorization_response_iss_parameter_supported =>
            {
                return Err(SignInError::IssuerMismatch);
            }
            _ => {}
        }
        if let Some(error) = &params.error {
            return Err(SignInError::Provider {
                error: error.clone(),
                description: params.error_description.clone(),
            });
        }
        let code = params.code.as_ref().ok_or(SignInError::MissingCode)?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.secret()),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(claims) = &pending.claims {
            form.push(("claims", claims.as_str()));
        }
        let tokens = self
            .client
            .token_request(form, now)
            .await
            .map_err(|e| match e {
                TokenRequestError::Rejected { error, description } => {
                    SignInError::TokenRejected { error, description }
                }
                TokenRequestError::Http(h) => SignInError::TokenEndpoint(h),
            })?;
        let id_token = tokens
            .id_token
            .clone()
            .ok_or(SignInError::IdToken(IdTokenError::MissingClaim("id_token")))?;
        let claims = validate_id_token(
            provider,
            &id_token,
            &IdTokenExpectations {
                client_id: &self.config.client_id,
                nonce: Some(&pending.nonce),
                access_token: Some(&tokens.access_token),
                now,
                skew,
                max_age: 3600,
            },
        )
        .await?;
        // The concrete issuer (for a multi-tenant authority, the user's
        // tenant's), so that sign-outs naming it find the session.
        let iss = str_claim(&claims, "iss").unwrap_or_default().to_string();
        if let Some(sent) = params.iss.as_deref()
            && sent != iss
        {
            return Err(SignInError::IssuerMismatch);
        }
        let sub = str_claim(&claims, "sub").unwrap_or_default().to_string();
        let identity = account_identity(
            &iss,
            &provider.metadata().token_endpoint,
            &claims,
            tokens.client_info.as_deref(),
        );
        let session = Session {
            id: SessionId::generate(),
            account_id: identity.home_account_id.clone(),
            sid: str_claim(&claims, "sid").map(str::to_string),
            name: str_claim(&claims, "name")
                .or_else(|| str_claim(&claims, "preferred_username"))
                .map(str::to_string),
            iss,
            sub,
            id_token,
            // Microseconds: a sign-out by subject earlier in this same
            // second must not cover this session (see `Tombstone::covers`).
            created_at: self.clock.unix_micros(),
            expires_at: now.saturating_add(self.config.session_lifetime),
            partition_read: None,
        };
        self.sessions.put(&session).await?;
        let requested = self.config.scopes.join(" ");
        let granted = tokens.scope.as_deref().unwrap_or(&requested);
        let parts = tokens.response_parts(
            &self.config.client_id,
            granted,
            Some(session.id_token.secret()),
            "authorization_code",
            now,
        );
        let entries = entries_from_token_response(&identity, &parts);
        // The IdToken entry refers to the session's ID token (stored once).
        if let Err(e) = self.cache.write_for_session(&session, &entries).await {
            // No half-made sign-in: without its tokens the session goes too.
            let _ = self.sessions.discard(&session.id).await;
            return Err(SignInError::Store(e));
        }
        tracing::info!(session = ?session.id, sid = ?session.sid, "signed in");
        Ok(SignedIn {
            session,
            return_url: pending.return_url,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_must_stay_on_site() {
        let base = Url::parse("https://app.example.com").unwrap();
        assert_eq!(same_origin_path(None, &base).unwrap(), "/");
        assert_eq!(
            same_origin_path(Some("/profile?x=1"), &base).unwrap(),
            "/profile?x=1"
        );
        assert_eq!(
            same_origin_path(Some("https://app.example.com/a?b=c"), &base).unwrap(),
            "/a?b=c"
        );
        for bad in [
            "//evil.example.com/",
            "https://evil.example.com/",
            "http://app.example.com/",
            "https://app.example.com:444/",
            "/\\evil.example.com",
            "javascript:alert(1)",
            "evil.example.com",
            "/a\r\nSet-Cookie: x=y",
            "https://app.example.com.evil.example/",
        ] {
            assert!(
                same_origin_path(Some(bad), &base).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn return_urls_must_stay_under_the_apps_path() {
        let base = Url::parse("https://app.example.com/portal").unwrap();
        assert_eq!(same_origin_path(None, &base).unwrap(), "/portal");
        for (good, path) in [
            ("/portal", "/portal"),
            ("/portal/", "/portal/"),
            ("/portal/profile?x=1", "/portal/profile?x=1"),
            ("https://app.example.com/portal/a", "/portal/a"),
            ("/portal/a/../b", "/portal/b"),
        ] {
            assert_eq!(same_origin_path(Some(good), &base).unwrap(), path, "{good}");
        }
        for bad in [
            "/",
            "/profile",
            "/portalx",
            "/portal-other/a",
            "/portal/../admin",
            "/portal/%2e%2e/admin",
            "/portal/./../admin",
            "https://app.example.com/other",
            "https://evil.example.com/portal",
            "//evil.example.com/portal",
            "/\\evil.example.com/portal",
        ] {
            assert!(
                same_origin_path(Some(bad), &base).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn pending_cookie_names_depend_on_state() {
        assert_ne!(pending_cookie_name("a"), pending_cookie_name("b"));
        assert!(pending_cookie_name("a").starts_with("idweb.signin."));
    }
}
