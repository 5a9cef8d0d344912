//! Claims challenges: asking the caller for a token with more claims.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::rejection::{ApiRejection, quotable};

/// The `error_description` of a claims challenge.
pub(crate) const DESCRIPTION: &str =
    "The access token lacks claims this request needs; get a new token with the claims challenge.";

/// A claims challenge: the 401 answer that asks the caller to get a new
/// access token carrying more claims —
/// `WWW-Authenticate: Bearer realm="...", error="insufficient_claims", error_description="...", claims="<base64 JSON>"`,
/// as Microsoft Graph sends for Continuous Access Evaluation and APIs send
/// for Conditional Access authentication contexts (step-up).
///
/// The client passes the decoded JSON as the `claims` parameter of its next
/// authorization request; idweb's own client side does so
/// ([`idweb::parse_claims_challenge`] is its parser, and a downstream call
/// answered this way ends in `TokenError::UiRequired { claims, .. }`).
///
/// ```
/// use idweb_api::ClaimsChallenge;
///
/// // Require the authentication context "c1" (e.g. multi-factor) for this request.
/// let challenge = ClaimsChallenge::auth_context("c1").with_realm("todo");
/// let header = challenge.www_authenticate();
/// assert!(header.starts_with(r#"Bearer realm="todo", error="insufficient_claims""#));
///
/// // idweb's client side reads back exactly the claims we asked for.
/// let claims = idweb::parse_claims_challenge(&header).unwrap();
/// assert_eq!(
///     serde_json::from_str::<serde_json::Value>(&claims).unwrap(),
///     serde_json::json!({ "access_token": { "acrs": { "essential": true, "value": "c1" } } })
/// );
/// ```
///
/// In a handler, return it (it is an [`IntoResponse`]) or convert it into an
/// [`ApiRejection`] with `?`/`into()`;
/// [`ApiCaller::claims_challenge`](crate::ApiCaller::claims_challenge)
/// fills in the API's realm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsChallenge {
    /// The claims request, as JSON text.
    claims: String,
    realm: Option<Arc<str>>,
}

impl ClaimsChallenge {
    /// A challenge for a claims request object (OpenID Connect Core §5.5),
    /// e.g. `{"access_token": {"nbf": {"essential": true, "value": "1700000000"}}}`.
    pub fn new(claims: Map<String, Value>) -> Self {
        Self {
            claims: Value::Object(claims).to_string(),
            realm: None,
        }
    }

    /// A challenge for the Conditional Access authentication context `id`
    /// (`{"access_token": {"acrs": {"essential": true, "value": id}}}`):
    /// the token's `acrs` claim must name it. Check a token with
    /// `caller.claim("acrs")`.
    pub fn auth_context(id: &str) -> Self {
        let mut claims = Map::new();
        claims.insert(
            "access_token".into(),
            json!({ "acrs": { "essential": true, "value": id } }),
        );
        Self::new(claims)
    }

    /// Sets the `realm` of the challenge (default none). A realm that is not
    /// printable ASCII without `"` or `\` is left out of the header.
    pub fn with_realm(mut self, realm: impl AsRef<str>) -> Self {
        self.realm = Some(Arc::from(realm.as_ref()));
        self
    }

    /// The claims request, as JSON text.
    pub fn claims_json(&self) -> &str {
        &self.claims
    }

    /// The realm, if set.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref().filter(|r| quotable(r))
    }

    /// The `claims` parameter: the JSON in standard base64 (with padding),
    /// as Microsoft Graph sends it.
    pub(crate) fn encoded_claims(&self) -> String {
        STANDARD.encode(self.claims.as_bytes())
    }

    /// The `WWW-Authenticate` header value.
    pub fn www_authenticate(&self) -> String {
        ApiRejection::from(self.clone())
            .www_authenticate()
            .unwrap_or_default()
    }
}

impl IntoResponse for ClaimsChallenge {
    fn into_response(self) -> Response {
        ApiRejection::from(self).into_response()
    }
}
