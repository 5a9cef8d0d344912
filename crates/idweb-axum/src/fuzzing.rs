//! Entry points for the fuzz targets in `fuzz/` and their corpus replay
//! (the `fuzzing` feature; not part of the API).

use axum::http::{HeaderMap, HeaderValue, header};

/// A `Cookie` request header: parsed as idweb reads its session and
/// pending cookies, and every value found opened as a sealed cookie (see
/// `idweb::fuzzing::sealed_cookie`).
pub fn cookie_header(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, value);
    if let Some(v) = crate::cookies::get(&headers, "idweb.session") {
        idweb::fuzzing::sealed_cookie(v.as_bytes());
    }
    for (name, v) in crate::cookies::with_prefix(&headers, "idweb.") {
        assert!(name.starts_with("idweb."));
        idweb::fuzzing::sealed_cookie(v.as_bytes());
    }
}

/// A front-channel logout request's query string: parsed as the route
/// does, then its `iss` and `sid` checked (see
/// `idweb::fuzzing::front_channel`).
pub fn front_channel_query(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let q = crate::routes::parse_query(Some(&raw)).unwrap_or_default();
    idweb::fuzzing::front_channel(
        q.get("iss").map(String::as_str),
        q.get("sid").map(String::as_str),
    );
}
