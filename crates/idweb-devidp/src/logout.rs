//! Logout: the end-session endpoint (OpenID Connect RP-Initiated Logout
//! 1.0), the notifications sent when an IdP session ends (Back-Channel Logout
//! 1.0 and Front-Channel Logout 1.0), and the development-only endpoint that
//! ends every IdP session of a user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use url::Url;

use crate::config::{DevClient, DevUser, LogoutChannel, LogoutDelivery, subject_for};
use crate::crypto::{CryptoError, SigningKey, random_string, verify_jwt};
use crate::html::{self, LogoutFrame};
use crate::params::Params;
use crate::server::{SESSION_COOKIE, is_form, redirect, session_cookie, url_with_query};
use crate::state::{IdpSession, Shared};

/// The `events` member that makes a JWT a logout token.
pub(crate) const BACKCHANNEL_LOGOUT_EVENT: &str =
    "http://schemas.openid.net/event/backchannel-logout";
/// The header `typ` of logout tokens (explicit typing).
pub(crate) const LOGOUT_TOKEN_TYP: &str = "logout+jwt";
/// Lifetime of logout tokens (`exp - iat`), in seconds.
pub(crate) const LOGOUT_TOKEN_LIFETIME: i64 = 120;
/// Timeout of each back-channel logout request.
pub(crate) const BACKCHANNEL_TIMEOUT: Duration = Duration::from_secs(5);

type AppState = AxumState<Arc<Shared>>;

// ---------------------------------------------------------------------------
// Logout tokens

/// The claims of a logout token for `client_id`, with a fresh `jti`.
/// `sub` and/or `sid` identify what ended; `nonce` is never present.
fn logout_token_claims(
    issuer: &str,
    client_id: &str,
    sub: Option<&str>,
    sid: Option<&str>,
    now: i64,
) -> Result<Value, CryptoError> {
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(issuer));
    claims.insert("aud".into(), json!(client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert(
        "exp".into(),
        json!(now.saturating_add(LOGOUT_TOKEN_LIFETIME)),
    );
    claims.insert("jti".into(), json!(random_string(16)?));
    claims.insert("events".into(), json!({ BACKCHANNEL_LOGOUT_EVENT: {} }));
    if let Some(sub) = sub {
        claims.insert("sub".into(), json!(sub));
    }
    if let Some(sid) = sid {
        claims.insert("sid".into(), json!(sid));
    }
    Ok(Value::Object(claims))
}

/// Builds and signs a logout token with `key`.
pub(crate) fn logout_token(
    key: &SigningKey,
    issuer: &str,
    client_id: &str,
    sub: Option<&str>,
    sid: Option<&str>,
    now: i64,
) -> Result<String, CryptoError> {
    let claims = logout_token_claims(issuer, client_id, sub, sid, now)?;
    key.sign_jwt(LOGOUT_TOKEN_TYP, &claims)
}

// ---------------------------------------------------------------------------
// Notifications

/// A logout notification to make for an ended IdP session.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    client_id: String,
    channel: LogoutChannel,
    /// The back-channel URI, or the iframe `src`.
    uri: String,
    sid: Option<String>,
    sub: String,
    /// For a usable front-channel URI, its origin.
    origin: Option<String>,
    /// Why the registered URI cannot be used.
    problem: Option<String>,
}

/// An absolute `http`/`https` URL without a fragment.
fn usable_url(uri: &str) -> Option<Url> {
    Url::parse(uri)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.fragment().is_none())
}

