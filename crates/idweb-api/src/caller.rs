//! The authenticated caller of an API request, and its extractor.

use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use serde_json::{Map, Value};

use crate::challenge::ClaimsChallenge;
use crate::rejection::{ApiRejection, RejectionReason};
use crate::validate::{Claims, JwtBearer};

/// The caller of an API request, authenticated by a valid bearer token.
///
/// As an axum extractor it validates the request's `Authorization: Bearer`
/// token with the [`JwtBearer`] installed by [`JwtBearer::layer`] (once per
/// request: a [`RequireScope`](crate::RequireScope) layer in front hands its
/// caller over). It rejects with an [`ApiRejection`]: 401 with a bare
/// challenge when no token was sent, 401 `invalid_token`, 400 for several
/// `Authorization` headers, 503 when the issuer's keys cannot be fetched.
/// `Option<ApiCaller>` is `None` when no token was sent and still rejects an
/// invalid one.
///
/// Cheap to clone. Its `Debug` shows the subject, scopes and roles, never
/// the token (which it does not keep).
///
/// ```
/// use idweb_api::{ApiCaller, ApiRejection};
///
/// async fn delete_everything(caller: ApiCaller) -> Result<&'static str, ApiRejection> {
///     caller.require_scope("api://todo/todos.write")?;
///     caller.require_role("Todo.Admin")?;
///     Ok("done")
/// }
/// ```
#[derive(Clone)]
pub struct ApiCaller {
    inner: Arc<CallerInner>,
}

struct CallerInner {
    jwt: JwtBearer,
    sub: String,
    exp: i64,
    scopes: Vec<String>,
    roles: Vec<String>,
    claims: Claims,
}

impl std::fmt::Debug for ApiCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCaller")
            .field("issuer", &self.issuer())
            .field("sub", &self.inner.sub)
            .field("scopes", &self.inner.scopes)
            .field("roles", &self.inner.roles)
            .finish_non_exhaustive()
    }
}

impl ApiCaller {
    pub(crate) fn new(
        jwt: JwtBearer,
        sub: String,
        exp: i64,
        scopes: Vec<String>,
        roles: Vec<String>,
        claims: Claims,
    ) -> Self {
        Self {
            inner: Arc::new(CallerInner {
                jwt,
                sub,
                exp,
                scopes,
                roles,
                claims,
            }),
        }
    }

    /// The token's `sub`: the user (or, for an app-only token, the client),
    /// unique for the issuer. Key per-user data by [`issuer`](Self::issuer)
    /// and `sub` together.
    pub fn sub(&self) -> &str {
        &self.inner.sub
    }

    /// The token's issuer (`iss`, checked to be the configured one — for a
    /// multi-tenant authority, the issuer of the token's own tenant, not the
    /// `{tenantid}` template).
    pub fn issuer(&self) -> &str {
        self.inner
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_else(|| self.inner.jwt.issuer())
    }

    /// When the token expires (`exp`), in seconds since the Unix epoch.
    pub fn expires_at(&self) -> i64 {
        self.inner.exp
    }

    /// The client the token was issued to: `client_id` (RFC 9068), `azp`
    /// (Microsoft Entra v2) or `appid` (v1), whichever comes first.
    pub fn client_id(&self) -> Option<&str> {
        ["client_id", "azp", "appid"]
            .iter()
            .find_map(|name| self.claim(name).and_then(Value::as_str))
    }

