//! idweb's errors as HTTP responses. Only this crate knows status codes.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idweb::{DownstreamError, IdTokenError, SignInError, StoreError, TokenError};

/// Whether the client asked for JSON rather than a page.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// Escapes text for HTML.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON or HTML error response of the sign-in side with `Cache-Control:
/// no-store`, titled "Sign-in failed" (or "Service unavailable" for a 5xx);
/// the page links to `home`, the app's home path (below the public URL's path).
pub(crate) fn error_response(
    status: StatusCode,
    json: bool,
    code: &str,
    description: &str,
    home: &str,
) -> Response {
    let title = if status.is_server_error() {
        "Service unavailable"
    } else {
        "Sign-in failed"
    };
    titled_error_response(status, json, title, code, description, home)
}

/// A refused or failed sign-out, as [`error_response`] but titled for it.
pub(crate) fn sign_out_error_response(
    status: StatusCode,
    json: bool,
    code: &str,
    description: &str,
    home: &str,
) -> Response {
    let title = if status.is_server_error() {
        "Sign-out not recorded"
    } else {
        "Sign-out refused"
    };
    titled_error_response(status, json, title, code, description, home)
}

/// An error response whose page is titled `title`.
fn titled_error_response(
    status: StatusCode,
    json: bool,
    title: &str,
    code: &str,
    description: &str,
    home: &str,
) -> Response {
    let mut resp = if json {
        (
            status,
            axum::Json(serde_json::json!({ "error": code, "error_description": description })),
        )
            .into_response()
    } else {
        let title = escape(title);
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{}</p><p><code>{}</code></p><p><a href=\"{}\">Home</a></p></body></html>",
            escape(description),
            escape(code),
            escape(home)
        );
        (status, axum::response::Html(body)).into_response()
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A failed sign-in, as an HTTP response.
#[derive(Debug)]
pub struct SignInFailure {
    pub(crate) error: SignInError,
    pub(crate) json: bool,
    /// The app's home path, linked from the error page.
    pub(crate) home: String,
}

impl SignInFailure {
    /// The underlying error.
    pub fn error(&self) -> &SignInError {
        &self.error
    }

    /// The HTTP status and the machine-readable error code of this failure.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match &self.error {
            SignInError::InvalidReturnUrl => (StatusCode::BAD_REQUEST, "invalid_return_url"),
            SignInError::NoPendingSignIn => (StatusCode::BAD_REQUEST, "signin_expired"),
            SignInError::StateMismatch => (StatusCode::BAD_REQUEST, "state_mismatch"),
            SignInError::IssuerMismatch => (StatusCode::BAD_REQUEST, "issuer_mismatch"),
            SignInError::MissingCode => (StatusCode::BAD_REQUEST, "missing_code"),
            SignInError::Provider { .. } => (StatusCode::BAD_REQUEST, "signin_refused"),
            SignInError::TokenRejected { .. } => (StatusCode::BAD_REQUEST, "code_rejected"),
            SignInError::TokenEndpoint(_) => (StatusCode::BAD_GATEWAY, "provider_unreachable"),
            SignInError::IdToken(IdTokenError::Signature(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_id_token_signature")
            }
            SignInError::IdToken(IdTokenError::TenantNotAllowed { .. }) => {
                (StatusCode::FORBIDDEN, "tenant_not_allowed")
            }
            SignInError::IdToken(_) => (StatusCode::BAD_REQUEST, "invalid_id_token"),
            SignInError::Store(StoreError::SignedOut) => {
                (StatusCode::BAD_REQUEST, "signed_out_meanwhile")
            }
            SignInError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            _ => (StatusCode::BAD_REQUEST, "signin_failed"),
        }
    }

    fn description(&self) -> String {
        match &self.error {
            SignInError::Provider { error, description }
            | SignInError::TokenRejected { error, description } => match description {
                Some(d) => format!("{}: {d}", self.error),
                None => format!("{} ({error})", self.error),
            },
            SignInError::IdToken(inner) => format!("{}: {inner}", self.error),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for SignInFailure {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        tracing::warn!(error = %self.error, code, "sign-in failed");
        error_response(status, self.json, code, &self.description(), &self.home)
    }
}

/// Why [`AuthenticatedUser`](crate::AuthenticatedUser) could not be extracted.
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No valid session: browsers are redirected to sign-in, JSON clients get 401.
    SignInRequired {
        /// The sign-in URL, with the current path as return URL.
        sign_in_url: String,
        /// Whether the client asked for JSON.
        json: bool,
    },
    /// The store could not be read: 503.
    StoreUnavailable {
        /// Whether the client asked for JSON.
        json: bool,
        /// The app's home path, linked from the error page.
        home: String,
    },
    /// The idweb layer is not installed: 500.
    MissingLayer,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::SignInRequired {
                sign_in_url,
                json: true,
            } => {
                let mut resp = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({
                        "error": "unauthenticated",
                        "error_description": "sign in first",
                        "sign_in_url": sign_in_url,
                    })),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            AuthRejection::SignInRequired {
                sign_in_url,
                json: false,
            } => {
                let mut resp = StatusCode::FOUND.into_response();
                if let Ok(v) = HeaderValue::from_str(&sign_in_url) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            AuthRejection::StoreUnavailable { json, home } => {
                tracing::error!("session store unavailable");
                let mut resp = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json,
                    "store_unavailable",
                    "the session store is unavailable; try again shortly",
                    &home,
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                resp
            }
            AuthRejection::MissingLayer => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                false,
                "idweb_not_installed",
                "AuthenticatedUser needs the idweb layer: is the idweb layer installed? Call IdWeb::mount(router).",
                "/",
            ),
        }
    }
}