/// The notifications for the clients that signed in during `session`, in
/// client order, back channel before front channel for each client.
/// Clients no longer registered are skipped.
///
/// With the Entra profile there is no back channel, and the front channel
/// carries `sid` only.
pub(crate) fn plan(
    shared: &Shared,
    clients: &HashMap<String, DevClient>,
    session: &IdpSession,
) -> Vec<Notice> {
    let entra = shared.entra.is_some();
    let issuer = (!entra).then_some(shared.issuer.as_str());
    let sub = subject_for(&session.username);
    let mut notices = Vec::new();
    for client in session.clients.iter().filter_map(|id| clients.get(id)) {
        if let Some(uri) = client.backchannel_logout_uri.as_ref().filter(|_| !entra) {
            let problem = usable_url(uri).is_none().then(|| {
                "The backchannel_logout_uri is not an absolute http(s) URI without a fragment; nothing was sent.".to_owned()
            });
            notices.push(Notice {
                client_id: client.client_id.clone(),
                channel: LogoutChannel::BackChannel,
                uri: uri.clone(),
                sid: client
                    .backchannel_logout_session_required
                    .then(|| session.sid.clone()),
                sub: sub.clone(),
                origin: None,
                problem,
            });
        }
        if let Some(uri) = &client.frontchannel_logout_uri {
            let sid = client
                .frontchannel_logout_session_required
                .then(|| session.sid.clone());
            notices.push(front_channel_notice(issuer, client, uri, sid, &sub));
        }
    }
    notices
}

fn front_channel_notice(
    issuer: Option<&str>,
    client: &DevClient,
    uri: &str,
    sid: Option<String>,
    sub: &str,
) -> Notice {
    let mut notice = Notice {
        client_id: client.client_id.clone(),
        channel: LogoutChannel::FrontChannel,
        uri: uri.to_owned(),
        sid: sid.clone(),
        sub: sub.to_owned(),
        origin: None,
        problem: None,
    };
    let Some(mut url) = usable_url(uri) else {
        notice.problem = Some(
            "The frontchannel_logout_uri is not an absolute http(s) URI without a fragment; no iframe was rendered.".to_owned(),
        );
        return notice;
    };
    let origin = url.origin();
    let same_origin = client
        .redirect_uris
        .iter()
        .filter_map(|r| Url::parse(r).ok())
        .any(|r| r.origin() == origin);
    if !same_origin {
        notice.problem = Some(
            "The frontchannel_logout_uri does not have the scheme, host and port of a registered redirect URI; no iframe was rendered.".to_owned(),
        );
        return notice;
    }
    if let Some(sid) = &sid {
        let mut query = url.query_pairs_mut();
        if let Some(issuer) = issuer {
            query.append_pair("iss", issuer);
        }
        query.append_pair("sid", sid);
    }
    notice.uri = url.to_string();
    notice.origin = Some(origin.ascii_serialization());
    notice
}

/// Makes the notifications: POSTs a logout token to each back-channel URI
/// (all at once, each with a 5-second timeout) and waits for the answers;
/// front-channel notices are recorded as rendered when `browser` (the
/// caller's page renders the iframes), else as skipped. Records and returns
/// the deliveries in the order of `notices`.
pub(crate) async fn deliver(
    shared: &Shared,
    notices: &[Notice],
    browser: bool,
) -> Vec<LogoutDelivery> {
    let now = shared.now();
    let key = shared.lock().current_key();
    let mut pending = Vec::with_capacity(notices.len());
    for notice in notices {
        let outcome = match (notice.channel, &notice.problem) {
            (_, Some(problem)) => Outcome::Done(None, Some(problem.clone())),
            (LogoutChannel::FrontChannel, None) if browser => Outcome::Done(None, None),
            (LogoutChannel::FrontChannel, None) => Outcome::Done(
                None,
                Some(
                    "Skipped: front-channel logout needs the user's browser, and none takes part."
                        .to_owned(),
                ),
            ),
            (LogoutChannel::BackChannel, None) => {
                let token = key.as_deref().ok_or(CryptoError).and_then(|key| {
                    logout_token(
                        key,
                        &shared.issuer,
                        &notice.client_id,
                        Some(&notice.sub),
                        notice.sid.as_deref(),
                        now,
                    )
                });
                match token {
                    Ok(token) => Outcome::Sending(tokio::spawn(post_logout_token(
                        shared.http.clone(),
                        notice.uri.clone(),
                        token,
                    ))),
                    Err(_) => Outcome::Done(
                        None,
                        Some("The logout token could not be signed.".to_owned()),
                    ),
                }
            }
        };
        pending.push(outcome);
    }
    let mut deliveries = Vec::with_capacity(notices.len());
    for (notice, outcome) in notices.iter().zip(pending) {
        let (status, error) = match outcome {
            Outcome::Done(status, error) => (status, error),
            Outcome::Sending(task) => match task.await {
                Ok(Ok(status)) => (Some(status), None),
                Ok(Err(error)) => (None, Some(error)),
                Err(_) => (None, Some("The delivery task failed.".to_owned())),
            },
        };
        match (notice.channel, status, &error) {
            (LogoutChannel::BackChannel, Some(status), _) => {
                tracing::debug!(client_id = %notice.client_id, uri = %notice.uri, status, "sent a back-channel logout token");
            }
            (_, _, Some(error)) => {
                tracing::warn!(client_id = %notice.client_id, uri = %notice.uri, %error, "logout notification not delivered");
            }
            _ => {}
        }
        deliveries.push(LogoutDelivery {
            client_id: notice.client_id.clone(),
            channel: notice.channel,
            uri: notice.uri.clone(),
            sid: notice.sid.clone(),
            sub: notice.sub.clone(),
            status,
            error,
        });
    }
    shared.lock().record_deliveries(&deliveries);
    deliveries
}

