//! The token endpoint and the contents of the tokens it issues.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::{Map, Value, json};

use crate::config::{DevClient, DevUser, Fault, login_hint_for, subject_for};
use crate::crypto::{
    CryptoError, SigningKey, at_hash, b64, random_string, secrets_equal, sha256, token_hash,
};
use crate::params::{Params, form_urldecode, is_pkce_value};
use crate::server::{no_store, parse_scope};
use crate::state::{Family, RefreshRecord, Shared};

/// The grant type of a successful token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantKind {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub(crate) struct TokenError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// Answer with `WWW-Authenticate: Basic` (the client used Basic auth).
    basic_challenge: bool,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        TokenError {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    fn invalid_client(description: impl Into<String>, basic: bool) -> Self {
        TokenError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
            basic_challenge: basic,
        }
    }

    /// The request body could not be read (too large, or broken).
    pub(crate) fn body_rejected(status: StatusCode) -> Self {
        TokenError {
            status,
            error: "invalid_request",
            description: "The request body could not be read (it is limited to 64 KiB).".to_owned(),
            basic_challenge: false,
        }
    }

    pub(crate) fn server_error() -> Self {
        TokenError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "Internal error.".to_owned(),
            basic_challenge: false,
        }
    }
}

impl From<CryptoError> for TokenError {
    fn from(_: CryptoError) -> Self {
        TokenError::server_error()
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"devidp\""),
            );
        }
        no_store(response)
    }
}

/// For a scope `api://NAME/xyz`, the resource `api://NAME`.
pub(crate) fn api_resource(scope: &str) -> Option<&str> {
    let rest = scope.strip_prefix("api://")?;
    let (name, permission) = rest.split_once('/')?;
    if name.is_empty() || permission.is_empty() {
        return None;
    }
    scope.get(..6 + name.len())
}

/// The `aud` of an access token: the distinct `api://NAME` resources of the
/// `api://NAME/...` scopes, or else `{issuer}/userinfo`. One audience is a
/// string, several are an array.
pub(crate) fn access_token_audience(issuer: &str, scope: &[String]) -> Value {
    let mut resources: Vec<&str> = Vec::new();
    for resource in scope.iter().filter_map(|s| api_resource(s)) {
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    match resources.as_slice() {
        [] => Value::String(format!("{issuer}/userinfo")),
        [one] => Value::String((*one).to_owned()),
        many => Value::Array(
            many.iter()
                .map(|r| Value::String((*r).to_owned()))
                .collect(),
        ),
    }
}

/// Handles a token request.
pub(crate) fn token_request(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(GrantKind, Value), TokenError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(TokenError::invalid_request(
            "The request body must be application/x-www-form-urlencoded.",
        ));
    }
    let params = Params::parse(body);
    if let Some(name) = params.duplicate() {
        return Err(TokenError::invalid_request(format!(
            "The {name} parameter is repeated."
        )));
    }
    let client = authenticate_client(shared, headers, &params)?;
    match params.get("grant_type") {
        None => Err(TokenError::invalid_request(
            "The grant_type parameter is missing.",
        )),
        Some("authorization_code") => authorization_code_grant(shared, &client, &params)
            .map(|v| (GrantKind::AuthorizationCode, v)),
        Some("refresh_token") => {
            refresh_token_grant(shared, &client, &params).map(|v| (GrantKind::RefreshToken, v))
        }
        Some("client_credentials") => client_credentials_grant(shared, &client, &params)
            .map(|v| (GrantKind::ClientCredentials, v)),
        Some(_) => Err(TokenError::new(
            "unsupported_grant_type",
            "The grant_type is not supported.",
        )),
    }
}

