//! The sign-out routes: local sign-out, the post-logout callback, and the
//! provider's back-channel and front-channel logout endpoints.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use idweb::{BackChannelError, FrontChannelError, SIGN_OUT_STATE_COOKIE, Settings};

use crate::IdWeb;
use crate::cookies::{self, SetCookie};
use crate::error::{escape, sign_out_error_response, wants_json};
use crate::routes::parse_query;

/// Largest back-channel logout request body accepted.
pub const MAX_LOGOUT_BODY: usize = 16 * 1024;

pub(crate) fn routes<S>(settings: &Settings) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(&settings.sign_out_path, post(local_sign_out))
        .route(&settings.signed_out_callback_path, get(sign_out_callback))
        .route(
            &settings.back_channel_logout_path,
            // The handler enforces the limit itself, to answer 400 like every other bad request.
            post(back_channel).layer(DefaultBodyLimit::disable()),
        )
        .route(&settings.remote_sign_out_path, get(front_channel))
}

/// A back-channel logout request too malformed to hold a token: counted
/// (`idweb_logout_requests_refused_total{reason="malformed_request"}`) and
/// answered 400.
fn malformed(description: &str) -> Response {
    metrics::counter!("idweb_logout_requests_refused_total", "reason" => "malformed_request")
        .increment(1);
    logout_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// A link to the app's home, for idweb's pages.
fn home_link(idweb: &IdWeb) -> String {
    format!("<p><a href=\"{}\">Home</a></p>", escape(&idweb.home_path()))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

/// Whether a state-changing request comes from this site (CSRF defence):
/// `Sec-Fetch-Site: same-origin`, or an `Origin` (else `Referer`) on the
/// public URL's origin. Requests that show none of them are refused.
fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin";
    }
    if let Some(o) = get("origin") {
        return o == origin;
    }
    get("referer").is_some_and(|r| r == origin || r.starts_with(&format!("{origin}/")))
}