/// [`deliver`] in a task of its own, so that the notifications are made
/// (and recorded) even if the caller's request is cancelled.
pub(crate) async fn deliver_detached(
    shared: &Arc<Shared>,
    notices: Vec<Notice>,
    browser: bool,
) -> Vec<LogoutDelivery> {
    if notices.is_empty() {
        return Vec::new();
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move { deliver(&shared, &notices, browser).await })
        .await
        .unwrap_or_default()
}

enum Outcome {
    Done(Option<u16>, Option<String>),
    Sending(tokio::task::JoinHandle<Result<u16, String>>),
}

/// POSTs `logout_token=<token>` (form-encoded) to `uri` without following
/// redirects; returns the answer's HTTP status.
async fn post_logout_token(
    http: reqwest::Client,
    uri: String,
    token: String,
) -> Result<u16, String> {
    let response = http
        .post(&uri)
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .map_err(|error| describe(&error))?;
    Ok(response.status().as_u16())
}

/// A request error with its causes.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!(
            "The request timed out after {} seconds.",
            BACKCHANNEL_TIMEOUT.as_secs()
        );
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Ends every IdP session of `username` and sends the back-channel
/// notifications; front-channel ones are rendered by the caller's page when
/// `browser`, else skipped. Returns how many sessions ended, the
/// notifications and their deliveries (in the same order).
pub(crate) async fn end_all_sessions(
    shared: &Arc<Shared>,
    username: &str,
    browser: bool,
) -> (usize, Vec<Notice>, Vec<LogoutDelivery>) {
    let (sessions, notices) = take_sessions(shared, username);
    if sessions > 0 {
        tracing::debug!(username, sessions, "ended all IdP sessions of a user");
    }
    let deliveries = deliver_detached(shared, notices.clone(), browser).await;
    (sessions, notices, deliveries)
}

/// The iframes a page renders for the front-channel notices delivered.
fn frames_of(notices: &[Notice], deliveries: &[LogoutDelivery]) -> Vec<LogoutFrame> {
    notices
        .iter()
        .zip(deliveries)
        .filter_map(
            |(notice, delivery)| match (notice.channel, &notice.origin, &delivery.error) {
                (LogoutChannel::FrontChannel, Some(origin), None) => Some(LogoutFrame {
                    client_id: notice.client_id.clone(),
                    src: notice.uri.clone(),
                    origin: origin.clone(),
                }),
                _ => None,
            },
        )
        .collect()
}

/// Removes every IdP session of `username`; returns how many there were and
/// the notifications to make.
fn take_sessions(shared: &Shared, username: &str) -> (usize, Vec<Notice>) {
    let mut st = shared.lock();
    let ids: Vec<String> = st
        .sessions
        .iter()
        .filter(|(_, s)| s.username == username)
        .map(|(id, _)| id.clone())
        .collect();
    let mut ended: Vec<IdpSession> = ids.iter().filter_map(|id| st.sessions.remove(id)).collect();
    ended.sort_by(|a, b| a.auth_time.cmp(&b.auth_time).then(a.sid.cmp(&b.sid)));
    let notices: Vec<Notice> = ended
        .iter()
        .flat_map(|s| plan(shared, &st.clients, s))
        .collect();
    (ended.len(), notices)
}