/// Handles a revocation request (RFC 7009); `Ok(true)` when a refresh token
/// of the client was revoked.
pub(crate) fn revocation_request(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<bool, TokenError> {
    let params = Params::parse(body);
    let client = authenticate_client(shared, headers, &params)?;
    let token = params
        .get("token")
        .ok_or_else(|| TokenError::invalid_request("The token parameter is required."))?;
    let mut st = shared.lock();
    let family = st
        .refresh_tokens
        .get(&token_hash(token))
        .filter(|r| r.client_id == client.client_id)
        .map(|r| r.family);
    match family {
        Some(family) => {
            st.revoke_family(family);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Authenticates the client with `client_secret_basic` or `client_secret_post`.
fn authenticate_client(
    shared: &Shared,
    headers: &HeaderMap,
    params: &Params,
) -> Result<DevClient, TokenError> {
    let (client_id, secret, basic) = if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bad = || TokenError::invalid_client("The Authorization header is malformed.", true);
        let value = value.to_str().map_err(|_| bad())?;
        let (scheme, credentials) = value.split_once(' ').ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(TokenError::invalid_client(
                "Only the Basic authentication scheme is supported.",
                true,
            ));
        }
        let credentials = credentials.trim();
        let decoded = STANDARD
            .decode(credentials)
            .or_else(|_| STANDARD_NO_PAD.decode(credentials))
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
        let id = form_urldecode(id).ok_or_else(bad)?;
        let secret = form_urldecode(secret).ok_or_else(bad)?;
        if params.get("client_secret").is_some() {
            return Err(TokenError::invalid_request(
                "More than one client authentication method was used.",
            ));
        }
        if params.get("client_id").is_some_and(|c| c != id) {
            return Err(TokenError::invalid_request(
                "The client_id parameter does not match the authenticated client.",
            ));
        }
        (id, secret, true)
    } else {
        match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned(), false),
            _ => {
                return Err(TokenError::invalid_client(
                    "Client authentication is required (client_secret_basic or client_secret_post).",
                    false,
                ));
            }
        }
    };
    let client = shared.lock().clients.get(&client_id).cloned();
    match client {
        Some(client) if secrets_equal(&client.client_secret, &secret) => Ok(client),
        _ => {
            tracing::debug!(client_id = %client_id, "client authentication failed");
            Err(TokenError::invalid_client(
                "Client authentication failed.",
                basic,
            ))
        }
    }
}

/// What is known about the user for whom tokens are issued.
struct UserGrant {
    user: DevUser,
    sid: String,
    auth_time: i64,
    nonce: Option<String>,
    /// The claims request that applies (`claims` of the token request, else
    /// of the authorization request).
    claims: Option<Value>,
}

/// The `claims` parameter of a token request, when it is a JSON object.
fn claims_param(params: &Params) -> Result<Option<Value>, TokenError> {
    match params.get("claims") {
        None => Ok(None),
        Some(c) => match serde_json::from_str::<Value>(c) {
            Ok(v) if v.is_object() => Ok(Some(v)),
            _ => Err(TokenError::invalid_request(
                "The claims parameter is not a JSON object.",
            )),
        },
    }
}

/// Adds to access-token claims what a claims request asks for and this
/// provider knows: `xms_cc` (client capabilities) and `acrs`
/// (authentication contexts).
fn apply_claims_request(at: &mut Map<String, Value>, claims: Option<&Value>) {
    let Some(request) = claims.and_then(|c| c.get("access_token")) else {
        return;
    };
    let strings = |v: &Value| -> Vec<Value> {
        let values = v.get("values").and_then(Value::as_array).cloned();
        let value = v.get("value").filter(|x| x.is_string()).cloned();
        values
            .unwrap_or_default()
            .into_iter()
            .chain(value)
            .filter(Value::is_string)
            .collect()
    };
    if let Some(cc) = request.get("xms_cc") {
        let values = strings(cc);
        if !values.is_empty() {
            at.insert("xms_cc".into(), Value::Array(values));
        }
    }
    if let Some(acrs) = request.get("acrs") {
        let values = strings(acrs);
        if !values.is_empty() {
            at.insert("acrs".into(), Value::Array(values));
        }
    }
}

/// Values taken from the state for signing outside the lock.
struct Issue {
    key: std::sync::Arc<SigningKey>,
    fault: Option<Fault>,
    lifetimes: crate::state::Lifetimes,
}

