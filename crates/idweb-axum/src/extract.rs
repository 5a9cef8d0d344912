//! The [`AuthenticatedUser`] extractor.

use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, OptionalFromRequestParts, OriginalUri};
use axum::http::Method;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use idweb::{AccessToken, DownstreamError, DownstreamRequest, DownstreamResponse, Session};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiRejection, AuthRejection, wants_json};
use crate::{IdWeb, cookies};

/// The signed-in user of this request. Extracting it from a request without a
/// valid session rejects with [`AuthRejection`].
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    session: Session,
    idweb: IdWeb,
    return_to: ReturnTo,
    json: bool,
    /// The ID token's claims, decoded on first use.
    claims: OnceLock<Arc<Map<String, Value>>>,
}

/// Where a sign-in started from this request comes back to, kept as the
/// request named it (a reference count, not a copy) until a rejection needs
/// it as text.
#[derive(Debug, Clone)]
enum ReturnTo {
    Home,
    Path(PathAndQuery),
}

impl ReturnTo {
    fn url(&self, idweb: &IdWeb) -> String {
        match self {
            ReturnTo::Home => idweb.home_path(),
            ReturnTo::Path(p) => p.as_str().to_string(),
        }
    }
}

impl AuthenticatedUser {
    /// The user's subject identifier.
    pub fn sub(&self) -> &str {
        &self.session.sub
    }

    /// The issuer.
    pub fn iss(&self) -> &str {
        &self.session.iss
    }

    /// The provider's session id, when it sent one.
    pub fn sid(&self) -> Option<&str> {
        self.session.sid.as_deref()
    }

    /// The user's display name, when known.
    pub fn name(&self) -> Option<&str> {
        self.session.name.as_deref()
    }

    /// Every claim of the ID token the user signed in with (`email`,
    /// `preferred_username`, `roles`, `groups`, `tid`, ...), decoded on first
    /// use. Its signature and claims were checked at sign-in.
    pub fn claims(&self) -> &Map<String, Value> {
        self.claims
            .get_or_init(|| Arc::new(self.session.id_token_claims()))
    }

    /// The user's e-mail address (`email` claim), when the provider sent one.
    pub fn email(&self) -> Option<&str> {
        self.claims().get("email").and_then(Value::as_str)
    }

    /// The app roles of the user (`roles` claim: an array, as Microsoft Entra
    /// sends, or a space-separated string).
    pub fn roles(&self) -> Vec<&str> {
        string_list(self.claims().get("roles"))
    }

    /// Whether the user has the app role `role` (exact, case-sensitive match,
    /// as Microsoft.Identity.Web's `IsInRole`).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().contains(&role)
    }

    /// The group ids of the user (`groups` claim), when the provider sent them.
    pub fn groups(&self) -> Vec<&str> {
        string_list(self.claims().get("groups"))
    }

    /// The whole server-side session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// An access token for this user with at least `scopes` (from the cache,
    /// else by refresh). When the user must come back through the provider
    /// (`idweb::TokenError::UiRequired`), the rejection sends them through
    /// sign-in asking for those scopes, then back to this page.
    pub async fn token(&self, scopes: &[&str]) -> Result<AccessToken, ApiRejection> {
        self.idweb
            .relying_party()
            .token_for_user(&self.session, scopes)
            .await
            .map_err(|e| self.reject(DownstreamError::Token(e)))
    }

    /// Calls the configured downstream API `api` with this user's token; a
    /// claims challenge from the API becomes a sign-in with those claims.
    pub async fn call_api(
        &self,
        api: &str,
        request: DownstreamRequest,
    ) -> Result<DownstreamResponse, ApiRejection> {
        self.idweb
            .relying_party()
            .call_api(&self.session, api, request)
            .await
            .map_err(|e| self.reject(e))
    }

    /// Calls `api` and parses its 2xx JSON answer as `T` (any other status is
    /// [`DownstreamError::Status`]).
    pub async fn call_api_json<T: DeserializeOwned>(
        &self,
        api: &str,
        request: DownstreamRequest,
    ) -> Result<T, ApiRejection> {
        self.idweb
            .relying_party()
            .downstream()
            .call_json(&self.session, api, request)
            .await
            .map_err(|e| self.reject(e))
    }

    fn reject(&self, error: DownstreamError) -> ApiRejection {
        ApiRejection {
            error,
            return_url: self.return_to.url(&self.idweb),
            json: self.json,
            sign_in_path: self.idweb.sign_in_path(),
            home: self.idweb.home_path(),
        }
    }
}

/// The strings of a claim that is an array of strings or one space-separated string.
fn string_list(claim: Option<&Value>) -> Vec<&str> {
    match claim {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    }
}

/// Where to come back after a sign-in started from this request: the path
/// the browser asked for (the original URI: nested routers see their part
/// only), or the app's home after anything but a GET.
fn return_to(parts: &Parts) -> ReturnTo {
    if parts.method != Method::GET {
        return ReturnTo::Home;
    }
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    uri.path_and_query()
        .map_or(ReturnTo::Home, |p| ReturnTo::Path(p.clone()))
}

/// The sign-in URL (`sign_in_path`, as the browser sees it) returning to
/// `return_url`, asking for `scopes` and `claims`.
pub(crate) fn sign_in_url(
    sign_in_path: &str,
    return_url: &str,
    scopes: &[String],
    claims: Option<&str>,
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("returnUrl", return_url);
    if !scopes.is_empty() {
        q.append_pair("scope", &scopes.join(" "));
    }
    if let Some(c) = claims {
        q.append_pair("claims", c);
    }
    format!("{sign_in_path}?{}", q.finish())
}

/// The live session of this request, if any, with the idweb handle.
async fn current(parts: &Parts) -> Result<(IdWeb, Option<Session>), AuthRejection> {
    let idweb = parts
        .extensions
        .get::<IdWeb>()
        .ok_or(AuthRejection::MissingLayer)?
        .clone();
    let session = match cookies::get(&parts.headers, idweb.session_cookie_name()) {
        Some(value) => idweb
            .relying_party()
            .session_from_cookie(value)
            .await
            .map_err(|_| AuthRejection::StoreUnavailable {
                json: wants_json(&parts.headers),
                home: idweb.home_path(),
            })?,
        None => None,
    };
    Ok((idweb, session))
}

fn user(parts: &Parts, idweb: IdWeb, session: Session) -> AuthenticatedUser {
    // The response shows a signed-in user's data: `Cache-Control: no-store`.
    if let Some(marker) = parts.extensions.get::<crate::headers::Authenticated>() {
        marker.mark();
    }
    AuthenticatedUser {
        session,
        return_to: return_to(parts),
        idweb,
        json: wants_json(&parts.headers),
        claims: OnceLock::new(),
    }
}

/// `Option<AuthenticatedUser>`: `None` for an anonymous request; still rejects
/// when the store is unavailable or the layer is missing.
impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthenticatedUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let (idweb, session) = current(parts).await?;
        Ok(session.map(|s| user(parts, idweb, s)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match current(parts).await? {
            (idweb, Some(session)) => Ok(user(parts, idweb, session)),
            (idweb, None) => Err(AuthRejection::SignInRequired {
                sign_in_url: sign_in_url(
                    &idweb.sign_in_path(),
                    &return_to(parts).url(&idweb),
                    &[],
                    None,
                ),
                json: wants_json(&parts.headers),
            }),
        }
    }
}