// ---------------------------------------------------------------------------
// End-session endpoint (RP-Initiated Logout)

pub(crate) async fn logout_get(
    AxumState(shared): AppState,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    logout(&shared, &headers, &params, false, StatusCode::FOUND).await
}

pub(crate) async fn logout_post(
    AxumState(shared): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let params = Params::parse(&body);
    logout(&shared, &headers, &params, true, StatusCode::SEE_OTHER).await
}

/// What a valid `id_token_hint` says.
#[derive(Debug)]
struct Hint {
    client_id: String,
    sub: String,
    sid: Option<String>,
}

/// Validates an `id_token_hint`: an ID token signed by one of the published
/// keys (including retired ones still published) and issued by this
/// provider. Expiry is not checked.
fn parse_hint(shared: &Shared, token: &str) -> Option<Hint> {
    let keys = shared.lock().keys.clone();
    let jwt = verify_jwt(token, keys.iter().map(|k| k.as_ref()))?;
    if !matches!(jwt.typ.as_deref(), None | Some("JWT")) {
        return None;
    }
    let claims = jwt.claims;
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if !str_claim("iss").is_some_and(|iss| shared.is_own_issuer(iss))
        || claims.contains_key("events")
    {
        return None;
    }
    let client_id = match claims.get("aud")? {
        Value::String(aud) => aud.clone(),
        Value::Array(auds) => match auds.as_slice() {
            [one] => one.as_str()?.to_owned(),
            _ => {
                let azp = str_claim("azp")?;
                auds.iter().any(|a| a.as_str() == Some(azp)).then_some(())?;
                azp.to_owned()
            }
        },
        _ => return None,
    };
    Some(Hint {
        client_id,
        sub: str_claim("sub")?.to_owned(),
        sid: str_claim("sid").map(str::to_owned),
    })
}

/// A validated logout request whose IdP session (if any) has been ended.
#[derive(Debug)]
struct Ended {
    /// Where to send the browser afterwards (with `state`).
    target: Option<Url>,
    /// The session ended, if there was one.
    session: Option<IdpSession>,
    /// The notifications to make for it.
    notices: Vec<Notice>,
}