fn authorization_code_grant(
    shared: &Shared,
    client: &DevClient,
    params: &Params,
) -> Result<Value, TokenError> {
    let code = params
        .get("code")
        .ok_or_else(|| TokenError::invalid_request("The code parameter is missing."))?;
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| TokenError::invalid_request("The redirect_uri parameter is missing."))?;
    let verifier = params.get("code_verifier");
    let requested_claims = claims_param(params)?;
    let now = shared.now();
    let refresh_token = random_string(32)?;
    let jti = random_string(16)?;

    let mut st = shared.lock();
    st.purge(now);
    let hash = token_hash(code);
    let grant = st
        .codes
        .get(&hash)
        .cloned()
        .ok_or_else(|| TokenError::invalid_grant("The code is invalid or expired."))?;
    if grant.client_id != client.client_id {
        return Err(TokenError::invalid_grant(
            "The code was issued to another client.",
        ));
    }
    if grant.redeemed {
        if let Some(family) = grant.family {
            st.revoke_family(family);
        }
        st.revoke_access_tokens(grant.access_tokens);
        tracing::debug!(client_id = %client.client_id, "authorization code replayed; revoked the tokens issued from it");
        return Err(TokenError::invalid_grant(
            "The code has already been used; the tokens issued from it are revoked.",
        ));
    }
    if grant.expires_at <= now {
        return Err(TokenError::invalid_grant("The code has expired."));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(TokenError::invalid_grant(
            "The redirect_uri does not match the authorization request.",
        ));
    }
    let verifier = verifier.ok_or_else(|| {
        TokenError::invalid_grant("The code_verifier is missing (PKCE is required).")
    })?;
    if !is_pkce_value(verifier) {
        return Err(TokenError::invalid_grant("The code_verifier is malformed."));
    }
    let challenge = b64(&sha256(verifier.as_bytes()));
    if !secrets_equal(&challenge, &grant.code_challenge) {
        return Err(TokenError::invalid_grant(
            "The code_verifier does not match the code_challenge.",
        ));
    }
    let user = st
        .user(&grant.username)
        .cloned()
        .ok_or_else(|| TokenError::invalid_grant("The user no longer exists."))?;
    let lifetimes = st.lifetimes;
    let access_exp = now.saturating_add(lifetimes.access);
    let family = if grant.scope.iter().any(|s| s == "offline_access") {
        let id = st.new_family(Family {
            username: grant.username.clone(),
            sid: grant.sid.clone(),
            auth_time: grant.auth_time,
            scope: grant.scope.clone(),
            revoked: false,
            access_tokens: vec![(jti.clone(), access_exp)],
        });
        st.refresh_tokens.insert(
            token_hash(&refresh_token),
            RefreshRecord {
                family: id,
                client_id: client.client_id.clone(),
                expires_at: now.saturating_add(lifetimes.refresh),
                rotated: false,
            },
        );
        Some(id)
    } else {
        None
    };
    if let Some(stored) = st.codes.get_mut(&hash) {
        stored.redeemed = true;
        stored.family = family;
        stored.access_tokens.push((jti.clone(), access_exp));
    }
    let issue = Issue {
        key: st.current_key().ok_or_else(TokenError::server_error)?,
        fault: st.fault.take(),
        lifetimes,
    };
    drop(st);

    let user_grant = UserGrant {
        user,
        sid: grant.sid,
        auth_time: grant.auth_time,
        nonce: grant.nonce,
        claims: requested_claims.or(grant.claims),
    };
    let response = issue_tokens(
        shared,
        &issue,
        client,
        &grant.scope,
        Some(&user_grant),
        &jti,
        now,
        family.map(|_| refresh_token),
    )?;
    tracing::debug!(client_id = %client.client_id, username = %user_grant.user.username, "issued tokens for an authorization code");
    Ok(response)
}

