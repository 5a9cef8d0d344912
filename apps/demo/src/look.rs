//! The demo's look: one stylesheet (the development identity provider's,
//! so that the apps, the control room and the provider look alike), the
//! page frame with its navigation bar, human times, and the dressing of
//! idweb's own plain pages (signed out, sign-in failed, ...).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::escape;

/// Where every demo server serves [`idweb_devidp::STYLESHEET`].
pub const STYLESHEET_PATH: &str = "/style.css";

/// `GET /style.css`.
pub async fn stylesheet() -> Response {
    let mut resp = idweb_devidp::STYLESHEET.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A whole page: the bar (`brand`, then `nav`, already HTML) and `body`
/// below an `<h1>` of `title`.
pub fn frame(title: &str, brand: &str, nav: &str, body: &str, wide: bool) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><link rel=\"stylesheet\" href=\"{STYLESHEET_PATH}\"></head><body>\
         <header class=\"bar\"><span class=\"brand\">{brand}<small>idweb demo</small></span><nav>{nav}</nav></header>\
         <main{class}><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title),
        brand = escape(brand),
        class = if wide { " class=\"wide\"" } else { "" },
    )
}

/// `<a>` links of `(label, href)` pairs.
pub fn links(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(label, href)| format!("<a href=\"{}\">{}</a>", escape(href), escape(label)))
        .collect()
}

/// A Unix time as a person reads it, relative to `now`: "in 59 min
/// (10:29:49 UTC)", "3 s ago (...)".
pub fn human_time(t: i64, now: i64) -> String {
    let delta = t - now;
    let span = delta.unsigned_abs();
    let amount = if span < 90 {
        format!("{span} s")
    } else if span < 90 * 60 {
        format!("{} min", (span + 30) / 60)
    } else if span < 48 * 3600 {
        format!("{} h", (span + 1800) / 3600)
    } else {
        format!("{} days", (span + 43_200) / 86_400)
    };
    let relative = if delta == 0 {
        "now".to_string()
    } else if delta > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    };
    let secs = t.rem_euclid(86_400);
    format!(
        "{relative} ({:02}:{:02}:{:02} UTC)",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// One row of a token-cache table: the kind, what the entry holds (the
/// scopes of an access or refresh token), and its expiry as a person reads
/// it. Never a secret: an [`idweb::EntrySummary`] has none.
pub fn entry_row(e: &idweb::EntrySummary, now: i64) -> String {
    let what = match (e.kind.as_str(), &e.scopes) {
        (_, Some(scopes)) => format!("<span class=\"mono\">{}</span>", escape(scopes)),
        ("IdToken", None) => "who signed in (the provider's ID token)".to_string(),
        ("Account", None) => "the signed-in account (no secret)".to_string(),
        ("AppMetadata", None) => "this app's client record (no secret)".to_string(),
        (_, None) => "&mdash;".to_string(),
    };
    let expires = match (e.expires_at, e.kind.as_str()) {
        (Some(t), _) => escape(&human_time(t, now)),
        (None, "RefreshToken") => "when used up or revoked".to_string(),
        (None, "IdToken") => "kept with the session".to_string(),
        (None, _) => "&mdash;".to_string(),
    };
    format!(
        "<tr><td><span class=\"kind kind-{kind}\">{kind}</span></td><td>{what}</td><td>{expires}</td></tr>",
        kind = escape(&e.kind),
    )
}

/// Dresses idweb's own pages (plain HTML without the demo's frame) in the
/// demo's stylesheet and navigation bar; `brand` and `nav` as for [`frame`].
/// Pages that already have the frame, and anything that is not HTML, pass
/// unchanged.
pub async fn dress(brand: String, nav: String, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !is_html {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 256 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(html) = std::str::from_utf8(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if html.contains("<header class=\"bar\">") {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let dressed = html
        .replacen(
            "</head>",
            &format!("<link rel=\"stylesheet\" href=\"{STYLESHEET_PATH}\"></head>"),
            1,
        )
        .replacen(
            "<body>",
            &format!(
                "<body><header class=\"bar\"><span class=\"brand\">{}<small>idweb demo</small></span><nav>{nav}</nav></header><main>",
                escape(&brand)
            ),
            1,
        )
        .replacen("</body>", "</main></body>", 1);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(dressed))
}

#[cfg(test)]
mod tests {
    use super::human_time;

    #[test]
    fn times_read_as_a_person_says_them() {
        let now = 1_700_000_000;
        assert_eq!(human_time(now + 3540, now), "in 59 min (23:12:20 UTC)");
        assert_eq!(human_time(now - 3, now), "3 s ago (22:13:17 UTC)");
        assert_eq!(human_time(now, now), "now (22:13:20 UTC)");
        assert_eq!(
            human_time(now + 14 * 86_400, now),
            "in 14 days (22:13:20 UTC)"
        );
    }
}
