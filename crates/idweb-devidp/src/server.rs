//! HTTP endpoints.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use url::Url;

use tracing::Instrument as _;

use crate::config::{DevClient, subject_for};
use crate::html;
use crate::logout;
use crate::params::{Params, is_pkce_value, is_scope_token};
use crate::state::{IdpSession, Shared};
use crate::tokens;

/// Largest accepted request body.
const BODY_LIMIT: usize = 64 * 1024;
/// Name of the IdP browser session cookie.
pub(crate) const SESSION_COOKIE: &str = "devidp_session";

/// The scopes the provider knows besides `api://NAME/...` scopes.
pub(crate) const KNOWN_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Builds the router for all endpoints.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/style.css", get(|| async { html::stylesheet() }))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize_get).post(authorize_post))
        .route("/authorize/login", post(authorize_login))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/userinfo", get(userinfo).post(userinfo))
        .route("/logout", get(logout::logout_get).post(logout::logout_post))
        .route(
            "/admin/end-sessions",
            get(logout::end_sessions_form).post(logout::end_sessions),
        )
        // The Entra-like profile's per-tenant paths (404 without the profile).
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(entra_discovery),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(entra_authorize_get).post(entra_authorize_post),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
        .route(
            "/{tenant}/oauth2/v2.0/logout",
            get(entra_logout_get).post(entra_logout_post),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            around_request,
        ))
        .with_state(shared)
}

/// Around every request: a `devidp` span (log lines say who wrote them),
/// the navigation links for the pages rendered, and, afterwards, a note
/// that the state may have changed (for the state file).
async fn around_request(
    AxumState(shared): AppState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let links = Arc::new(shared.nav_links.clone());
    let response = html::NAV_LINKS
        .scope(links, next.run(request))
        .instrument(tracing::info_span!("devidp"))
        .await;
    shared.changed();
    response
}

/// `GET /`: the provider's start page.
async fn index(AxumState(shared): AppState) -> Response {
    let st = shared.lock();
    let mut clients: Vec<html::ClientInfo> = st
        .clients
        .values()
        .map(|c| html::ClientInfo {
            client_id: c.client_id.clone(),
            home: c
                .redirect_uris
                .first()
                .and_then(|u| Url::parse(u).ok())
                .map(|u| u.origin().ascii_serialization()),
            back_channel: c.backchannel_logout_uri.is_some(),
            front_channel: c.frontchannel_logout_uri.is_some(),
        })
        .collect();
    clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let users: Vec<_> = st
        .users
        .iter()
        .map(|u| {
            let live = st
                .sessions
                .values()
                .filter(|s| s.username == u.username)
                .count();
            (u.clone(), live)
        })
        .collect();
    drop(st);
    html::index_page(&shared.issuer, &clients, &users)
}

type AppState = AxumState<Arc<Shared>>;

// ---------------------------------------------------------------------------
// Discovery and JWKS

async fn discovery(AxumState(shared): AppState) -> Response {
    let issuer = &shared.issuer;
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": KNOWN_SCOPES,
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "at_hash",
            "name", "email", "email_verified", "preferred_username"
        ],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "frontchannel_logout_session_supported": true,
        "authorization_response_iss_parameter_supported": true,
    });
    public_json(doc)
}

/// The Entra-like discovery document of `tenant` (`common`,
/// `organizations`, `consumers` or a tenant id).
async fn entra_discovery(AxumState(shared): AppState, Path(tenant): Path<String>) -> Response {
    if !entra_path(&shared, &tenant) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let base = &shared.issuer;
    let issuer = match tenant.as_str() {
        "common" | "organizations" => format!("{base}/{{tenantid}}/v2.0"),
        "consumers" => shared.tenant_issuer(CONSUMER_TENANT),
        tid => shared.tenant_issuer(tid),
    };
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
            "name", "tid", "ver", "at_hash", "c_hash", "email", "login_hint", "sid"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "frontchannel_logout_supported": true,
        "http_logout_supported": true,
        "request_uri_parameter_supported": false,
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
    });
    public_json(doc)
}

