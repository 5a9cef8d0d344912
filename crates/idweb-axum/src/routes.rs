//! The sign-in routes.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::RawQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use idweb::{CallbackParams, Secret, SignInError, SignInOptions, pending_cookie_name};

use crate::IdWeb;
use crate::cookies::{self, SetCookie};
use crate::error::{SignInFailure, error_response, wants_json};

pub(crate) fn routes<S>(idweb: &IdWeb) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let settings = idweb.relying_party().settings();
    Router::new()
        .route(&settings.sign_in_path, get(sign_in))
        .route(&settings.callback_path, get(callback_handler))
        .merge(crate::signout::routes(settings))
        .merge(crate::health::routes(settings))
}

/// Parses a query string; `None` when a parameter appears twice (RFC 6749 §3.1).
pub(crate) fn parse_query(raw: Option<&str>) -> Option<HashMap<String, String>> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if map.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(map)
}

/// `location` with every byte that may not appear raw in a URL
/// percent-encoded: non-ASCII (UTF-8 bytes), controls, space, and the
/// characters `"`, `<`, `>`, `\`, `^`, `{`, `|`, `}` and the backtick. `%`
/// is kept, so an already encoded URL is unchanged.
pub(crate) fn encode_location(location: &str) -> String {
    let mut out = String::with_capacity(location.len());
    for &b in location.as_bytes() {
        if b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(crate) fn redirect(location: &str, status: StatusCode) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&encode_location(location)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn sign_in(
    Extension(idweb): Extension<IdWeb>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let json = wants_json(&headers);
    let home = idweb.home_path();
    let Some(q) = parse_query(q.as_deref()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            json,
            "invalid_request",
            "a parameter appears twice",
            &home,
        );
    };
    let mut options = SignInOptions::default();
    options.return_url = q.get("returnUrl").cloned();
    options.login_hint = q.get("loginHint").cloned();
    options.prompt = q.get("prompt").cloned();
    options.extra_scopes = q
        .get("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(bad) = options.extra_scopes.iter().find(|s| {
        !s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    }) {
        let msg = format!("`{bad}` is not a valid scope");
        return error_response(StatusCode::BAD_REQUEST, json, "invalid_scope", &msg, &home);
    }
    options.claims = match q.get("claims") {
        Some(c) if serde_json::from_str::<serde_json::Value>(c).is_ok_and(|v| v.is_object()) => {
            Some(c.clone())
        }
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                json,
                "invalid_request",
                "claims must be a JSON object",
                &home,
            );
        }
        None => None,
    };
    let rp = idweb.relying_party();
    let request = match rp.begin_sign_in(&options) {
        Ok(r) => r,
        Err(error) => return SignInFailure { error, json, home }.into_response(),
    };
    let mut resp = redirect(request.authorization_url.as_str(), StatusCode::FOUND);
    let secure = rp.settings().secure_cookies();
    let base = rp.settings().path_base();
    // At most MAX_PENDING_SIGN_INS per browser: the oldest go.
    for removal in crate::pending::drop_oldest(&headers, rp, secure, idweb.cookie_path()) {
        resp.headers_mut().append(header::SET_COOKIE, removal);
    }
    // The app's path (not the callback path) so that the next sign-in start sees it.
    let cookie = SetCookie {
        name: &cookies::host_name(&request.cookie_name, secure, base),
        value: request.cookie_value.secret(),
        path: idweb.cookie_path(),
        max_age: Some(request.max_age.as_secs()),
        secure,
    };
    if let Some(v) = cookie.header() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn callback_handler(
    Extension(idweb): Extension<IdWeb>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let json = wants_json(&headers);
    let home = idweb.home_path();
    let rp = idweb.relying_party();
    let settings = rp.settings();
    let Some(mut q) = parse_query(q.as_deref()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            json,
            "invalid_request",
            "a parameter appears twice",
            &home,
        );
    };
    let mut params = CallbackParams::default();
    params.code = q.remove("code").map(Secret::new);
    params.state = q.remove("state");
    params.iss = q.remove("iss");
    params.error = q.remove("error");
    params.error_description = q.remove("error_description");
    let Some(state) = params.state.clone() else {
        return SignInFailure {
            error: SignInError::StateMismatch,
            json,
            home,
        }
        .into_response();
    };
    let secure = settings.secure_cookies();
    let cookie_name =
        cookies::host_name(&pending_cookie_name(&state), secure, settings.path_base());
    let pending = cookies::get(&headers, &cookie_name);
    let mut resp = match rp.complete_sign_in(pending, &params).await {
        Ok(done) => {
            // A new sign-in in this browser replaces its previous session (and its tokens).
            if let Some(old) = cookies::get(&headers, idweb.session_cookie_name())
                .and_then(|v| rp.session_id_from_cookie(v))
                .filter(|old| !old.matches(&done.session.id))
                && let Err(e) = rp.store().remove_session(&old).await
            {
                tracing::warn!(error = %e, "could not remove the previous session of this browser");
            }
            let mut resp = redirect(&done.return_url, StatusCode::SEE_OTHER);
            let value = rp.session_cookie_value(&done.session.id);
            let lifetime = settings.session_lifetime.as_secs();
            let cookie = SetCookie {
                name: idweb.session_cookie_name(),
                value: value.secret(),
                path: idweb.cookie_path(),
                max_age: Some(lifetime),
                secure,
            };
            if let Some(v) = cookie.header() {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(error) => SignInFailure { error, json, home }.into_response(),
    };
    // The pending sign-in is used up whatever the outcome.
    if pending.is_some()
        && let Some(v) = SetCookie::removal(&cookie_name, idweb.cookie_path(), secure)
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
