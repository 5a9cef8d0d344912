//! The [`AuthenticatedUser`] extractor.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::Method;
use axum::http::request::Parts;
use idweb::Session;

use crate::error::{AuthRejection, wants_json};
use crate::{IdWeb, cookies};

/// The signed-in user of this request. Extracting it from a request without a
/// valid session rejects with [`AuthRejection`].
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    session: Session,
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

    /// The whole server-side session.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// The live session of this request, if any.
async fn current_session(parts: &Parts) -> Result<Option<Session>, AuthRejection> {
    let idweb = parts
        .extensions
        .get::<IdWeb>()
        .ok_or(AuthRejection::MissingLayer)?;
    match cookies::get(&parts.headers, idweb.session_cookie_name()) {
        Some(value) => idweb
            .relying_party()
            .session_from_cookie(value)
            .await
            .map_err(|_| AuthRejection::StoreUnavailable {
                json: wants_json(&parts.headers),
            }),
        None => Ok(None),
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
        Ok(current_session(parts)
            .await?
            .map(|session| Self { session }))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match current_session(parts).await? {
            Some(session) => Ok(Self { session }),
            None => {
                let json = wants_json(&parts.headers);
                let here = if parts.method == Method::GET {
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into())
                } else {
                    "/".to_string()
                };
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("returnUrl", &here)
                    .finish();
                Err(AuthRejection::SignInRequired {
                    sign_in_url: format!("/account/signin?{query}"),
                    json,
                })
            }
        }
    }
}