/// The tenant of personal Microsoft accounts.
const CONSUMER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// `common`, `organizations`, `consumers`, or a GUID.
fn is_entra_tenant(tenant: &str) -> bool {
    matches!(tenant, "common" | "organizations" | "consumers")
        || (tenant.len() == 36
            && tenant.bytes().enumerate().all(|(i, b)| {
                if [8, 13, 18, 23].contains(&i) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            }))
}

/// Whether a request on the Entra-like paths may go on (else 404).
fn entra_path(shared: &Shared, tenant: &str) -> bool {
    shared.entra.is_some() && is_entra_tenant(tenant)
}

async fn entra_authorize_get(
    state: AppState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: RawQuery,
) -> Response {
    if !entra_path(&state.0, &tenant) {
        return StatusCode::NOT_FOUND.into_response();
    }
    authorize_get(state, headers, query).await
}

async fn entra_authorize_post(
    state: AppState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !entra_path(&state.0, &tenant) {
        return StatusCode::NOT_FOUND.into_response();
    }
    authorize_post(state, headers, body).await
}

async fn entra_token(
    state: AppState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !entra_path(&state.0, &tenant) {
        return StatusCode::NOT_FOUND.into_response();
    }
    token(state, headers, body).await
}

async fn entra_logout_get(
    state: AppState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: RawQuery,
) -> Response {
    if !entra_path(&state.0, &tenant) {
        return StatusCode::NOT_FOUND.into_response();
    }
    logout::logout_get(state, headers, query).await
}

async fn entra_logout_post(
    state: AppState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !entra_path(&state.0, &tenant) {
        return StatusCode::NOT_FOUND.into_response();
    }
    logout::logout_post(state, headers, body).await
}

async fn jwks(AxumState(shared): AppState) -> Response {
    let keys: Vec<Value> = shared.lock().keys.iter().map(|k| k.jwk()).collect();
    public_json(json!({ "keys": keys }))
}

/// A JSON document that browsers on any origin may read.
fn public_json(value: Value) -> Response {
    let mut response = axum::Json(value).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

// ---------------------------------------------------------------------------
// Authorization endpoint

/// A validated authorization request.
#[derive(Debug)]
struct AuthzRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scope: Vec<String>,
    code_challenge: String,
    login_hint: Option<String>,
    prompt: Vec<String>,
    max_age: Option<i64>,
    /// The `claims` request (OpenID Connect Core §5.5), when sent.
    claims: Option<Value>,
}