    /// All claims of the token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.claims
    }

    /// One claim of the token.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.inner.claims.get(name)
    }

    /// The delegated scopes granted (`scp` and `scope`, as string or array).
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }

    /// The app roles granted (`roles`).
    pub fn roles(&self) -> &[String] {
        &self.inner.roles
    }

    /// Whether the token grants `scope`: a granted scope equal to it, or —
    /// as Microsoft Entra writes only the scope's name in `scp` — a granted
    /// `name` when `scope` is `{audience}/name` for a configured audience.
    /// Case-sensitive (RFC 6749 §3.3).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner
            .scopes
            .iter()
            .any(|granted| self.inner.jwt.scope_satisfies(granted, scope))
    }

    /// Whether the token grants the app role `role` (case-sensitive).
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.roles.iter().any(|r| r == role)
    }

    /// `Ok` when the token grants `scope`; otherwise the 403
    /// `insufficient_scope` answer naming it.
    ///
    /// # Errors
    /// The scope is not granted.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiRejection> {
        self.require_any_scope(&[scope])
    }

    /// `Ok` when the token grants at least one of `scopes`; otherwise the
    /// 403 `insufficient_scope` answer naming them.
    ///
    /// # Errors
    /// None of the scopes is granted.
    pub fn require_any_scope(&self, scopes: &[&str]) -> Result<(), ApiRejection> {
        if scopes.iter().any(|s| self.has_scope(s)) {
            return Ok(());
        }
        tracing::debug!(?scopes, "the access token lacks the scope a route needs");
        Err(self.rejection(RejectionReason::InsufficientScope {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }))
    }

    /// `Ok` when the token grants the app role `role`; otherwise 403
    /// `insufficient_scope`.
    ///
    /// # Errors
    /// The role is not granted.
    pub fn require_role(&self, role: &str) -> Result<(), ApiRejection> {
        self.require_any_role(&[role])
    }

    /// `Ok` when the token grants at least one of `roles`; otherwise 403
    /// `insufficient_scope`.
    ///
    /// # Errors
    /// None of the roles is granted.
    pub fn require_any_role(&self, roles: &[&str]) -> Result<(), ApiRejection> {
        if roles.iter().any(|r| self.has_role(r)) {
            return Ok(());
        }
        tracing::debug!(?roles, "the access token lacks the app role a route needs");
        Err(self.rejection(RejectionReason::InsufficientRole {
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }))
    }

    /// `Ok` when the token grants one of `scopes` (a user's delegated
    /// permission) or one of `roles` (an application permission, for
    /// app-only tokens); otherwise 403 `insufficient_scope` naming the scopes.
    ///
    /// # Errors
    /// Neither a scope nor a role is granted.
    pub fn require_scope_or_role(
        &self,
        scopes: &[&str],
        roles: &[&str],
    ) -> Result<(), ApiRejection> {
        if scopes.iter().any(|s| self.has_scope(s)) || roles.iter().any(|r| self.has_role(r)) {
            return Ok(());
        }
        Err(self.rejection(RejectionReason::InsufficientScope {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }))
    }

    /// The 401 `insufficient_claims` answer for `challenge`, with this
    /// API's realm unless the challenge has its own.
    ///
    /// ```
    /// use idweb_api::{ApiCaller, ApiRejection, ClaimsChallenge};
    ///
    /// // Step-up: this route needs the authentication context "c1".
    /// async fn transfer(caller: ApiCaller) -> Result<&'static str, ApiRejection> {
    ///     let has_c1 = caller
    ///         .claim("acrs")
    ///         .and_then(|v| v.as_array())
    ///         .is_some_and(|acrs| acrs.iter().any(|v| v == "c1"));
    ///     if !has_c1 {
    ///         return Err(caller.claims_challenge(ClaimsChallenge::auth_context("c1")));
    ///     }
    ///     Ok("done")
    /// }
    /// ```
    pub fn claims_challenge(&self, challenge: ClaimsChallenge) -> ApiRejection {
        let challenge = match (challenge.realm(), self.inner.jwt.realm()) {
            (None, Some(realm)) => challenge.with_realm(realm),
            _ => challenge,
        };
        ApiRejection::from(challenge)
    }

    fn rejection(&self, reason: RejectionReason) -> ApiRejection {
        self.inner.jwt.rejection(reason)
    }
}

/// The caller of the request: the one a layer in front already validated,
/// or the result of validating the request's token now (then kept in the
/// request's extensions for the next extractor).
pub(crate) async fn caller_of(parts: &mut Parts) -> Result<ApiCaller, ApiRejection> {
    if let Some(caller) = parts.extensions.get::<ApiCaller>() {
        return Ok(caller.clone());
    }
    let Some(jwt) = parts.extensions.get::<JwtBearer>().cloned() else {
        tracing::error!("ApiCaller used on a route without the JwtBearer layer");
        return Err(ApiRejection::new(RejectionReason::MissingLayer, None));
    };
    let caller = jwt.authenticate(&parts.headers).await?;
    parts.extensions.insert(caller.clone());
    Ok(caller)
}

impl<S: Send + Sync> FromRequestParts<S> for ApiCaller {
    type Rejection = ApiRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        caller_of(parts).await
    }
}

/// `Option<ApiCaller>`: `None` when the request has no bearer token; an
/// invalid token is still rejected.
impl<S: Send + Sync> OptionalFromRequestParts<S> for ApiCaller {
    type Rejection = ApiRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match caller_of(parts).await {
            Ok(caller) => Ok(Some(caller)),
            Err(r) if matches!(r.reason(), RejectionReason::MissingToken) => Ok(None),
            Err(r) => Err(r),
        }
    }
}