async fn local_sign_out(
    Extension(idweb): Extension<IdWeb>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let json = wants_json(&headers);
    let home = idweb.home_path();
    let rp = idweb.relying_party();
    let settings = rp.settings();
    if !same_origin(&headers, &settings.public_origin()) {
        return sign_out_error_response(
            StatusCode::FORBIDDEN,
            json,
            "cross_site_request",
            "sign-out must be requested from this site (Origin or Sec-Fetch-Site check failed)",
            &home,
        );
    }
    let Some(q) = parse_query(q.as_deref()) else {
        return sign_out_error_response(
            StatusCode::BAD_REQUEST,
            json,
            "invalid_request",
            "a parameter appears twice",
            &home,
        );
    };
    // `all`: every session of the user in this app; `local`: this session
    // in this app only (the provider's session stays); absent: this
    // session, then the provider's end-session endpoint when it has one.
    let (everywhere, at_provider) = match q.get("scope").map(String::as_str) {
        None => (false, true),
        Some("all") => (true, true),
        Some("local") => (false, false),
        Some(_) => {
            return sign_out_error_response(
                StatusCode::BAD_REQUEST,
                json,
                "invalid_request",
                "scope must be `all`, `local` or absent",
                &home,
            );
        }
    };
    let secure = settings.secure_cookies();
    let session = match cookies::get(&headers, idweb.session_cookie_name()) {
        Some(v) => match rp.session_from_cookie(v).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "sign-out: store unavailable");
                return sign_out_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json,
                    "store_unavailable",
                    "the sign-out could not be recorded; try again",
                    &home,
                );
            }
        },
        None => None,
    };
    let clear = SetCookie::removal(idweb.session_cookie_name(), idweb.cookie_path(), secure);
    let Some(session) = session else {
        // Already signed out.
        let mut resp = if json {
            axum::Json(serde_json::json!({ "signed_out": true, "sessions_removed": 0 }))
                .into_response()
        } else {
            crate::routes::redirect(&home, StatusCode::SEE_OTHER)
        };
        if let Some(c) = clear {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        return no_store(resp);
    };
    let done = match if at_provider {
        rp.local_sign_out(&session, everywhere).await
    } else {
        rp.app_only_sign_out(&session).await
    } {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "sign-out could not be recorded");
            return sign_out_error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json,
                "store_unavailable",
                "the sign-out could not be recorded; try again",
                &home,
            );
        }
    };
    let mut resp = match (&done.end_session, json) {
        (_, true) => axum::Json(serde_json::json!({
            "signed_out": true,
            "sessions_removed": done.eviction.sessions_removed,
        }))
        .into_response(),
        (None, false) => Html(page(
            "Signed out",
            &format!(
                "<p id=\"signed-out\">You have signed out of this app.</p>{}",
                home_link(&idweb)
            ),
        ))
        .into_response(),
        (Some(end), false) if end.method == idweb::EndSessionMethod::Get => {
            let mut url = end.endpoint.clone();
            for (k, v) in &end.params {
                url.query_pairs_mut().append_pair(k, v.secret());
            }
            crate::routes::redirect(url.as_str(), StatusCode::SEE_OTHER)
        }
        (Some(end), false) => {
            // POST, not GET: the ID token hint must not travel in a URL.
            let fields: String = end
                .params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                        escape(k),
                        escape(v.secret())
                    )
                })
                .collect();
            let nonce = idweb::SessionId::generate().fingerprint();
            let body = page(
                "Signing out",
                &format!(
                    "<form id=\"end-session\" method=\"post\" action=\"{}\">{fields}\
                     <p>You have signed out of this app.</p><button type=\"submit\">Continue signing out at the identity provider</button></form>\
                     <script nonce=\"{nonce}\">document.getElementById('end-session').submit();</script>",
                    escape(end.endpoint.as_str())
                ),
            );
            let mut resp = Html(body).into_response();
            let csp = format!(
                "default-src 'none'; script-src 'nonce-{nonce}'; form-action {} {}; frame-ancestors 'none'",
                end.endpoint.origin().ascii_serialization(),
                settings.public_origin()
            );
            if let Ok(v) = HeaderValue::from_str(&csp) {
                resp.headers_mut()
                    .insert(header::CONTENT_SECURITY_POLICY, v);
            }
            resp
        }
    };
    if let (Some(end), false) = (&done.end_session, json) {
        // Binds the provider's answer (`state`) to this browser.
        let path = settings.app_path(&settings.signed_out_callback_path);
        let state_cookie = SetCookie {
            name: &cookies::host_name(end.state_cookie_name, secure, settings.path_base()),
            value: end.state_cookie_value.secret(),
            path: cookies::host_path(&path, secure, settings.path_base()),
            max_age: Some(600),
            secure,
        };
        if let Some(c) = state_cookie.header() {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    if let Some(c) = clear {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    no_store(resp)
}

async fn sign_out_callback(
    Extension(idweb): Extension<IdWeb>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let rp = idweb.relying_party();
    let secure = rp.settings().secure_cookies();
    let state_cookie = cookies::host_name(SIGN_OUT_STATE_COOKIE, secure, rp.settings().path_base());
    let state = parse_query(q.as_deref()).and_then(|mut q| q.remove("state"));
    let ok = rp.complete_sign_out(cookies::get(&headers, &state_cookie), state.as_deref());
    let (status, body) = if ok {
        (
            StatusCode::OK,
            page(
                "Signed out",
                &format!(
                    "<p id=\"signed-out\">You have signed out.</p>{}",
                    home_link(&idweb)
                ),
            ),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            page(
                "Sign-out response not recognised",
                &format!(
                    "<p>This sign-out response does not belong to this browser (state mismatch or expired). \
                     You are signed out of this app in any case.</p>{}",
                    home_link(&idweb)
                ),
            ),
        )
    };
    let mut resp = (status, Html(body)).into_response();
    let settings = rp.settings();
    if let Some(c) = SetCookie::removal(
        &state_cookie,
        cookies::host_path(
            &settings.app_path(&settings.signed_out_callback_path),
            secure,
            settings.path_base(),
        ),
        secure,
    ) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    no_store(resp)
}

fn logout_error(status: StatusCode, code: &str, description: &str) -> Response {
    no_store(
        (
            status,
            axum::Json(serde_json::json!({ "error": code, "error_description": description })),
        )
            .into_response(),
    )
}

async fn back_channel(
    Extension(idweb): Extension<IdWeb>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_LOGOUT_BODY).await else {
        return malformed("the request body is larger than a logout request can be");
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form {
        return malformed("the body must be application/x-www-form-urlencoded");
    }
    let token = std::str::from_utf8(&body).ok().and_then(logout_token_of);
    let Some(token) = token else {
        return malformed(&idweb::LogoutTokenError::Missing.to_string());
    };
    match idweb.relying_party().back_channel_logout(&token).await {
        Ok(e) => {
            tracing::info!(sessions = e.sessions_removed, "back-channel logout");
            no_store(StatusCode::OK.into_response())
        }
        Err(BackChannelError::Invalid(e)) => match keys_retry_after(&e) {
            // Not a final answer: the provider retries, and then it may pass.
            Some(wait) => {
                tracing::warn!(error = %e, "back-channel logout deferred: provider keys unavailable");
                let mut resp = logout_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the provider's signing keys cannot be checked now; retry later",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(wait)));
                resp
            }
            None => {
                tracing::warn!(error = %e, "back-channel logout refused");
                logout_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "back-channel logout could not be recorded");
            logout_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the sign-out could not be recorded; retry later",
            )
        }
    }
}

/// The `logout_token` of a form body, borrowed when it needs no decoding
/// (a JWT never does); `None` when it is missing or any parameter appears
/// twice (as [`parse_query`] reads forms).
fn logout_token_of(form: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    // As `form_urlencoded::parse`, decoding only what needs it: a part
    // without `+` or `%` is its own decoding (the body is UTF-8 already).
    fn decoded(part: &str) -> Cow<'_, str> {
        if part.contains(['+', '%']) {
            Cow::Owned(
                url::form_urlencoded::parse(format!("k={part}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
            )
        } else {
            Cow::Borrowed(part)
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut token = None;
    for pair in form.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decoded(k);
        if k == "logout_token" {
            token = Some(v);
        }
        if !seen.insert(k) {
            return None;
        }
    }
    token.map(decoded)
}

/// How long to wait when a logout token could not be checked for a
/// transient reason (its key is unknown but the keys may not be refetched
/// yet, or they could not be fetched); `None` when the refusal is final.
fn keys_retry_after(e: &idweb::LogoutTokenError) -> Option<std::time::Duration> {
    match e {
        idweb::LogoutTokenError::Signature(idweb::JwsError::Key(p)) => p.retry_after(),
        _ => None,
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
fn retry_secs(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

async fn front_channel(Extension(idweb): Extension<IdWeb>, RawQuery(q): RawQuery) -> Response {
    let rp = idweb.relying_party();
    let q = parse_query(q.as_deref()).unwrap_or_default();
    let result = rp
        .front_channel_logout(
            q.get("iss").map(String::as_str),
            q.get("sid").map(String::as_str),
        )
        .await;
    let (status, text) = match &result {
        Ok(_) => (StatusCode::OK, "Signed out."),
        Err(FrontChannelError::Store(e)) => {
            tracing::error!(error = %e, "front-channel logout could not be recorded");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The sign-out could not be recorded.",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "front-channel logout refused");
            (StatusCode::BAD_REQUEST, "Bad sign-out request.")
        }
    };
    let mut resp = (status, Html(page(text, ""))).into_response();
    // The provider shows this page in an iframe: only the provider may frame it.
    let issuer_origin = url::Url::parse(rp.provider().issuer())
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "'none'".into());
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'none'; frame-ancestors {issuer_origin}"
    )) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    no_store(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The back-channel route reads a form's `logout_token` as the
        /// other routes read parameters: the same value, and nothing when a
        /// parameter repeats.
        #[test]
        fn the_logout_token_is_read_as_parse_query_reads_it(
            form in "((logout_token|a|b|%6Cogout_token|a%3D)(=[a-z.%+2=]{0,6})?&{0,2}){0,4}",
        ) {
            let want = parse_query(Some(&form)).and_then(|mut q| q.remove("logout_token"));
            proptest::prop_assert_eq!(logout_token_of(&form).map(|t| t.into_owned()), want);
        }
    }

    #[test]
    fn a_plain_token_is_borrowed() {
        let form = "logout_token=eyJ.eyJ.sig";
        assert!(matches!(
            logout_token_of(form),
            Some(std::borrow::Cow::Borrowed("eyJ.eyJ.sig"))
        ));
        assert_eq!(logout_token_of("logout_token=a&logout_token=a"), None);
        assert_eq!(logout_token_of("x=1"), None);
    }
}