/// Why an authorization request failed.
#[derive(Debug)]
enum AuthzFailure {
    /// The client or redirect URI cannot be trusted: show a page.
    Page(StatusCode, String),
    /// Tell the client through its (validated) redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

fn validate_authorize(
    clients: &std::collections::HashMap<String, DevClient>,
    params: &Params,
) -> Result<AuthzRequest, AuthzFailure> {
    let page = |msg: &str| Err(AuthzFailure::Page(StatusCode::BAD_REQUEST, msg.to_owned()));
    if params.count("client_id") > 1 {
        return page("The client_id parameter is repeated.");
    }
    let Some(client_id) = params.get("client_id") else {
        return page("The request has no client_id.");
    };
    let Some(client) = clients.get(client_id) else {
        return page("The client_id is not registered.");
    };
    if params.count("redirect_uri") > 1 {
        return page("The redirect_uri parameter is repeated.");
    }
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return page("The request has no redirect_uri.");
    };
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return page("The redirect_uri is not registered for this client.");
    }
    let state = params.get("state").map(str::to_owned);
    let fail = |error: &'static str, description: &str| {
        Err(AuthzFailure::Redirect {
            redirect_uri: redirect_uri.to_owned(),
            state: state.clone(),
            error,
            description: description.to_owned(),
        })
    };

    if let Some(name) = params.duplicate() {
        return fail(
            "invalid_request",
            &format!("The {name} parameter is repeated."),
        );
    }
    if params.get("request").is_some() {
        return fail(
            "request_not_supported",
            "Request objects are not supported.",
        );
    }
    if params.get("request_uri").is_some() {
        return fail(
            "request_uri_not_supported",
            "The request_uri parameter is not supported.",
        );
    }
    match params.get("response_type") {
        None => return fail("invalid_request", "The response_type parameter is missing."),
        Some("code") => {}
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "Only the response_type code is supported.",
            );
        }
    }
    if let Some(mode) = params.get("response_mode")
        && mode != "query"
    {
        return fail(
            "invalid_request",
            "Only the response_mode query is supported.",
        );
    }
    let Some(scope) = params.get("scope") else {
        return fail("invalid_request", "The scope parameter is missing.");
    };
    let scope = match parse_scope(scope) {
        Ok(s) => s,
        Err(msg) => return fail("invalid_scope", msg),
    };
    if !scope.iter().any(|s| s == "openid") {
        return fail("invalid_scope", "The scope must contain openid.");
    }
    if let Some(unknown) = scope
        .iter()
        .find(|s| !KNOWN_SCOPES.contains(&s.as_str()) && tokens::api_resource(s).is_none())
    {
        return fail("invalid_scope", &format!("The scope {unknown} is unknown."));
    }
    let Some(code_challenge) = params.get("code_challenge") else {
        return fail(
            "invalid_request",
            "PKCE is required: the code_challenge parameter is missing.",
        );
    };
    if params.get("code_challenge_method") != Some("S256") {
        return fail(
            "invalid_request",
            "PKCE code_challenge_method S256 is required; other transform algorithms are not supported.",
        );
    }
    if !is_pkce_value(code_challenge) {
        return fail("invalid_request", "The code_challenge is malformed.");
    }
    let prompt: Vec<String> = params
        .get("prompt")
        .map(|p| {
            p.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return fail(
            "invalid_request",
            "prompt=none cannot be combined with other prompt values.",
        );
    }
    let claims = match params.get("claims") {
        None => None,
        Some(c) => match serde_json::from_str::<Value>(c) {
            Ok(v) if v.is_object() => Some(v),
            _ => {
                return fail(
                    "invalid_request",
                    "The claims parameter is not a JSON object.",
                );
            }
        },
    };
    let max_age = match params.get("max_age") {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n) => Some(i64::from(n)),
            Err(_) => return fail("invalid_request", "The max_age parameter is invalid."),
        },
    };
    Ok(AuthzRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        state: state.clone(),
        nonce: params.get("nonce").map(str::to_owned),
        scope,
        code_challenge: code_challenge.to_owned(),
        login_hint: params.get("login_hint").map(str::to_owned),
        prompt,
        max_age,
        claims,
    })
}

/// Splits a scope parameter into its tokens (duplicates removed, order kept).
pub(crate) fn parse_scope(scope: &str) -> Result<Vec<String>, &'static str> {
    let mut out: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|s| !s.is_empty()) {
        if !is_scope_token(token) {
            return Err("The scope parameter is malformed.");
        }
        if !out.iter().any(|t| t == token) {
            out.push(token.to_owned());
        }
    }
    if out.is_empty() {
        return Err("The scope parameter is empty.");
    }
    Ok(out)
}

async fn authorize_get(
    AxumState(shared): AppState,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let mut replaced = None;
    let response = authorize(
        &shared,
        &headers,
        &params,
        None,
        StatusCode::FOUND,
        &mut replaced,
    );
    finish_authorize(&shared, response, replaced).await
}