fn refresh_token_grant(
    shared: &Shared,
    client: &DevClient,
    params: &Params,
) -> Result<Value, TokenError> {
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| TokenError::invalid_request("The refresh_token parameter is missing."))?;
    let requested_scope = match params.get("scope") {
        Some(scope) => Some(parse_scope(scope).map_err(|m| TokenError::new("invalid_scope", m))?),
        None => None,
    };
    let requested_claims = claims_param(params)?;
    let now = shared.now();
    let new_refresh_token = random_string(32)?;
    let jti = random_string(16)?;

    let mut st = shared.lock();
    st.purge(now);
    let hash = token_hash(presented);
    let record = st
        .refresh_tokens
        .get(&hash)
        .cloned()
        .ok_or_else(|| TokenError::invalid_grant("The refresh token is invalid or expired."))?;
    if record.client_id != client.client_id {
        return Err(TokenError::invalid_grant(
            "The refresh token was issued to another client.",
        ));
    }
    let family = st
        .families
        .get(&record.family)
        .cloned()
        .ok_or_else(|| TokenError::invalid_grant("The refresh token is invalid or expired."))?;
    if family.revoked {
        return Err(TokenError::invalid_grant(
            "The refresh token has been revoked.",
        ));
    }
    if record.rotated {
        st.revoke_family(record.family);
        tracing::debug!(client_id = %client.client_id, "rotated refresh token replayed; revoked its family");
        return Err(TokenError::invalid_grant(
            "The refresh token has already been used; all tokens of its family are revoked.",
        ));
    }
    if record.expires_at <= now {
        return Err(TokenError::invalid_grant("The refresh token has expired."));
    }
    let scope = match requested_scope {
        Some(requested) => {
            if let Some(extra) = requested.iter().find(|s| !family.scope.contains(s)) {
                return Err(TokenError::new(
                    "invalid_scope",
                    format!("The scope {extra} exceeds the originally granted scope."),
                ));
            }
            requested
        }
        None => family.scope.clone(),
    };
    let user = st
        .user(&family.username)
        .cloned()
        .ok_or_else(|| TokenError::invalid_grant("The user no longer exists."))?;
    let lifetimes = st.lifetimes;
    let access_exp = now.saturating_add(lifetimes.access);
    if let Some(old) = st.refresh_tokens.get_mut(&hash) {
        old.rotated = true;
    }
    st.refresh_tokens.insert(
        token_hash(&new_refresh_token),
        RefreshRecord {
            family: record.family,
            client_id: client.client_id.clone(),
            expires_at: now.saturating_add(lifetimes.refresh),
            rotated: false,
        },
    );
    if let Some(f) = st.families.get_mut(&record.family) {
        f.access_tokens.push((jti.clone(), access_exp));
    }
    let wants_id_token = scope.iter().any(|s| s == "openid");
    let issue = Issue {
        key: st.current_key().ok_or_else(TokenError::server_error)?,
        fault: if wants_id_token {
            st.fault.take()
        } else {
            None
        },
        lifetimes,
    };
    drop(st);

    let user_grant = UserGrant {
        user,
        sid: family.sid,
        auth_time: family.auth_time,
        nonce: None,
        claims: requested_claims,
    };
    let response = issue_tokens(
        shared,
        &issue,
        client,
        &scope,
        Some(&user_grant),
        &jti,
        now,
        Some(new_refresh_token),
    )?;
    tracing::debug!(client_id = %client.client_id, "rotated a refresh token");
    Ok(response)
}

fn client_credentials_grant(
    shared: &Shared,
    client: &DevClient,
    params: &Params,
) -> Result<Value, TokenError> {
    let scope = match params.get("scope") {
        Some(scope) => parse_scope(scope).map_err(|m| TokenError::new("invalid_scope", m))?,
        None => Vec::new(),
    };
    if let Some(bad) = scope.iter().find(|s| api_resource(s).is_none()) {
        return Err(TokenError::new(
            "invalid_scope",
            format!("The scope {bad} cannot be granted to a client; use api://NAME/... scopes."),
        ));
    }
    let now = shared.now();
    let jti = random_string(16)?;
    let st = shared.lock();
    let issue = Issue {
        key: st.current_key().ok_or_else(TokenError::server_error)?,
        fault: None,
        lifetimes: st.lifetimes,
    };
    drop(st);
    let response = issue_tokens(shared, &issue, client, &scope, None, &jti, now, None)?;
    tracing::debug!(client_id = %client.client_id, "issued a client credentials token");
    Ok(response)
}

/// Signs the access token (and ID token for a user grant with `openid`) and
/// builds the token response.
#[allow(clippy::too_many_arguments)]
fn issue_tokens(
    shared: &Shared,
    issue: &Issue,
    client: &DevClient,
    scope: &[String],
    user: Option<&UserGrant>,
    jti: &str,
    now: i64,
    refresh_token: Option<String>,
) -> Result<Value, TokenError> {
    let (token_issuer, tid) = shared.issuer_of(user.map(|u| u.user.username.as_str()));
    let issuer = token_issuer.as_str();
    let mut at = Map::new();
    at.insert("iss".into(), json!(issuer));
    if let Some(tid) = &tid {
        at.insert("tid".into(), json!(tid));
        at.insert("ver".into(), json!("2.0"));
    }
    apply_claims_request(&mut at, user.and_then(|u| u.claims.as_ref()));
    at.insert("aud".into(), access_token_audience(&shared.issuer, scope));
    at.insert("client_id".into(), json!(client.client_id));
    at.insert("iat".into(), json!(now));
    at.insert(
        "exp".into(),
        json!(now.saturating_add(issue.lifetimes.access)),
    );
    at.insert("jti".into(), json!(jti));
    if !scope.is_empty() {
        at.insert("scope".into(), json!(scope.join(" ")));
    }
    match user {
        Some(u) => {
            at.insert("sub".into(), json!(subject_for(&u.user.username)));
            at.insert("sid".into(), json!(u.sid));
            at.insert("auth_time".into(), json!(u.auth_time));
        }
        None => {
            at.insert("sub".into(), json!(client.client_id));
        }
    }
    let access_token = issue.key.sign_jwt("at+jwt", &Value::Object(at))?;

    let mut response = Map::new();
    response.insert("token_type".into(), json!("Bearer"));
    response.insert("expires_in".into(), json!(issue.lifetimes.access));
    if !scope.is_empty() {
        response.insert("scope".into(), json!(scope.join(" ")));
    }
    if let Some(refresh_token) = refresh_token {
        response.insert("refresh_token".into(), json!(refresh_token));
    }
    if let Some(u) = user
        && scope.iter().any(|s| s == "openid")
    {
        let id_token = id_token(shared, issue, client, u, &access_token, now)?;
        response.insert("id_token".into(), json!(id_token));
    }
    response.insert("access_token".into(), json!(access_token));
    Ok(Value::Object(response))
}

