//! The app as an OAuth client of its provider: token requests (code
//! redemption, refresh, client credentials) and other authenticated calls
//! (revocation), with the configured client authentication.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::config::ClientAuthMethod;
use crate::http::{HttpError, read_body};
use crate::provider::Provider;
use crate::secret::Secret;

/// The tokens returned by the token endpoint.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, when one was issued.
    pub refresh_token: Option<Secret>,
    /// The ID token, when one was issued.
    pub id_token: Option<Secret>,
    /// Unix seconds when the access token expires, when the provider said.
    pub expires_at: Option<i64>,
    /// The granted scopes, when the provider said.
    pub scope: Option<String>,
    /// Microsoft Entra's `client_info` (base64url JSON with `uid` and `utid`), when sent.
    pub client_info: Option<String>,
    /// Unix seconds of Entra's extended expiry (`ext_expires_in`), when sent.
    pub ext_expires_at: Option<i64>,
    /// Unix seconds after which the token should be refreshed (`refresh_in`), when sent.
    pub refresh_on: Option<i64>,
    /// The family of client ids sharing refresh tokens (Microsoft `foci`), when sent.
    pub family_id: Option<String>,
}

/// The client's credentials and the provider it talks to.
#[derive(Debug, Clone)]
pub(crate) struct ProviderClient {
    http: reqwest::Client,
    provider: Arc<Provider>,
    client_id: String,
    client_secret: Secret,
    auth: ClientAuthMethod,
    /// The claims request announcing the client capabilities, when any.
    capabilities: Option<String>,
}

impl ProviderClient {
    pub(crate) fn new(
        http: reqwest::Client,
        provider: Arc<Provider>,
        client_id: String,
        client_secret: Secret,
        auth: ClientAuthMethod,
    ) -> Self {
        Self {
            http,
            provider,
            client_id,
            client_secret,
            auth,
            capabilities: None,
        }
    }

    /// Announces `capabilities` (e.g. `cp1`) in every token request, as the
    /// claims request `{"access_token":{"xms_cc":{"values":[...]}}}`.
    pub(crate) fn with_capabilities(mut self, capabilities: &[String]) -> Self {
        self.capabilities = capabilities_claims(capabilities);
        self
    }

    /// The claims request of the client capabilities, when any.
    pub(crate) fn capabilities(&self) -> Option<&str> {
        self.capabilities.as_deref()
    }

    /// The provider.
    pub(crate) fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// This app's client id.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Sends a token request with client authentication; parses the answer.
    pub(crate) async fn token_request(
        &self,
        form: Vec<(&str, &str)>,
        now: i64,
    ) -> Result<TokenSet, TokenRequestError> {
        token_request(self, form, now).await
    }

    /// POSTs a form to a provider endpoint with client authentication
    /// (`client_secret_basic`, form-encoding both parts first as RFC 6749
    /// §2.3.1 says, or `client_secret_post`).
    pub(crate) async fn authenticated_post(
        &self,
        url: &str,
        mut form: Vec<(&str, &str)>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match self.auth {
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.secret()));
            }
            _ => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let basic = STANDARD.encode(format!(
                    "{}:{}",
                    enc(&self.client_id),
                    enc(self.client_secret.secret())
                ));
                req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
            }
        }
        req.form(&form).send().await
    }
}

impl TokenSet {
    /// The parts of this response MSAL's cache schema needs, for `grant_type`.
    pub(crate) fn response_parts<'a>(
        &'a self,
        client_id: &'a str,
        granted: &'a str,
        id_token: Option<&'a str>,
        grant_type: &'a str,
        now: i64,
    ) -> crate::cache::TokenResponseParts<'a> {
        crate::cache::TokenResponseParts::new(client_id, granted, self.access_token.secret(), now)
            .with_token_type(Some("Bearer"))
            .with_expires_at(self.expires_at)
            .with_ext_expires_at(self.ext_expires_at)
            .with_refresh_on(self.refresh_on)
            .with_family_id(self.family_id.as_deref())
            .with_refresh_token(self.refresh_token.as_ref().map(Secret::secret))
            .with_id_token(id_token)
            .with_client_info(self.client_info.as_deref())
            .with_grant_type(Some(grant_type))
    }
}

/// Why a token request failed.
#[derive(Debug)]
pub(crate) enum TokenRequestError {
    Rejected {
        error: String,
        description: Option<String>,
    },
    Http(HttpError),
}

