//! The provider's HTML pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::{DevUser, LogoutChannel, LogoutDelivery};
use crate::params::Params;

/// The stylesheet of the provider's pages (served at `/style.css`), shared
/// with idweb's demo so that its pages and the provider's look alike.
pub const STYLESHEET: &str = include_str!("style.css");

/// The Content-Security-Policy of pages without frames.
const DEFAULT_CSP: &str = "default-src 'none'; style-src 'self'; frame-ancestors 'none'";

tokio::task_local! {
    /// The links of the navigation bar, set for each request by the router.
    pub(crate) static NAV_LINKS: std::sync::Arc<Vec<(String, String)>>;
}

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

/// The navigation bar: the provider's start page, then the configured links.
fn nav() -> String {
    let mut out = String::from("<a href=\"/\">Provider home</a>");
    let _ = NAV_LINKS.try_with(|links| {
        for (label, href) in links.iter() {
            out.push_str(&format!(
                "<a href=\"{}\">{}</a>",
                escape(href),
                escape(label)
            ));
        }
    });
    out
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
{head}<link rel="stylesheet" href="/style.css">
</head>
<body>
<header class="bar"><span class="brand">Development identity provider<small>idweb</small></span><nav>{nav}</nav></header>
<main>
<p class="warning">Development identity provider &mdash; NOT FOR PRODUCTION</p>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
        nav = nav(),
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

/// `GET /style.css`.
pub(crate) fn stylesheet() -> Response {
    let mut response = STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What the start page shows of a client.
pub(crate) struct ClientInfo {
    pub(crate) client_id: String,
    /// The origin of its first redirect URI (its home, as far as the
    /// provider knows).
    pub(crate) home: Option<String>,
    pub(crate) back_channel: bool,
    pub(crate) front_channel: bool,
}

/// `GET /`: what this provider is, its endpoints, clients and users.
pub(crate) fn index_page(
    issuer: &str,
    clients: &[ClientInfo],
    users: &[(DevUser, usize)],
) -> Response {
    let mut body = format!(
        "<div class=\"card\"><p>An OpenID Provider for development and tests. Its issuer is <code>{issuer}</code>; \
         relying parties find everything else in its \
         <a id=\"discovery\" href=\"/.well-known/openid-configuration\">discovery document</a> \
         (keys: <a href=\"/jwks\">/jwks</a>).</p>\
         <p class=\"actions\"><a class=\"button\" id=\"end-sessions\" href=\"/admin/end-sessions\">End a user's sessions</a></p></div>\n",
        issuer = escape(issuer)
    );
    body.push_str("<div class=\"grid\"><div class=\"card\"><h2>Applications</h2>");
    if clients.is_empty() {
        body.push_str("<p class=\"empty\">No client is registered.</p>");
    } else {
        body.push_str(
            "<table id=\"clients\"><tr><th>Client</th><th>Told of sign-outs by</th></tr>",
        );
        for c in clients {
            let name = match &c.home {
                Some(home) => format!("<a href=\"{}/\">{}</a>", escape(home), escape(&c.client_id)),
                None => escape(&c.client_id),
            };
            let channels: Vec<&str> = [
                c.back_channel.then_some("back-channel"),
                c.front_channel.then_some("front-channel"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let channels = if channels.is_empty() {
                "nothing".to_owned()
            } else {
                channels.join(", ")
            };
            body.push_str(&format!("<tr><td>{name}</td><td>{channels}</td></tr>"));
        }
        body.push_str("</table>");
    }
    body.push_str("</div><div class=\"card\"><h2>Users</h2><table id=\"users\"><tr><th>User</th><th>Live sessions</th></tr>");
    for (user, sessions) in users {
        body.push_str(&format!(
            "<tr><td>{} <small>({})</small></td><td>{sessions}</td></tr>",
            escape(&user.name),
            escape(&user.username)
        ));
    }
    body.push_str("</table><p><small>Users sign in by choosing their name; there is no password.</small></p></div></div>\n");
    page(StatusCode::OK, "Development identity provider", &body)
}

/// The login page: one button per user, posting the original authorization
/// request parameters (as hidden fields) to `/authorize/login`.
pub(crate) fn login_page(client_id: &str, users: &[DevUser], params: &Params) -> Response {
    let mut body = format!(
        "<div class=\"card\"><p>Sign in to <strong>{}</strong> as:</p>\n<form method=\"post\" action=\"/authorize/login\">\n",
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
            "<button class=\"block\" type=\"submit\" name=\"username\" value=\"{}\">{} <small>({}, {})</small></button>\n",
            escape(&user.username),
            escape(&user.name),
            escape(&user.username),
            escape(&user.email),
        ));
    }
    body.push_str("</form></div>\n");
    page(StatusCode::OK, "Sign in", &body)
}

/// An error page, used when the request cannot be answered with a redirect.
/// It offers a way back: the provider's start page, which links to every
/// registered application, and the navigation bar.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<p class=\"error\" id=\"error\">{}</p>\n<div class=\"card\"><p>The request was not forwarded to the application.</p>\
         <p class=\"actions\"><a class=\"button\" id=\"way-back\" href=\"/\">Back to the provider's start page</a> \
         <small>It links to every application registered here.</small></p></div>\n",
        escape(message)
    );
    page(status, "Error", &body)
}

