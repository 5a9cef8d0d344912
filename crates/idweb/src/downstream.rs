//! Calling downstream web APIs on behalf of the signed-in user.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::de::DeserializeOwned;
use url::Url;

use crate::tokens::TokenError;

/// Largest downstream response body idweb reads.
pub const MAX_DOWNSTREAM_BODY: usize = 4 * 1024 * 1024;

/// A request to a downstream API, relative to its configured base URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DownstreamRequest {
    /// The HTTP method.
    pub method: reqwest::Method,
    /// The path (and query) relative to the API's base URL, e.g. `api/todos`.
    pub path: String,
    /// A JSON body, if any.
    pub json: Option<serde_json::Value>,
}

impl DownstreamRequest {
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: reqwest::Method::GET,
            path: path.into(),
            json: None,
        }
    }

    /// `method path` with a JSON body.
    pub fn with_json(
        method: reqwest::Method,
        path: impl Into<String>,
        body: serde_json::Value,
    ) -> Self {
        Self {
            method,
            path: path.into(),
            json: Some(body),
        }
    }

    /// `method path` without a body.
    pub fn new(method: reqwest::Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            json: None,
        }
    }
}

/// A downstream API's answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DownstreamResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl DownstreamResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a downstream call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownstreamError {
    /// No token could be had; [`TokenError::UiRequired`] asks the user to sign
    /// in again, possibly with a claims challenge from the API.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No downstream API has this name in the configuration.
    #[error("no downstream API named `{0}` is configured")]
    UnknownApi(String),
    /// The path would leave the API's base URL.
    #[error("the path `{0}` is not relative to the API's base URL")]
    InvalidPath(String),
    /// The API could not be reached.
    #[error("cannot reach the downstream API `{api}`")]
    Transport {
        /// The API's name.
        api: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered a body larger than [`MAX_DOWNSTREAM_BODY`].
    #[error("the downstream API `{0}` answered a body that is too large")]
    TooLarge(String),
}

/// Joins `path` to `base`, refusing anything that escapes it.
pub(crate) fn resolve(base: &Url, path: &str) -> Option<Url> {
    if path.contains("://") || path.starts_with("//") || path.contains('\\') {
        return None;
    }
    let url = base.join(path.trim_start_matches('/')).ok()?;
    (url.origin() == base.origin() && url.path().starts_with(base.path())).then_some(url)
}

/// The claims challenge of a `WWW-Authenticate: Bearer ... claims="..."`
/// header (base64-encoded JSON, as Microsoft Entra's CAE sends), decoded.
pub(crate) fn claims_challenge(www_authenticate: &str) -> Option<String> {
    let lower = www_authenticate.to_ascii_lowercase();
    if !lower.trim_start().starts_with("bearer") {
        return None;
    }
    let at = lower.find("claims=\"")? + "claims=\"".len();
    let end = www_authenticate[at..].find('"')? + at;
    let raw = &www_authenticate[at..end];
    let decoded = STANDARD
        .decode(raw)
        .or_else(|_| URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| raw.to_string());
    serde_json::from_str::<serde_json::Value>(&decoded)
        .ok()
        .filter(serde_json::Value::is_object)
        .map(|_| decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_base() {
        let base = Url::parse("https://api.example.com/v1/").unwrap();
        assert_eq!(
            resolve(&base, "todos?x=1").unwrap().as_str(),
            "https://api.example.com/v1/todos?x=1"
        );
        assert_eq!(
            resolve(&base, "/todos").unwrap().as_str(),
            "https://api.example.com/v1/todos"
        );
        for bad in [
            "https://evil.example.com/",
            "//evil.example.com/x",
            "../admin",
            "..\\admin",
        ] {
            assert!(resolve(&base, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn claims_challenges_are_decoded() {
        let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1604106651"}}}"#;
        let header = format!(
            "Bearer realm=\"\", error=\"insufficient_claims\", claims=\"{}\"",
            STANDARD.encode(claims)
        );
        assert_eq!(claims_challenge(&header).as_deref(), Some(claims));
        assert_eq!(claims_challenge("Bearer error=\"invalid_token\""), None);
        assert_eq!(claims_challenge("Basic realm=\"x\""), None);
        assert_eq!(claims_challenge("Bearer claims=\"bm90IGpzb24=\""), None);
    }
}