/// Builds and signs an ID token, applying the injected fault if any.
fn id_token(
    shared: &Shared,
    issue: &Issue,
    client: &DevClient,
    grant: &UserGrant,
    access_token: &str,
    now: i64,
) -> Result<String, CryptoError> {
    let (mut iss, tid) = shared.issuer_of(Some(&grant.user.username));
    let mut aud = client.client_id.clone();
    let mut iat = now;
    let mut exp = now.saturating_add(issue.lifetimes.id);
    let mut auth_time = grant.auth_time;
    let mut nonce = grant.nonce.clone();
    match issue.fault {
        Some(Fault::WrongNonce) => nonce = Some(format!("wrong-{}", random_string(16)?)),
        Some(Fault::WrongAudience) => aud = "someone-else".to_owned(),
        Some(Fault::Expired) => {
            exp = now.saturating_sub(600);
            iat = now.saturating_sub(900);
            auth_time = auth_time.min(iat);
        }
        Some(Fault::WrongIssuer) => iss = "https://wrong-issuer.example".to_owned(),
        Some(Fault::IssuerOfAnotherTenant) => {
            let other = if tid.as_deref() == Some(crate::config::FABRIKAM_TENANT) {
                crate::config::CONTOSO_TENANT
            } else {
                crate::config::FABRIKAM_TENANT
            };
            iss = shared.tenant_issuer(other);
        }
        _ => {}
    }
    let user = &grant.user;
    let mut claims = json!({
        "iss": iss,
        "sub": subject_for(&user.username),
        "aud": aud,
        "exp": exp,
        "iat": iat,
        "auth_time": auth_time,
        "sid": grant.sid,
        "at_hash": at_hash(access_token),
        "name": user.name,
        "email": user.email,
        "email_verified": true,
        "preferred_username": user.username,
    });
    if let (Some(nonce), Some(map)) = (nonce, claims.as_object_mut()) {
        map.insert("nonce".into(), json!(nonce));
    }
    if let (Some(tid), Some(map)) = (tid, claims.as_object_mut()) {
        map.insert("tid".into(), json!(tid));
        map.insert("oid".into(), json!(subject_for(&user.username)));
        map.insert("ver".into(), json!("2.0"));
        map.insert("login_hint".into(), json!(login_hint_for(&user.username)));
    }
    let token = if issue.fault == Some(Fault::UnknownKid) {
        SigningKey::generate()?.sign_jwt("JWT", &claims)?
    } else {
        issue.key.sign_jwt("JWT", &claims)?
    };
    if issue.fault == Some(Fault::TamperedSignature) {
        return tamper(&token).ok_or(CryptoError);
    }
    Ok(token)
}

/// Flips bits in the middle of a compact JWS's signature.
fn tamper(token: &str) -> Option<String> {
    let (signing_input, sig) = token.rsplit_once('.')?;
    let mut sig = crate::crypto::b64_decode(sig)?;
    let middle = sig.len() / 2;
    let byte = sig.get_mut(middle)?;
    *byte ^= 0x5A;
    Some(format!("{signing_input}.{}", b64(&sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_resources() {
        assert_eq!(api_resource("api://orders/read"), Some("api://orders"));
        assert_eq!(api_resource("api://orders/"), None);
        assert_eq!(api_resource("api:///read"), None);
        assert_eq!(api_resource("openid"), None);
        let scope = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            access_token_audience("http://i", &scope(&["openid"])),
            json!("http://i/userinfo")
        );
        assert_eq!(
            access_token_audience("http://i", &scope(&["openid", "api://a/x", "api://a/y"])),
            json!("api://a")
        );
        assert_eq!(
            access_token_audience("http://i", &scope(&["api://a/x", "api://b/y"])),
            json!(["api://a", "api://b"])
        );
    }
}