/// The applications told of a sign-out, and how.
fn deliveries_list(deliveries: &[LogoutDelivery]) -> String {
    if deliveries.is_empty() {
        return "<p class=\"empty\" id=\"notified\">No application had to be told.</p>\n"
            .to_owned();
    }
    let mut out = String::from(
        "<table id=\"notified\"><tr><th>Application</th><th>How</th><th>Outcome</th></tr>\n",
    );
    for d in deliveries {
        let channel = match d.channel {
            LogoutChannel::BackChannel => "back-channel logout token",
            LogoutChannel::FrontChannel => "front-channel iframe",
        };
        let (class, outcome) = match (&d.status, &d.error, d.channel) {
            (_, Some(error), _) => ("status-bad", error.clone()),
            (Some(status), None, _) if (200..300).contains(status) => {
                ("status-ok", format!("answered HTTP {status}"))
            }
            (Some(status), None, _) => ("status-bad", format!("answered HTTP {status}")),
            (None, None, LogoutChannel::FrontChannel) => {
                ("status-ok", "iframe rendered in this page".to_owned())
            }
            (None, None, LogoutChannel::BackChannel) => ("status-bad", "no answer".to_owned()),
        };
        out.push_str(&format!(
            "<tr><td><strong>{}</strong></td><td>{channel}</td><td class=\"{class}\">{}</td></tr>\n",
            escape(&d.client_id),
            escape(&outcome)
        ));
    }
    out.push_str("</table>\n");
    out
}

/// The iframes of `frames` and the CSP that allows them.
fn frames_markup(frames: &[LogoutFrame]) -> (String, String) {
    let mut body = String::new();
    for frame in frames {
        body.push_str(&format!(
            "<iframe class=\"logout-frame\" src=\"{}\" title=\"Signing out of {}\" width=\"0\" height=\"0\"></iframe>\n",
            escape(&frame.src),
            escape(&frame.client_id),
        ));
    }
    let mut origins: Vec<&str> = frames.iter().map(|f| f.origin.as_str()).collect();
    origins.sort_unstable();
    origins.dedup();
    let csp = if origins.is_empty() {
        DEFAULT_CSP.to_owned()
    } else {
        format!(
            "default-src 'none'; style-src 'self'; frame-src {}; frame-ancestors 'none'",
            origins.join(" ")
        )
    };
    (body, csp)
}

