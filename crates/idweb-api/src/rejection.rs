//! RFC 6750 §3 answers: status, `WWW-Authenticate` challenge and a JSON body.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idweb::ProviderError;
use serde_json::json;

use crate::challenge::ClaimsChallenge;
use crate::validate::InvalidToken;

/// Why a request was refused: what [`ApiRejection::reason`] returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RejectionReason {
    /// The request carries no bearer token: 401 with a challenge without
    /// `error` (RFC 6750 §3.1).
    #[error("the request has no bearer token")]
    MissingToken,
    /// The request has more than one `Authorization` header: 400
    /// `invalid_request`.
    #[error("the request has more than one Authorization header")]
    AmbiguousAuthorization,
    /// The token is not acceptable: 401 `invalid_token`.
    #[error("the access token is invalid")]
    InvalidToken(#[source] InvalidToken),
    /// The token grants none of these scopes: 403 `insufficient_scope` with
    /// `scope` naming them.
    #[error("the access token grants none of the scopes the request needs")]
    InsufficientScope {
        /// The scopes of which one is needed.
        scopes: Vec<String>,
    },
    /// The token grants none of these app roles: 403 `insufficient_scope`.
    #[error("the access token grants none of the app roles the request needs")]
    InsufficientRole {
        /// The roles of which one is needed.
        roles: Vec<String>,
    },
    /// The token lacks claims the request needs: 401 `insufficient_claims`
    /// with the claims challenge.
    #[error("the access token lacks claims the request needs")]
    InsufficientClaims(ClaimsChallenge),
    /// The issuer's keys were needed and could not be fetched: 503.
    #[error("cannot fetch the issuer's signing keys")]
    KeysUnavailable(#[source] ProviderError),
    /// [`ApiCaller`](crate::ApiCaller) was used on a route without the
    /// [`JwtBearer::layer`](crate::JwtBearer::layer): 500.
    #[error(
        "the JwtBearer layer is not installed: add `.layer(jwt.layer())` to the router that serves this route"
    )]
    MissingLayer,
}

/// A refused API request; answers as RFC 6750 §3 says.
///
/// | reason | status | `WWW-Authenticate` |
/// |---|---|---|
/// | no token | 401 | `Bearer realm="..."` |
/// | several `Authorization` headers | 400 | `Bearer realm="...", error="invalid_request", error_description="..."` |
/// | invalid token | 401 | `Bearer realm="...", error="invalid_token", error_description="..."` |
/// | missing scope | 403 | `Bearer realm="...", error="insufficient_scope", error_description="...", scope="..."` |
/// | missing app role | 403 | `Bearer realm="...", error="insufficient_scope", error_description="..."` |
/// | claims challenge | 401 | `Bearer realm="...", error="insufficient_claims", error_description="...", claims="..."` |
/// | keys unavailable | 503 | — |
///
/// (`realm` only when configured.) Answers with an `error` have the JSON
/// body `{"error", "error_description"}`. Descriptions are fixed sentences:
/// the token is never echoed, in the body, a header or a log.
#[derive(Debug)]
pub struct ApiRejection {
    reason: RejectionReason,
    realm: Option<Arc<str>>,
}

impl std::fmt::Display for ApiRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.reason, f)
    }
}

impl std::error::Error for ApiRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.reason)
    }
}

impl ApiRejection {
    pub(crate) fn new(reason: RejectionReason, realm: Option<Arc<str>>) -> Self {
        Self { reason, realm }
    }

