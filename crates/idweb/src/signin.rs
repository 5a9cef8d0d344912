//! Sign-in: the authorization code flow with PKCE (S256), `state` and `nonce`
//! bound to the browser in a short-lived sealed cookie, code redemption and
//! ID-token validation (OpenID Connect Core 1.0 §3.1.3.7).

use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::config::ClientAuthMethod;
use crate::crypto::{b64url, hex, random_token, sha256};
use crate::http::{HttpError, read_body};
use crate::jwt::{self, JwsError, audiences, str_claim, time_claim};
use crate::provider::{ASYMMETRIC_ALGORITHMS, Provider};
use crate::secret::{Secret, constant_time_eq};
use crate::store::StoreError;

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
    /// `iss` is not the provider's issuer.
    #[error("the ID token was issued by someone else (iss)")]
    Issuer,
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

/// The content of the pending sign-in cookie.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) verifier: String,
    pub(crate) return_url: String,
    pub(crate) created_at: i64,
}

/// The name of the cookie holding the pending sign-in of `state`.
pub fn pending_cookie_name(state: &str) -> String {
    format!("idweb.signin.{}", hex(&sha256(state.as_bytes())[..8]))
}

/// Builds the authorization request; returns the URL and the pending state.
pub(crate) fn authorization_request(
    provider: &Provider,
    client_id: &str,
    redirect_uri: &Url,
    scopes: &[String],
    options: &SignInOptions,
    return_url: String,
    now: i64,
) -> Result<(Url, Pending), SignInError> {
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
        if let Some(claims) = &options.claims {
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
        },
    ))
}

/// Checks that a return URL stays on this site; returns it as a path.
pub(crate) fn same_origin_path(raw: Option<&str>, public_url: &Url) -> Result<String, SignInError> {
    let raw = match raw.map(str::trim) {
        None | Some("") => return Ok("/".to_string()),
        Some(r) => r,
    };
    if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c == '\\') {
        return Err(SignInError::InvalidReturnUrl);
    }
    if raw.starts_with('/') {
        // "//host" is a scheme-relative URL to another site.
        if raw.starts_with("//") {
            return Err(SignInError::InvalidReturnUrl);
        }
        return Ok(raw.to_string());
    }
    let url = Url::parse(raw).map_err(|_| SignInError::InvalidReturnUrl)?;
    if url.origin() != public_url.origin() {
        return Err(SignInError::InvalidReturnUrl);
    }
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(path)
}

/// Redeems the authorization code at the token endpoint.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn redeem_code(
    http: &reqwest::Client,
    provider: &Provider,
    client_id: &str,
    client_secret: &Secret,
    auth: ClientAuthMethod,
    code: &Secret,
    redirect_uri: &Url,
    verifier: &str,
    now: i64,
) -> Result<TokenSet, SignInError> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.secret()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier),
    ];
    token_request(http, provider, client_id, client_secret, auth, form, now)
        .await
        .map_err(|e| match e {
            TokenRequestError::Rejected { error, description } => {
                SignInError::TokenRejected { error, description }
            }
            TokenRequestError::Http(h) => SignInError::TokenEndpoint(h),
        })
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
pub(crate) async fn token_request(
    http: &reqwest::Client,
    provider: &Provider,
    client_id: &str,
    client_secret: &Secret,
    auth: ClientAuthMethod,
    mut form: Vec<(&str, &str)>,
    now: i64,
) -> Result<TokenSet, TokenRequestError> {
    let url = provider.metadata().token_endpoint.as_str();
    if is_microsoft_authority(url) {
        // Entra answers `client_info` (uid, utid) only when asked; MSAL keys accounts with it.
        form.push(("client_info", "1"));
    }
    let resp = authenticated_post(http, url, client_id, client_secret, auth, form)
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

/// POSTs a form to a provider endpoint with client authentication
/// (`client_secret_basic`, form-encoding both parts first as RFC 6749 §2.3.1
/// says, or `client_secret_post`).
pub(crate) async fn authenticated_post(
    http: &reqwest::Client,
    url: &str,
    client_id: &str,
    client_secret: &Secret,
    auth: ClientAuthMethod,
    mut form: Vec<(&str, &str)>,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut req = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json");
    match auth {
        ClientAuthMethod::ClientSecretPost => {
            form.push(("client_id", client_id));
            form.push(("client_secret", client_secret.secret()));
        }
        _ => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = STANDARD.encode(format!(
                "{}:{}",
                enc(client_id),
                enc(client_secret.secret())
            ));
            req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
        }
    }
    req.form(&form).send().await
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
pub(crate) async fn validate_id_token(
    provider: &Provider,
    token: &Secret,
    expect: &IdTokenExpectations<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let verified = jwt::verify(provider, token.secret(), &id_token_algorithms(provider)).await?;
    let c = &verified.claims;
    let iss = str_claim(c, "iss").ok_or(IdTokenError::MissingClaim("iss"))?;
    if iss != provider.issuer() {
        return Err(IdTokenError::Issuer);
    }
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
        let alg = match verified.alg {
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
    Ok(verified.claims)
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
    fn pending_cookie_names_depend_on_state() {
        assert_ne!(pending_cookie_name("a"), pending_cookie_name("b"));
        assert!(pending_cookie_name("a").starts_with("idweb.signin."));
    }
}