/// The page shown after logout without a (valid) `post_logout_redirect_uri`.
pub(crate) fn signed_out_page(deliveries: &[LogoutDelivery]) -> Response {
    let body = format!(
        "<div class=\"card\"><p>You have been signed out of the development identity provider. The applications you signed in to through it:</p>\n{}</div>\n",
        deliveries_list(deliveries)
    );
    page(StatusCode::OK, "Signed out", &body)
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
/// logout URI in an iframe, lists every application told (back channel
/// included), then (after the page and its frames loaded) continues to
/// `continue_to`, the post-logout redirect, if any.
pub(crate) fn logout_frames_page(
    frames: &[LogoutFrame],
    deliveries: &[LogoutDelivery],
    continue_to: Option<&str>,
) -> Response {
    let mut body = format!(
        "<div class=\"card\"><p>You have been signed out of the development identity provider. The applications you signed in to through it are told as well:</p>\n{}",
        deliveries_list(deliveries)
    );
    let (frames_html, csp) = frames_markup(frames);
    body.push_str(&frames_html);
    let mut head = String::new();
    if let Some(target) = continue_to {
        head = format!(
            "<meta http-equiv=\"refresh\" content=\"1;url={}\">\n",
            escape(target)
        );
        body.push_str(&format!(
            "<p class=\"actions\"><a class=\"button\" id=\"continue\" href=\"{}\">Continue</a> <small>(you are taken back to the application automatically)</small></p>\n",
            escape(target)
        ));
    }
    body.push_str("</div>\n");
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
        "<div class=\"card\">{who}<p>Do you want to sign out of the development identity provider? The applications you signed in to through it are signed out too.</p>\n<form method=\"post\" action=\"/logout\">\n"
    );
    for (name, value) in params.iter().filter(|(name, _)| *name != "confirm") {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape(name),
            escape(value)
        ));
    }
    body.push_str(
        "<button type=\"submit\" name=\"confirm\" value=\"yes\">Sign out</button>\n</form>\n<p><small>To stay signed in, close this page.</small></p></div>\n",
    );
    page(StatusCode::OK, "Sign out?", &body)
}

/// The development-only page to end all IdP sessions of a user.
pub(crate) fn end_sessions_form_page(users: &[(DevUser, usize)]) -> Response {
    let mut body = String::from(
        "<div class=\"card\"><p>Ends every IdP session of the chosen user, as if they signed out at the provider or an administrator revoked their sessions. \
         Every application they signed in to through those sessions is told: by a back-channel logout token the provider sends, \
         or by a front-channel iframe the next page loads in this browser (it needs no cookie of the application).</p>\n\
         <form method=\"post\" action=\"/admin/end-sessions\">\n",
    );
    if users.is_empty() {
        body.push_str("<p>No users are configured.</p>\n");
    }
    for (user, sessions) in users {
        body.push_str(&format!(
            "<button class=\"block danger\" type=\"submit\" name=\"username\" value=\"{}\">{} <small>({}, {} live session{})</small></button>\n",
            escape(&user.username),
            escape(&user.name),
            escape(&user.username),
            sessions,
            if *sessions == 1 { "" } else { "s" },
        ));
    }
    body.push_str("</form></div>\n");
    page(StatusCode::OK, "End sessions", &body)
}

/// What [`end_sessions_form_page`]'s form did; the page loads the
/// front-channel iframes of `frames`.
pub(crate) fn end_sessions_result_page(
    username: &str,
    sessions: usize,
    deliveries: &[LogoutDelivery],
    frames: &[LogoutFrame],
) -> Response {
    let mut body = format!(
        "<div class=\"card\"><p id=\"ended\">Ended {sessions} IdP session{} of <strong>{}</strong>.</p>\n",
        if sessions == 1 { "" } else { "s" },
        escape(username)
    );
    body.push_str(&deliveries_list(deliveries));
    let (frames_html, csp) = frames_markup(frames);
    body.push_str(&frames_html);
    body.push_str("</div>\n");
    render(StatusCode::OK, "Sessions ended", "", &body, &csp)
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
