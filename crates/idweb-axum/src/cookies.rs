//! Cookie reading and writing. The values idweb puts in cookies are sealed
//! by `idweb` itself (decision 0003); this module only reads `Cookie`
//! headers (by hand, as the `cookie` crate reads them: decision 0026) and
//! renders `Set-Cookie` with idweb's fixed attributes through the `cookie`
//! crate.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

/// Every `(name, value)` pair of the request's `Cookie` headers.
///
/// Read without building a `cookie::Cookie` per pair: this runs on every
/// request that asks for the signed-in user. It reads the header exactly as
/// `Cookie::split_parse` does (pairs split at `;`, name and value trimmed,
/// pairs without `=` or with an empty name skipped, one pair of surrounding
/// double quotes removed as by `value_trimmed`); property tests hold the
/// two together.
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            let n = n.trim();
            (!n.is_empty()).then(|| (n, trim_quotes(v.trim())))
        })
}

/// The value of the first cookie named `name` in the request.
pub(crate) fn get<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    pairs(headers).find_map(|(n, v)| (n == name).then_some(v))
}

/// `s` without one pair of surrounding double quotes.
fn trim_quotes(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(s)
}

/// Every cookie of the request whose name starts with `prefix`, as
/// `(name, value)`.
pub(crate) fn with_prefix(headers: &HeaderMap, prefix: &str) -> Vec<(String, String)> {
    pairs(headers)
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The name idweb gives cookie `name`: with the `__Host-` prefix on https
/// (the browser then insists on Secure, Path=/ and no Domain, so no
/// sibling subdomain can plant or overwrite it), as is on plain http.
pub(crate) fn host_name(name: &str, secure: bool, path_base: &str) -> String {
    match (secure, path_base) {
        (true, "") => format!("__Host-{name}"),
        // `__Host-` requires `Path=/`; below a path the cookie keeps that path.
        (true, _) => format!("__Secure-{name}"),
        (false, _) => name.to_string(),
    }
}

/// The path of a cookie that would be scoped to `path` on http: `/` on
/// https at the root, as `__Host-` requires.
pub(crate) fn host_path<'a>(path: &'a str, secure: bool, path_base: &str) -> &'a str {
    if secure && path_base.is_empty() {
        "/"
    } else {
        path
    }
}

/// Attributes of a cookie to set.
pub(crate) struct SetCookie<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: &'a str,
    pub(crate) path: &'a str,
    pub(crate) max_age: Option<u64>,
    pub(crate) secure: bool,
}

impl SetCookie<'_> {
    /// The `Set-Cookie` header value: always HttpOnly and SameSite=Lax.
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        let mut c = Cookie::build((self.name, self.value))
            .path(self.path)
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure);
        if let Some(age) = self.max_age {
            let secs = i64::try_from(age).unwrap_or(i64::MAX);
            c = c.max_age(cookie::time::Duration::seconds(secs));
        }
        HeaderValue::from_str(&c.build().to_string()).ok()
    }

    /// A header that deletes the cookie.
    pub(crate) fn removal(name: &str, path: &str, secure: bool) -> Option<HeaderValue> {
        SetCookie {
            name,
            value: "",
            path,
            max_age: Some(0),
            secure,
        }
        .header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_cookie_among_many() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; idweb.session=xyz; b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("c=\"3\""));
        assert_eq!(get(&h, "idweb.session"), Some("xyz"));
        assert_eq!(get(&h, "c"), Some("3"));
        assert_eq!(get(&h, "idweb"), None);
        assert_eq!(get(&h, ""), None);
    }

    /// Every pair the `cookie` crate reads in the request's headers.
    fn reference(headers: &HeaderMap) -> Vec<(String, String)> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .map(|c| (c.name().to_string(), c.value_trimmed().to_string()))
            .collect()
    }

    proptest::proptest! {
        /// The hand-written reader finds what the `cookie` crate finds, in
        /// any header made of names, values, separators, spaces and quotes.
        #[test]
        fn cookies_are_read_as_the_cookie_crate_reads_them(
            lines in proptest::collection::vec("[ a-c=;\"\t]{0,24}", 1..3),
            name in "[a-c]{0,2}",
        ) {
            let mut h = HeaderMap::new();
            for l in &lines {
                h.append(header::COOKIE, HeaderValue::from_str(l).unwrap());
            }
            let all = reference(&h);
            let first = all.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
            proptest::prop_assert_eq!(get(&h, &name).map(str::to_string), first);
            let prefixed: Vec<_> = all.into_iter().filter(|(n, _)| n.starts_with(&name)).collect();
            proptest::prop_assert_eq!(with_prefix(&h, &name), prefixed);
        }
    }

    #[test]
    fn set_cookie_is_http_only_and_lax() {
        let v = SetCookie {
            name: "n",
            value: "v",
            path: "/",
            max_age: Some(5),
            secure: true,
        }
        .header()
        .unwrap();
        let s = v.to_str().unwrap();
        assert!(s.starts_with("n=v"), "{s}");
        assert!(
            s.contains("HttpOnly")
                && s.contains("SameSite=Lax")
                && s.contains("Secure")
                && s.contains("Max-Age=5")
                && s.contains("Path=/"),
            "{s}"
        );
        let removal = SetCookie::removal("n", "/cb", false).unwrap();
        let r = removal.to_str().unwrap();
        assert!(r.contains("Max-Age=0") && !r.contains("Secure"), "{r}");
    }
}