async fn authorize_post(AxumState(shared): AppState, headers: HeaderMap, body: Bytes) -> Response {
    if !is_form(&headers) {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let params = Params::parse(&body);
    let mut replaced = None;
    let response = authorize(
        &shared,
        &headers,
        &params,
        None,
        StatusCode::SEE_OTHER,
        &mut replaced,
    );
    finish_authorize(&shared, response, replaced).await
}

async fn authorize_login(AxumState(shared): AppState, headers: HeaderMap, body: Bytes) -> Response {
    if !is_form(&headers) {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let params = Params::parse(&body);
    if params.count("username") != 1 {
        return html::error_page(StatusCode::BAD_REQUEST, "Choose exactly one user.");
    }
    let username = params.get("username").unwrap_or_default().to_owned();
    let params = params.without("username");
    let mut replaced = None;
    let response = authorize(
        &shared,
        &headers,
        &params,
        Some(&username),
        StatusCode::SEE_OTHER,
        &mut replaced,
    );
    finish_authorize(&shared, response, replaced).await
}

/// When a sign-in replaced the browser's IdP session of another user, that
/// session has ended: notify its clients (back channel; the front channel
/// is skipped, the browser being on its way to the new sign-in) before
/// answering.
async fn finish_authorize(
    shared: &Arc<Shared>,
    response: Response,
    replaced: Option<IdpSession>,
) -> Response {
    if let Some(session) = replaced {
        tracing::debug!(username = %session.username, "a sign-in of another user ended the browser's IdP session");
        let notices = logout::plan(shared, &shared.lock().clients, &session);
        logout::deliver_detached(shared, notices, false).await;
    }
    response
}

/// Fresh random values needed while holding the lock.
struct Fresh {
    code: String,
    cookie: String,
    sid: String,
}

impl Fresh {
    fn new() -> Option<Self> {
        Some(Fresh {
            code: crate::crypto::random_string(32).ok()?,
            cookie: crate::crypto::random_string(32).ok()?,
            sid: crate::crypto::random_string(24).ok()?,
        })
    }
}

/// Handles an authorization request; `login_as` is the user chosen on the
/// login form. An IdP session of another user that the sign-in replaces is
/// put in `replaced` (its clients are to be notified).
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    params: &Params,
    login_as: Option<&str>,
    redirect_status: StatusCode,
    replaced: &mut Option<IdpSession>,
) -> Response {
    let issuer = shared.issuer.as_str();
    let now = shared.now();
    let cookie = session_cookie(headers);
    let Some(fresh) = Fresh::new() else {
        return html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal error.");
    };
    let mut st = shared.lock();
    let req = match validate_authorize(&st.clients, params) {
        Ok(req) => req,
        Err(AuthzFailure::Page(status, msg)) => return html::error_page(status, &msg),
        Err(AuthzFailure::Redirect {
            redirect_uri,
            state,
            error,
            description,
        }) => {
            return error_redirect(
                &redirect_uri,
                issuer,
                error,
                &description,
                state.as_deref(),
                redirect_status,
            );
        }
    };
    let error = |error: &str, description: &str| {
        error_redirect(
            &req.redirect_uri,
            issuer,
            error,
            description,
            req.state.as_deref(),
            redirect_status,
        )
    };

    // Who is signed in, and does this request need a new sign-in?
    let (cookie_id, set_cookie) = if let Some(username) = login_as {
        if st.user(username).is_none() {
            return html::error_page(StatusCode::BAD_REQUEST, "Unknown user.");
        }
        sign_in(
            &mut st.sessions,
            cookie.as_deref(),
            username,
            now,
            &fresh,
            replaced,
        )
    } else {
        let hinted = req
            .login_hint
            .as_deref()
            .and_then(|h| st.user(h))
            .map(|u| u.username.clone());
        let force_login = req
            .prompt
            .iter()
            .any(|p| p == "login" || p == "select_account");
        let usable = cookie.as_deref().filter(|id| {
            st.sessions.get(*id).is_some_and(|s| {
                !force_login
                    && req
                        .max_age
                        .is_none_or(|max| now.saturating_sub(s.auth_time) <= max)
                    && hinted.as_ref().is_none_or(|h| *h == s.username)
            })
        });
        if let Some(id) = usable {
            (id.to_owned(), false)
        } else if req.prompt.iter().any(|p| p == "none") {
            return error("login_required", "The user is not signed in.");
        } else if let Some(username) = hinted.filter(|_| st.auto_login) {
            sign_in(
                &mut st.sessions,
                cookie.as_deref(),
                &username,
                now,
                &fresh,
                replaced,
            )
        } else {
            return html::login_page(&req.client_id, &st.users, params);
        }
    };

    let Some(session) = st.sessions.get_mut(&cookie_id) else {
        return html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal error.");
    };
    session.clients.insert(req.client_id.clone());
    let grant = crate::state::CodeGrant {
        client_id: req.client_id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        scope: req.scope.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        username: session.username.clone(),
        sid: session.sid.clone(),
        auth_time: session.auth_time,
        expires_at: now.saturating_add(st.lifetimes.code),
        redeemed: false,
        family: None,
        access_tokens: Vec::new(),
        claims: req.claims.clone(),
    };
    st.purge(now);
    st.codes
        .insert(crate::crypto::token_hash(&fresh.code), grant);
    drop(st);
    tracing::debug!(client_id = %req.client_id, "issued an authorization code");

    let mut pairs = vec![("code", fresh.code.as_str())];
    if let Some(state) = req.state.as_deref() {
        pairs.push(("state", state));
    }
    // Entra does not send RFC 9207's `iss`.
    if shared.entra.is_none() {
        pairs.push(("iss", issuer));
    }
    let mut response = redirect(&req.redirect_uri, &pairs, redirect_status);
    if set_cookie {
        let value = format!("{SESSION_COOKIE}={cookie_id}; Path=/; HttpOnly; SameSite=Lax");
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Signs `username` in: keeps the current session (with a new `auth_time`)
/// when it belongs to the same user, else replaces it with a new one (the
/// replaced session is put in `replaced`). Returns the session cookie value
/// and whether it must be (re)set.
fn sign_in(
    sessions: &mut std::collections::HashMap<String, IdpSession>,
    cookie: Option<&str>,
    username: &str,
    now: i64,
    fresh: &Fresh,
    replaced: &mut Option<IdpSession>,
) -> (String, bool) {
    if let Some(id) = cookie {
        if let Some(session) = sessions.get_mut(id)
            && session.username == username
        {
            session.auth_time = now;
            return (id.to_owned(), false);
        }
        *replaced = sessions.remove(id);
    }
    sessions.insert(
        fresh.cookie.clone(),
        IdpSession {
            sid: fresh.sid.clone(),
            username: username.to_owned(),
            auth_time: now,
            clients: Default::default(),
        },
    );
    tracing::debug!(username, "started an IdP session");
    (fresh.cookie.clone(), true)
}

/// The value of the IdP session cookie, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// `base` with `pairs` added to its query (existing parameters kept), or
/// `None` if `base` is not a valid absolute URL.
pub(crate) fn url_with_query(base: &str, pairs: &[(&str, &str)]) -> Option<Url> {
    let mut url = Url::parse(base).ok()?;
    if !pairs.is_empty() {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
    }
    Some(url)
}

/// Redirects to `base` with `pairs` added to its query.
pub(crate) fn redirect(base: &str, pairs: &[(&str, &str)], status: StatusCode) -> Response {
    let Some(url) = url_with_query(base, pairs) else {
        return html::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The registered redirect URI is not a valid URL.",
        );
    };
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return html::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The registered redirect URI is not a valid URL.",
        );
    };
    let mut response = status.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// An authorization error response (RFC 6749 §4.1.2.1 with RFC 9207 `iss`).
fn error_redirect(
    redirect_uri: &str,
    issuer: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
    status: StatusCode,
) -> Response {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", issuer));
    redirect(redirect_uri, &pairs, status)
}

pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

// ---------------------------------------------------------------------------
// Token endpoint

async fn token(
    AxumState(shared): AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            shared.lock().stats.token_errors += 1;
            return tokens::TokenError::body_rejected(rejection.status()).into_response();
        }
    };
    let worker = Arc::clone(&shared);
    let result =
        tokio::task::spawn_blocking(move || tokens::token_request(&worker, &headers, &body))
            .await
            .unwrap_or_else(|_| Err(tokens::TokenError::server_error()));
    let mut st = shared.lock();
    match &result {
        Ok((tokens::GrantKind::AuthorizationCode, _)) => st.stats.authorization_code += 1,
        Ok((tokens::GrantKind::RefreshToken, _)) => st.stats.refresh_token += 1,
        Ok((tokens::GrantKind::ClientCredentials, _)) => st.stats.client_credentials += 1,
        Err(_) => st.stats.token_errors += 1,
    }
    drop(st);
    match result {
        Ok((_, body)) => no_store(axum::Json(body).into_response()),
        Err(error) => error.into_response(),
    }
}