async fn logout(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    params: &Params,
    is_post: bool,
    redirect_status: StatusCode,
) -> Response {
    let cookie = session_cookie(headers);
    let Ended {
        target,
        session,
        notices,
    } = match end_session(shared, cookie.as_deref(), params, is_post) {
        Ok(ended) => ended,
        Err(Refusal::Invalid(message)) => {
            return html::error_page(StatusCode::BAD_REQUEST, &message);
        }
        Err(Refusal::Confirm(user)) => return html::logout_confirm_page(user.as_ref(), params),
    };

    let mut frames = Vec::new();
    let mut deliveries = Vec::new();
    if let Some(session) = &session {
        tracing::debug!(username = %session.username, clients = session.clients.len(), "ended an IdP session");
        deliveries = deliver_detached(shared, notices.clone(), true).await;
        frames = frames_of(&notices, &deliveries);
    }

    let mut response = if !frames.is_empty() {
        html::logout_frames_page(&frames, &deliveries, target.as_ref().map(Url::as_str))
    } else if let Some(target) = target {
        redirect(target.as_str(), &[], redirect_status)
    } else {
        html::signed_out_page(&deliveries)
    };
    // Cleared even when the request carried no cookie: a cross-site POST
    // from a relying party does not carry this SameSite=Lax cookie, and the
    // session was then found through the hint.
    let expired = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Why [`end_session`] did nothing.
#[derive(Debug)]
enum Refusal {
    /// The request is invalid: show this message.
    Invalid(String),
    /// The End-User (this one, if known) must confirm first.
    Confirm(Option<DevUser>),
}

/// Validates a logout request and ends the IdP session it concerns. Changes
/// nothing when the request is invalid or needs the user's confirmation.
fn end_session(
    shared: &Shared,
    cookie: Option<&str>,
    params: &Params,
    is_post: bool,
) -> Result<Ended, Refusal> {
    let bad = |message: &str| Err(Refusal::Invalid(message.to_owned()));
    if let Some(name) = params.duplicate() {
        return bad(&format!("The {name} parameter is repeated."));
    }
    let hint = match params.get("id_token_hint") {
        None => None,
        Some(token) => match parse_hint(shared, token) {
            Some(hint) => Some(hint),
            None => {
                return bad(
                    "The id_token_hint is invalid: it is not an ID token issued by this provider.",
                );
            }
        },
    };
    let confirmed = is_post && params.get("confirm") == Some("yes");

    let mut st = shared.lock();
    // The client, from id_token_hint and/or client_id.
    let client_id = match (params.get("client_id"), &hint) {
        (Some(id), Some(hint)) if id != hint.client_id => {
            return bad("The client_id does not match the id_token_hint.");
        }
        (Some(id), _) if !st.clients.contains_key(id) => {
            return bad("The client_id is not registered.");
        }
        (Some(id), _) => Some(id.to_owned()),
        (None, Some(hint)) => Some(hint.client_id.clone()),
        (None, None) => None,
    };
    let target = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let Some(client) = client_id.as_deref().and_then(|id| st.clients.get(id)) else {
                return bad(
                    "A post_logout_redirect_uri needs an id_token_hint or client_id of a registered client.",
                );
            };
            if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
                return bad("The post_logout_redirect_uri is not registered for this client.");
            }
            Some(uri.to_owned())
        }
    };
    let target = match target {
        None => None,
        Some(uri) => {
            let state: Vec<(&str, &str)> = params
                .get("state")
                .map(|s| ("state", s))
                .into_iter()
                .collect();
            match url_with_query(&uri, &state) {
                Some(url) => Some(url),
                None => return bad("The post_logout_redirect_uri is not a valid URL."),
            }
        }
    };

    // The IdP session to end: the browser's, else the one the hint names.
    let by_cookie = cookie
        .filter(|id| st.sessions.contains_key(*id))
        .map(str::to_owned);
    let session_key = by_cookie.or_else(|| {
        let hint = hint.as_ref()?;
        let sid = hint.sid.as_deref()?;
        st.sessions
            .iter()
            .find(|(_, s)| s.sid == sid && subject_for(&s.username) == hint.sub)
            .map(|(id, _)| id.clone())
    });
    if let Some(session) = session_key.as_deref().and_then(|id| st.sessions.get(id)) {
        // The End-User must be asked unless the hint names this very session.
        let hint_matches = hint.as_ref().is_some_and(|h| {
            h.sid.as_deref() == Some(session.sid.as_str())
                && h.sub == subject_for(&session.username)
        });
        let logout_hint_matches = params.get("logout_hint").is_none_or(|h| {
            h == session.username
                || h == subject_for(&session.username)
                || h == crate::config::login_hint_for(&session.username)
        });
        if !(confirmed || hint_matches && logout_hint_matches) {
            let user = st.user(&session.username).cloned();
            return Err(Refusal::Confirm(user));
        }
    }
    let ended = session_key.and_then(|id| st.sessions.remove(&id));
    let notices = ended
        .as_ref()
        .map(|s| plan(shared, &st.clients, s))
        .unwrap_or_default();
    Ok(Ended {
        target,
        session: ended,
        notices,
    })
}

// ---------------------------------------------------------------------------
// Development-only: end every IdP session of a user

pub(crate) async fn end_sessions_form(AxumState(shared): AppState) -> Response {
    let st = shared.lock();
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
    html::end_sessions_form_page(&users)
}

pub(crate) async fn end_sessions(
    AxumState(shared): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let params = Params::parse(&body);
    if params.count("username") != 1 {
        return html::error_page(StatusCode::BAD_REQUEST, "Name exactly one username.");
    }
    let username = params.get("username").unwrap_or_default().to_owned();
    if shared.lock().user(&username).is_none() {
        return html::error_page(StatusCode::BAD_REQUEST, "Unknown user.");
    }
    // This page is the browser that front-channel logout needs: it loads
    // their iframes (idweb's front-channel endpoint needs no cookie).
    let (sessions, notices, deliveries) = end_all_sessions(&shared, &username, true).await;
    let frames = frames_of(&notices, &deliveries);
    html::end_sessions_result_page(&username, sessions, &deliveries, &frames)
}