/// A failed token acquisition or downstream call, as an HTTP response.
///
/// - the user must come back through the provider (`UiRequired`, or the
///   session was signed out): browsers are redirected to sign-in asking for
///   the scopes (and claims) needed, then back to the page; JSON clients get
///   `401` with `error = "interaction_required"` and the `sign_in_url`;
/// - the store is down: `503`; the provider or the API unreachable: `502`.
#[derive(Debug)]
pub struct ApiRejection {
    pub(crate) error: DownstreamError,
    pub(crate) return_url: String,
    pub(crate) json: bool,
    /// The sign-in path as the browser sees it (below the public URL's path).
    pub(crate) sign_in_path: String,
    /// The app's home path, linked from error pages.
    pub(crate) home: String,
}

impl ApiRejection {
    /// The underlying error.
    pub fn error(&self) -> &DownstreamError {
        &self.error
    }
}

impl IntoResponse for ApiRejection {
    fn into_response(self) -> Response {
        let (scopes, claims) = match &self.error {
            DownstreamError::Token(TokenError::UiRequired { scopes, claims }) => {
                (scopes.clone(), claims.clone())
            }
            DownstreamError::Token(TokenError::SignedOut) => (Vec::new(), None),
            DownstreamError::Token(TokenError::Store(_)) => {
                tracing::error!(error = %self.error, "token cache unavailable");
                let mut resp = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    self.json,
                    "store_unavailable",
                    "the token cache is unavailable; try again shortly",
                    &self.home,
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return resp;
            }
            DownstreamError::UnknownApi(_) | DownstreamError::InvalidPath(_) => {
                tracing::error!(error = %self.error, "downstream API misused");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    self.json,
                    "downstream_misconfigured",
                    &self.error.to_string(),
                    &self.home,
                );
            }
            other => {
                tracing::warn!(error = %other, "downstream call failed");
                let code = match other {
                    DownstreamError::Token(TokenError::Rejected { .. }) => "token_request_refused",
                    DownstreamError::Token(_) => "provider_unreachable",
                    _ => "downstream_unreachable",
                };
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    self.json,
                    code,
                    &other.to_string(),
                    &self.home,
                );
            }
        };
        let url = crate::extract::sign_in_url(
            &self.sign_in_path,
            &self.return_url,
            &scopes,
            claims.as_deref(),
        );
        if self.json {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({
                    "error": "interaction_required",
                    "error_description": "the user must sign in again or consent",
                    "sign_in_url": url,
                })),
            )
                .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return resp;
        }
        let mut resp = StatusCode::FOUND.into_response();
        if let Ok(v) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