/// Token revocation (RFC 7009): a refresh token of the authenticated client
/// is revoked with its whole family; unknown tokens also answer 200 (§2.2).
async fn revoke(
    AxumState(shared): AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return tokens::TokenError::body_rejected(StatusCode::PAYLOAD_TOO_LARGE).into_response();
    };
    match tokens::revocation_request(&shared, &headers, &body) {
        Ok(revoked) => {
            if revoked {
                shared.lock().stats.revocations += 1;
            }
            no_store(StatusCode::OK.into_response())
        }
        Err(error) => error.into_response(),
    }
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache`.
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

// ---------------------------------------------------------------------------
// UserInfo endpoint

async fn userinfo(
    AxumState(shared): AppState,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let from_body = if method == Method::POST && is_form(&headers) {
        Params::parse(&body).get("access_token").map(str::to_owned)
    } else {
        None
    };
    let token = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            return bearer_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "More than one access token was sent.",
            );
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"devidp\""),
            );
            return response;
        }
    };
    let invalid =
        |description: &str| bearer_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    let keys = shared.lock().keys.clone();
    let Some(jwt) = crate::crypto::verify_jwt(&token, keys.iter().map(|k| k.as_ref())) else {
        return invalid("The access token is malformed or its signature is invalid.");
    };
    if jwt.typ.as_deref() != Some("at+jwt") {
        return invalid("The token is not an access token.");
    }
    let claims = &jwt.claims;
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if !str_claim("iss").is_some_and(|iss| shared.is_own_issuer(iss)) {
        return invalid("The access token was issued by another issuer.");
    }
    let now = shared.now();
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_none_or(|exp| exp <= now)
    {
        return invalid("The access token has expired.");
    }
    let st = shared.lock();
    if str_claim("jti").is_none_or(|jti| st.revoked_access_tokens.contains_key(jti)) {
        return invalid("The access token has been revoked.");
    }
    if !str_claim("scope").is_some_and(|s| s.split(' ').any(|s| s == "openid")) {
        return bearer_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "The access token lacks the openid scope.",
        );
    }
    let Some(user) = str_claim("sub").and_then(|sub| st.user_by_subject(sub)) else {
        return invalid("The access token does not belong to a user.");
    };
    let body = json!({
        "sub": subject_for(&user.username),
        "name": user.name,
        "email": user.email,
        "email_verified": true,
        "preferred_username": user.username,
    });
    drop(st);
    no_store(axum::Json(body).into_response())
}

/// An RFC 6750 error; `description` must not contain `"` or `\`.
fn bearer_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut challenge =
        format!("Bearer realm=\"devidp\", error=\"{error}\", error_description=\"{description}\"");
    if error == "insufficient_scope" {
        challenge.push_str(", scope=\"openid\"");
    }
    let mut response = (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    no_store(response)
}