    /// Why the request was refused.
    pub fn reason(&self) -> &RejectionReason {
        &self.reason
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match &self.reason {
            RejectionReason::MissingToken
            | RejectionReason::InvalidToken(_)
            | RejectionReason::InsufficientClaims(_) => StatusCode::UNAUTHORIZED,
            RejectionReason::AmbiguousAuthorization => StatusCode::BAD_REQUEST,
            RejectionReason::InsufficientScope { .. }
            | RejectionReason::InsufficientRole { .. } => StatusCode::FORBIDDEN,
            RejectionReason::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RejectionReason::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` code and `error_description` of the answer, if it has them.
    fn error(&self) -> Option<(&'static str, String)> {
        Some(match &self.reason {
            RejectionReason::MissingToken | RejectionReason::MissingLayer => return None,
            RejectionReason::AmbiguousAuthorization => (
                "invalid_request",
                "The request has more than one Authorization header.".into(),
            ),
            RejectionReason::InvalidToken(reason) => ("invalid_token", reason.to_string()),
            RejectionReason::InsufficientScope { .. } => (
                "insufficient_scope",
                "The access token does not grant the scope this request needs.".into(),
            ),
            RejectionReason::InsufficientRole { .. } => (
                "insufficient_scope",
                "The access token does not grant the app role this request needs.".into(),
            ),
            RejectionReason::InsufficientClaims(_) => {
                ("insufficient_claims", crate::challenge::DESCRIPTION.into())
            }
            RejectionReason::KeysUnavailable(_) => (
                "temporarily_unavailable",
                "The API cannot verify access tokens right now; try again later.".into(),
            ),
        })
    }

    /// The `WWW-Authenticate` challenge, for answers that have one.
    pub fn www_authenticate(&self) -> Option<String> {
        if matches!(
            self.reason,
            RejectionReason::KeysUnavailable(_) | RejectionReason::MissingLayer
        ) {
            return None;
        }
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(realm) = self.realm.as_deref().filter(|r| quotable(r)) {
            params.push(("realm", realm.to_string()));
        }
        if let Some((error, description)) = self.error() {
            params.push(("error", error.to_string()));
            params.push(("error_description", description));
        }
        match &self.reason {
            RejectionReason::InsufficientScope { scopes } => {
                let scopes: Vec<&str> = scopes
                    .iter()
                    .map(String::as_str)
                    .filter(|s| scope_token(s))
                    .collect();
                if !scopes.is_empty() {
                    params.push(("scope", scopes.join(" ")));
                }
            }
            RejectionReason::InsufficientClaims(challenge) => {
                params.push(("claims", challenge.encoded_claims()));
            }
            _ => {}
        }
        Some(challenge_header(&params))
    }
}

/// `Bearer a="x", b="y"` (or `Bearer` alone). Values are checked quotable by
/// the callers: fixed texts, validated realms and scope tokens, base64.
pub(crate) fn challenge_header(params: &[(&str, String)]) -> String {
    let mut out = String::from("Bearer");
    for (i, (name, value)) in params.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(out, "{sep}{name}=\"{value}\"");
    }
    out
}

impl IntoResponse for ApiRejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match (&self.reason, self.error()) {
            (RejectionReason::MissingLayer, _) => (status, self.reason.to_string()).into_response(),
            (_, Some((error, description))) => (
                status,
                Json(json!({ "error": error, "error_description": description })),
            )
                .into_response(),
            (_, None) => status.into_response(),
        };
        if let Some(value) = self
            .www_authenticate()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if let RejectionReason::KeysUnavailable(e) = &self.reason
            && let Some(after) = e.retry_after()
        {
            // Whole seconds, rounded up (RFC 9110 §10.2.3).
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<ClaimsChallenge> for ApiRejection {
    fn from(challenge: ClaimsChallenge) -> Self {
        let realm = challenge.realm().map(Arc::from);
        Self::new(RejectionReason::InsufficientClaims(challenge), realm)
    }
}

/// Fits in a quoted-string without escaping, and RFC 6750's
/// `error_description` / `realm` character set: printable ASCII without `"`
/// and `\`.
pub(crate) fn quotable(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// An RFC 6749 §3.3 scope-token: `1*( %x21 / %x23-5B / %x5D-7E )`.
fn scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(reason: RejectionReason, realm: Option<&str>) -> ApiRejection {
        ApiRejection::new(reason, realm.map(Arc::from))
    }

    #[test]
    fn challenges() {
        assert_eq!(
            rejection(RejectionReason::MissingToken, Some("todo"))
                .www_authenticate()
                .unwrap(),
            r#"Bearer realm="todo""#
        );
        assert_eq!(
            rejection(RejectionReason::MissingToken, None)
                .www_authenticate()
                .unwrap(),
            "Bearer"
        );
        assert_eq!(
            rejection(
                RejectionReason::InvalidToken(InvalidToken::Expired),
                Some("todo")
            )
            .www_authenticate()
            .unwrap(),
            r#"Bearer realm="todo", error="invalid_token", error_description="The access token has expired.""#
        );
        assert_eq!(
            rejection(
                RejectionReason::InsufficientScope {
                    scopes: vec!["a/b".into(), "bad\"scope".into(), "c".into()]
                },
                None
            )
            .www_authenticate()
            .unwrap(),
            r#"Bearer error="insufficient_scope", error_description="The access token does not grant the scope this request needs.", scope="a/b c""#
        );
        let role = rejection(
            RejectionReason::InsufficientRole {
                roles: vec!["Admin".into()],
            },
            None,
        );
        assert_eq!(role.status(), StatusCode::FORBIDDEN);
        assert!(!role.www_authenticate().unwrap().contains("scope=\""));
        assert_eq!(
            rejection(RejectionReason::MissingLayer, None).www_authenticate(),
            None
        );
    }

    #[test]
    fn every_description_is_quotable() {
        for reason in [
            InvalidToken::TooLong,
            InvalidToken::Malformed,
            InvalidToken::DisallowedAlgorithm,
            InvalidToken::CriticalHeader,
            InvalidToken::WrongType,
            InvalidToken::UnknownKey,
            InvalidToken::BadSignature,
            InvalidToken::WrongIssuer,
            InvalidToken::WrongAudience,
            InvalidToken::Expired,
            InvalidToken::NotYetValid,
            InvalidToken::MissingClaim("sub"),
            InvalidToken::MalformedClaim("scp"),
        ] {
            assert!(quotable(&reason.to_string()), "{reason:?}");
        }
    }
}
