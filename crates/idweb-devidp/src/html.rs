//! The provider's HTML pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::{DevUser, LogoutChannel, LogoutDelivery};
use crate::params::Params;

/// The Content-Security-Policy of pages without frames.
const DEFAULT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// Escapes text for use in HTML element content and quoted attribute values.
pub(crate) fn escape(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    render(status, title, "", body, DEFAULT_CSP)
}

/// Renders a page; `head` is extra (already escaped) markup for `<head>`.
fn render(status: StatusCode, title: &str, head: &str, body: &str, csp: &str) -> Response {
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Development Identity Provider</title>
{head}<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
.warning {{ background: #fff3cd; border: 1px solid #e0b400; padding: .5rem .75rem; border-radius: .25rem; font-weight: bold; }}
.error {{ background: #f8d7da; border: 1px solid #c0392b; padding: .5rem .75rem; border-radius: .25rem; }}
button {{ display: block; width: 100%; margin: .5rem 0; padding: .75rem; font-size: 1rem; cursor: pointer; }}
small {{ color: #555; }}
</style>
</head>
<body>
<p class="warning">Development identity provider &mdash; NOT FOR PRODUCTION</p>
<h1>{title}</h1>
{body}
</body>
</html>
"#,
        title = escape(title),
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let csp = HeaderValue::from_str(csp).unwrap_or(HeaderValue::from_static(DEFAULT_CSP));
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The login page: one button per user, posting the original authorization
/// request parameters (as hidden fields) to `/authorize/login`.
pub(crate) fn login_page(client_id: &str, users: &[DevUser], params: &Params) -> Response {
    let mut body = format!(
        "<p>Sign in to <strong>{}</strong> as:</p>\n<form method=\"post\" action=\"/authorize/login\">\n",
        escape(client_id)
    );
    for (name, value) in params.iter() {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape(name),
            escape(value)
        ));
    }
    if users.is_empty() {
        body.push_str("<p>No users are configured.</p>\n");
    }
    for user in users {
        body.push_str(&format!(
            "<button type=\"submit\" name=\"username\" value=\"{}\">{} <small>({}, {})</small></button>\n",
            escape(&user.username),
            escape(&user.name),
            escape(&user.username),
            escape(&user.email),
        ));
    }
    body.push_str("</form>\n");
    page(StatusCode::OK, "Sign in", &body)
}

/// An error page, used when the request cannot be answered with a redirect.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<p class=\"error\">{}</p>\n<p>The request was not forwarded to the application.</p>\n",
        escape(message)
    );
    page(status, "Error", &body)
}

/// The page shown after logout without a (valid) `post_logout_redirect_uri`.
pub(crate) fn signed_out_page() -> Response {
    page(
        StatusCode::OK,
        "Signed out",
        "<p>You have been signed out of the development identity provider.</p>\n",
    )
}

/// An `<iframe>` of the front-channel logout page.
#[derive(Debug, Clone)]
pub(crate) struct LogoutFrame {
    pub(crate) client_id: String,
    /// The `frontchannel_logout_uri` with any `iss`/`sid` added.
    pub(crate) src: String,
    /// Its origin (`scheme://host:port`), allowed by the page's CSP.
    pub(crate) origin: String,
}

/// The logout page that makes the browser load each client's front-channel
/// logout URI in an iframe, then (after the page and its frames loaded)
/// continues to `continue_to`, the post-logout redirect, if any.
pub(crate) fn logout_frames_page(frames: &[LogoutFrame], continue_to: Option<&str>) -> Response {
    let mut body = String::from(
        "<p>You have been signed out of the development identity provider.</p>\n<p>Signing you out of these applications as well:</p>\n<ul>\n",
    );
    for frame in frames {
        body.push_str(&format!("<li>{}</li>\n", escape(&frame.client_id)));
    }
    body.push_str("</ul>\n");
    for frame in frames {
        body.push_str(&format!(
            "<iframe src=\"{}\" title=\"Signing out of {}\" width=\"0\" height=\"0\" style=\"display:none\"></iframe>\n",
            escape(&frame.src),
            escape(&frame.client_id),
        ));
    }
    let mut head = String::new();
    if let Some(target) = continue_to {
        head = format!(
            "<meta http-equiv=\"refresh\" content=\"1;url={}\">\n",
            escape(target)
        );
        body.push_str(&format!(
            "<p><a href=\"{}\">Continue</a> <small>(you are taken back to the application automatically)</small></p>\n",
            escape(target)
        ));
    }
    let mut origins: Vec<&str> = frames.iter().map(|f| f.origin.as_str()).collect();
    origins.sort_unstable();
    origins.dedup();
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; frame-src {}; frame-ancestors 'none'",
        origins.join(" ")
    );
    render(StatusCode::OK, "Signed out", &head, &body, &csp)
}

/// Asks the user whether to sign out of the provider: the form posts the
/// logout request's parameters back to `/logout` with `confirm=yes`.
pub(crate) fn logout_confirm_page(user: Option<&DevUser>, params: &Params) -> Response {
    let who = match user {
        Some(u) => format!(
            "<p>You are signed in as <strong>{}</strong> <small>({})</small>.</p>\n",
            escape(&u.name),
            escape(&u.username)
        ),
        None => String::new(),
    };
    let mut body = format!(
        "{who}<p>Do you want to sign out of the development identity provider? The applications you signed in to through it are signed out too.</p>\n<form method=\"post\" action=\"/logout\">\n"
    );
    for (name, value) in params.iter().filter(|(name, _)| *name != "confirm") {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape(name),
            escape(value)
        ));
    }
    body.push_str(
        "<button type=\"submit\" name=\"confirm\" value=\"yes\">Sign out</button>\n</form>\n<p><small>To stay signed in, close this page.</small></p>\n",
    );
    page(StatusCode::OK, "Sign out?", &body)
}