/// Sends a token request with client authentication; parses the answer.
async fn token_request(
    client: &ProviderClient,
    mut form: Vec<(&str, &str)>,
    now: i64,
) -> Result<TokenSet, TokenRequestError> {
    let url = client.provider.metadata().token_endpoint.as_str();
    if let Some(claims) = client.capabilities.as_deref()
        && !form.iter().any(|(k, _)| *k == "claims")
    {
        form.push(("claims", claims));
    }
    if is_microsoft_authority(url) {
        // Entra answers `client_info` (uid, utid) only when asked; MSAL keys accounts with it.
        form.push(("client_info", "1"));
    }
    let resp = client
        .authenticated_post(url, form)
        .await
        .map_err(|source| {
            TokenRequestError::Http(HttpError::Transport {
                url: url.to_string(),
                source,
            })
        })?;
    let status = resp.status().as_u16();
    let body = read_body(url, resp)
        .await
        .map_err(TokenRequestError::Http)?;
    if status == 400 || status == 401 {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
            error_description: Option<String>,
        }
        return match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(TokenRequestError::Rejected {
                error: e.error,
                description: e.error_description,
            }),
            Err(_) => Err(TokenRequestError::Http(HttpError::Status {
                url: url.to_string(),
                status,
            })),
        };
    }
    if status != 200 {
        return Err(TokenRequestError::Http(HttpError::Status {
            url: url.to_string(),
            status,
        }));
    }
    #[derive(Deserialize)]
    struct TokenBody {
        access_token: Secret,
        token_type: String,
        #[serde(default)]
        expires_in: Option<Value>,
        #[serde(default)]
        refresh_token: Option<Secret>,
        #[serde(default)]
        id_token: Option<Secret>,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        client_info: Option<String>,
        #[serde(default)]
        ext_expires_in: Option<Value>,
        #[serde(default)]
        refresh_in: Option<Value>,
        #[serde(default)]
        foci: Option<String>,
    }
    let t: TokenBody = serde_json::from_slice(&body).map_err(|source| {
        TokenRequestError::Http(HttpError::Json {
            url: url.to_string(),
            source,
        })
    })?;
    if !t.token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenRequestError::Rejected {
            error: "unsupported_token_type".into(),
            description: Some(format!("token_type `{}` is not Bearer", t.token_type)),
        });
    }
    let seconds = |v: Option<Value>| match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let at = |v: Option<Value>| seconds(v).map(|s| now.saturating_add(s));
    Ok(TokenSet {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        id_token: t.id_token,
        expires_at: at(t.expires_in),
        scope: t.scope,
        client_info: t.client_info,
        ext_expires_at: at(t.ext_expires_in),
        refresh_on: at(t.refresh_in),
        family_id: t.foci,
    })
}

/// Whether the endpoint belongs to Microsoft Entra ID (which sends `client_info`).
fn is_microsoft_authority(endpoint: &str) -> bool {
    let host = Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    [
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    ]
    .contains(&host.as_str())
        || host.ends_with(".ciamlogin.com")
        || host.ends_with(".b2clogin.com")
}

/// The claims request announcing client capabilities (Microsoft Entra's
/// `xms_cc`), or `None` without capabilities.
pub(crate) fn capabilities_claims(capabilities: &[String]) -> Option<String> {
    if capabilities.is_empty() {
        return None;
    }
    Some(
        serde_json::json!({ "access_token": { "xms_cc": { "values": capabilities } } }).to_string(),
    )
}

/// Merges two claims requests (JSON objects) member by member; on a
/// conflict between two non-objects, `first` wins. `None` when both are
/// absent; a value that is not a JSON object is left out.
pub(crate) fn merge_claims(first: Option<&str>, second: Option<&str>) -> Option<String> {
    fn parse(s: Option<&str>) -> Option<serde_json::Map<String, Value>> {
        match serde_json::from_str(s?).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
    fn merge(into: &mut serde_json::Map<String, Value>, from: serde_json::Map<String, Value>) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
                (Some(_), _) => {}
                (None, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    match (parse(first), parse(second)) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(Value::Object(a).to_string()),
        (Some(mut a), Some(b)) => {
            merge(&mut a, b);
            Some(Value::Object(a).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_merge_into_a_claims_challenge() {
        let caps = capabilities_claims(&["cp1".into()]);
        assert_eq!(
            caps.as_deref(),
            Some(r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#)
        );
        assert_eq!(capabilities_claims(&[]), None);
        let challenge = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;
        let merged: Value =
            serde_json::from_str(&merge_claims(Some(challenge), caps.as_deref()).unwrap()).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({ "access_token": {
                "nbf": { "essential": true, "value": "1700000000" },
                "xms_cc": { "values": ["cp1"] }
            }})
        );
        assert_eq!(merge_claims(None, None), None);
        assert_eq!(merge_claims(Some("[1]"), None), None);
        assert_eq!(merge_claims(None, caps.as_deref()), caps);
    }
}
