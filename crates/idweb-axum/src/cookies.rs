//! Minimal, strict cookie reading and writing.

use axum::http::{HeaderMap, HeaderValue, header};

/// The value of the first cookie named `name` in the request.
pub(crate) fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
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
        let mut s = format!(
            "{}={}; Path={}; HttpOnly; SameSite=Lax",
            self.name, self.value, self.path
        );
        if let Some(age) = self.max_age {
            s.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure {
            s.push_str("; Secure");
        }
        HeaderValue::from_str(&s).ok()
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
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(get(&h, "idweb.session"), Some("xyz"));
        assert_eq!(get(&h, "c"), Some("3"));
        assert_eq!(get(&h, "idweb"), None);
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
        assert!(
            s.contains("HttpOnly")
                && s.contains("SameSite=Lax")
                && s.contains("Secure")
                && s.contains("Max-Age=5")
        );
    }
}