/// The development-only page to end all IdP sessions of a user.
pub(crate) fn end_sessions_form_page(users: &[(DevUser, usize)]) -> Response {
    let mut body = String::from(
        "<p>Ends every IdP session of the chosen user, as if they signed out at the provider or an administrator revoked their sessions. Every application they signed in to through those sessions gets a back-channel logout token.</p>\n<form method=\"post\" action=\"/admin/end-sessions\">\n",
    );
    if users.is_empty() {
        body.push_str("<p>No users are configured.</p>\n");
    }
    for (user, sessions) in users {
        body.push_str(&format!(
            "<button type=\"submit\" name=\"username\" value=\"{}\">{} <small>({}, {} live session{})</small></button>\n",
            escape(&user.username),
            escape(&user.name),
            escape(&user.username),
            sessions,
            if *sessions == 1 { "" } else { "s" },
        ));
    }
    body.push_str("</form>\n");
    page(StatusCode::OK, "End sessions", &body)
}

/// What [`end_sessions_form_page`]'s form did.
pub(crate) fn end_sessions_result_page(
    username: &str,
    sessions: usize,
    deliveries: &[LogoutDelivery],
) -> Response {
    let mut body = format!(
        "<p>Ended {sessions} IdP session{} of <strong>{}</strong>.</p>\n",
        if sessions == 1 { "" } else { "s" },
        escape(username)
    );
    if deliveries.is_empty() {
        body.push_str("<p>No application was notified.</p>\n");
    } else {
        body.push_str("<ul>\n");
        for d in deliveries {
            let channel = match d.channel {
                LogoutChannel::BackChannel => "back-channel",
                LogoutChannel::FrontChannel => "front-channel",
            };
            let outcome = match (&d.status, &d.error) {
                (_, Some(error)) => error.clone(),
                (Some(status), None) => format!("HTTP {status}"),
                (None, None) => "rendered".to_owned(),
            };
            body.push_str(&format!(
                "<li><strong>{}</strong> {} <code>{}</code>: {}</li>\n",
                escape(&d.client_id),
                channel,
                escape(&d.uri),
                escape(&outcome)
            ));
        }
        body.push_str("</ul>\n");
    }
    page(StatusCode::OK, "Sessions ended", &body)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
