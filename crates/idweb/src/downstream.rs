//! Calling downstream web APIs on behalf of the signed-in user.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::DownstreamApiSettings;
use crate::session::Session;
use crate::tokens::{TokenAcquirer, TokenError};

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
    /// A JSON body, if any (already serialized).
    pub json: Option<Vec<u8>>,
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

    /// `method path` with `body` as JSON. Fails only when `body` cannot be
    /// serialized as JSON (a map with non-string keys, or a failing
    /// `Serialize` implementation).
    ///
    /// ```
    /// # fn main() -> Result<(), serde_json::Error> {
    /// #[derive(serde::Serialize)]
    /// struct NewTodo<'a> { title: &'a str }
    /// let request = idweb::DownstreamRequest::with_json(
    ///     reqwest::Method::POST,
    ///     "api/todos",
    ///     &NewTodo { title: "Try idweb" },
    /// )?;
    /// assert_eq!(request.json.as_deref(), Some(&br#"{"title":"Try idweb"}"#[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_json<T: Serialize + ?Sized>(
        method: reqwest::Method,
        path: impl Into<String>,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            method,
            path: path.into(),
            json: Some(serde_json::to_vec(body)?),
        })
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
    /// The API answered a status other than 2xx (typed calls only).
    #[error("the downstream API `{api}` answered HTTP {status}")]
    Status {
        /// The API's name.
        api: String,
        /// The HTTP status.
        status: u16,
    },
    /// The API's answer is not the JSON expected (typed calls only).
    #[error("the downstream API `{api}` answered JSON of another shape")]
    InvalidJson {
        /// The API's name.
        api: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Calls the downstream web APIs configured under `[downstream.NAME]` on
/// behalf of the signed-in user, with tokens from the [`TokenAcquirer`].
#[derive(Debug, Clone)]
pub struct DownstreamApi {
    apis: BTreeMap<String, DownstreamApiSettings>,
    http: reqwest::Client,
    tokens: Arc<TokenAcquirer>,
}

impl DownstreamApi {
    pub(crate) fn new(
        apis: BTreeMap<String, DownstreamApiSettings>,
        http: reqwest::Client,
        tokens: Arc<TokenAcquirer>,
    ) -> Self {
        Self { apis, http, tokens }
    }

    /// Calls the downstream API `api` (configured under `[downstream.NAME]`)
    /// with the user's token. A `401` carrying a claims challenge
    /// (`WWW-Authenticate: Bearer ... claims="..."`) becomes
    /// [`TokenError::UiRequired`] with those claims, so the app can send the
    /// user through the provider once more and retry.
    pub async fn call(
        &self,
        session: &Session,
        api: &str,
        request: DownstreamRequest,
    ) -> Result<DownstreamResponse, DownstreamError> {
        let conf = self
            .apis
            .get(api)
            .ok_or_else(|| DownstreamError::UnknownApi(api.to_string()))?;
        let url = resolve(&conf.base_url, &request.path)
            .ok_or(DownstreamError::InvalidPath(request.path.clone()))?;
        let scopes: Vec<&str> = conf.scopes.iter().map(String::as_str).collect();
        let transport = |source| DownstreamError::Transport {
            api: api.to_string(),
            source,
        };
        let mut retried = false;
        let mut resp = loop {
            let token = self.tokens.token_for_user(session, &scopes).await?;
            let mut req = self
                .http
                .request(request.method.clone(), url.clone())
                .bearer_auth(token.secret.secret())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = &request.json {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let resp = req.send().await.map_err(transport)?;
            if resp.status().as_u16() != 401 {
                break resp;
            }
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(claims_challenge);
            if let Some(claims) = challenge {
                return Err(DownstreamError::Token(TokenError::UiRequired {
                    scopes: conf.scopes.clone(),
                    claims: Some(claims),
                }));
            }
            if retried {
                break resp;
            }
            // The API refused a token we thought valid (revoked, or signed
            // with a key the API no longer trusts): drop it and try once
            // more with a fresh one.
            retried = true;
            self.tokens.discard_access_token(session, &token).await?;
        };
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_DOWNSTREAM_BODY {
                return Err(DownstreamError::TooLarge(api.to_string()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(DownstreamResponse {
            status,
            content_type,
            body,
        })
    }

    /// Calls `api` like [`call`](Self::call) and parses a 2xx answer as `T`;
    /// any other status is [`DownstreamError::Status`].
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        session: &Session,
        api: &str,
        request: DownstreamRequest,
    ) -> Result<T, DownstreamError> {
        let resp = self.call(session, api, request).await?;
        if !resp.is_success() {
            return Err(DownstreamError::Status {
                api: api.to_string(),
                status: resp.status,
            });
        }
        resp.json().map_err(|source| DownstreamError::InvalidJson {
            api: api.to_string(),
            source,
        })
    }
}

/// Joins `path` to `base`, refusing anything that escapes it.
fn resolve(base: &Url, path: &str) -> Option<Url> {
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
