//! The provider's HTML pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::DevUser;
use crate::params::Params;

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
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Development Identity Provider</title>
<style>
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
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
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
