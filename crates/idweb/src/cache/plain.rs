//! The plaintext that is sealed for one cache entry.
//!
//! Two formats are read; the second is written:
//!
//! 1. MSAL's JSON object of the entry (starts with `{`): written by earlier
//!    versions.
//! 2. A compact form of the same object (starts with `0x02`): the fields in
//!    order, each a name and a value, with no JSON punctuation. A name is one
//!    byte, the index of a well-known MSAL field name, or `0` followed by the
//!    name as a length-prefixed string. A value is a tag byte and its
//!    payload:
//!    - `s`: a string (length-prefixed);
//!    - `t`: a string of decimal digits (MSAL's times), as an unsigned
//!      LEB128 integer — only for strings that print back identically;
//!    - `p`: a string found in the entry's cache key, as its byte offset and
//!      length there (MSAL's cache keys repeat the account, environment,
//!      client, realm and scopes of the entry);
//!    - `c`: one of a few constant strings (`AccessToken`, `Bearer`, ...), by
//!      index;
//!    - `j`: any other JSON value, as its JSON text (length-prefixed);
//!    - `r`: no payload: the entry's secret is the ID token of the session
//!      the partition belongs to (only an `IdToken` entry of a session
//!      partition; the session holds that token sealed, so the partition
//!      does not hold it a second time).
//!
//!    Lengths and offsets are unsigned LEB128 integers.
//!
//! The cache key is the entry's associated data when sealing, so a `p`
//! reference cannot be moved to another key without failing to open.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// First byte of the compact format.
const COMPACT: u8 = 0x02;

/// Field names by their one-byte code (code = index + 1).
const NAMES: [&str; 20] = [
    "credential_type",
    "secret",
    "home_account_id",
    "environment",
    "client_id",
    "target",
    "realm",
    "token_type",
    "cached_at",
    "expires_on",
    "extended_expires_on",
    "key_id",
    "ext_cache_key",
    "refresh_on",
    "last_modification_time",
    "family_id",
    "local_account_id",
    "username",
    "authority_type",
    "account_source",
];

/// Constant strings by index.
const CONSTANTS: [&str; 7] = [
    "AccessToken",
    "RefreshToken",
    "IdToken",
    "Bearer",
    "MSSTS",
    "Other",
    "authorization_code",
];

/// A field value of the compact format, borrowed from the plaintext, the
/// cache key or the constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    /// A string.
    Text(&'a str),
    /// A string of decimal digits, as its number.
    Digits(u64),
    /// Another JSON value, as JSON text.
    Json(&'a str),
    /// The session's ID token.
    SessionIdToken,
}

fn put_len(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The number a string of digits stands for, when it prints back as the
/// same string (no sign, no leading zero).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

fn put_text(out: &mut Vec<u8>, s: &str, cache_key: &str) {
    if let Some(i) = CONSTANTS.iter().position(|c| *c == s) {
        out.push(b'c');
        out.push(i as u8);
    } else if let Some(n) = digits(s) {
        out.push(b't');
        put_len(out, n);
    } else if s.len() >= 4
        && let Some(offset) = cache_key.find(s)
    {
        out.push(b'p');
        put_len(out, offset as u64);
        put_len(out, s.len() as u64);
    } else {
        out.push(b's');
        put_bytes(out, s.as_bytes());
    }
}

/// The compact plaintext of an entry's MSAL JSON object. With
/// `secret_is_session_id_token`, its `secret` is written as a reference to
/// the session's ID token (the caller has checked they are equal).
pub(crate) fn encode(
    object: &Map<String, Value>,
    cache_key: &str,
    secret_is_session_id_token: bool,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    out.push(COMPACT);
    for (name, value) in object {
        match NAMES.iter().position(|n| n == name) {
            Some(i) => out.push(i as u8 + 1),
            None => {
                out.push(0);
                put_bytes(&mut out, name.as_bytes());
            }
        }
        match value {
            Value::String(_) if name == "secret" && secret_is_session_id_token => out.push(b'r'),
            Value::String(s) => put_text(&mut out, s, cache_key),
            other => {
                out.push(b'j');
                put_bytes(&mut out, other.to_string().as_bytes());
            }
        }
    }
    out
}

/// Whether `plain` is in the compact format (else it is MSAL JSON).
pub(crate) fn is_compact(plain: &[u8]) -> bool {
    plain.first() == Some(&COMPACT)
}

/// Reads the fields of a compact plaintext, in order. Yields `None` once,
/// then stops, if the plaintext is malformed.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
    cache_key: &'a str,
    failed: bool,
}

/// The fields of a compact plaintext (see [`is_compact`]).
pub(crate) fn fields<'a>(plain: &'a [u8], cache_key: &'a str) -> Fields<'a> {
    Fields {
        rest: plain.get(1..).unwrap_or_default(),
        cache_key,
        failed: !is_compact(plain),
    }
}

impl<'a> Fields<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn len(&mut self) -> Option<u64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn text(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.len()?).ok()?;
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        std::str::from_utf8(head).ok()
    }

    fn field(&mut self) -> Option<(&'a str, Field<'a>)> {
        let name = match self.byte()? {
            0 => self.text()?,
            code => NAMES.get(usize::from(code) - 1)?,
        };
        let value = match self.byte()? {
            b's' => Field::Text(self.text()?),
            b't' => Field::Digits(self.len()?),
            b'p' => {
                let offset = usize::try_from(self.len()?).ok()?;
                let len = usize::try_from(self.len()?).ok()?;
                Field::Text(self.cache_key.get(offset..offset.checked_add(len)?)?)
            }
            b'c' => Field::Text(CONSTANTS.get(usize::from(self.byte()?))?),
            b'j' => Field::Json(self.text()?),
            b'r' => Field::SessionIdToken,
            _ => return None,
        };
        Some((name, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(&'a str, Field<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            self.failed = false;
            self.rest = &[];
            return Some(None);
        }
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_none() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// What a sealed plaintext holds.
pub(crate) struct Decoded {
    /// MSAL's JSON object of the entry; without `secret` when
    /// `secret_is_session_id_token`.
    pub(crate) object: Map<String, Value>,
    /// The secret is the session's ID token (format 2 only).
    pub(crate) secret_is_session_id_token: bool,
}

/// Reads either format into MSAL's JSON object.
pub(crate) fn decode(plain: &[u8], cache_key: &str) -> Option<Decoded> {
    if !is_compact(plain) {
        return match serde_json::from_slice(plain).ok()? {
            Value::Object(object) => Some(Decoded {
                object,
                secret_is_session_id_token: false,
            }),
            _ => None,
        };
    }
    let mut out = Decoded {
        object: Map::new(),
        secret_is_session_id_token: false,
    };
    for field in fields(plain, cache_key) {
        let (name, value) = field?;
        let value = match value {
            Field::Text(s) => Value::String(s.to_owned()),
            Field::Digits(n) => Value::String(n.to_string()),
            Field::Json(j) => serde_json::from_str(j).ok()?,
            Field::SessionIdToken => {
                out.secret_is_session_id_token = true;
                continue;
            }
        };
        out.object.insert(name.to_owned(), value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "uid.utid-idp.example.com-accesstoken-app-common-read write";

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_json_object_round_trips_and_is_smaller() {
        let cases = [
            json!({
                "credential_type": "AccessToken", "secret": "s3cr3t",
                "home_account_id": "uid.utid", "environment": "idp.example.com",
                "client_id": "app", "target": "read write", "realm": "common",
                "token_type": "Bearer", "cached_at": "1700000000",
                "expires_on": "1700003600", "extended_expires_on": "0"
            }),
            json!({
                "credential_type": "RefreshToken", "secret": "",
                "home_account_id": null, "environment": "X", "client_id": "App",
                "last_modification_time": "017", "family_id": "-1",
                "custom": {"nested": [1, 2.5, true, null]}, "n": 12, "": "empty",
                "é": "ü", "big": "99999999999999999999"
            }),
            json!({}),
        ];
        for case in cases {
            let obj = object(case.clone());
            let plain = encode(&obj, KEY, false);
            assert!(is_compact(&plain));
            let back = decode(&plain, KEY).expect("decodes");
            assert!(!back.secret_is_session_id_token);
            assert_eq!(Value::Object(back.object), case);
            assert!(plain.len() < case.to_string().len() || obj.is_empty());
        }
    }

    #[test]
    fn the_session_id_token_is_a_reference() {
        let obj = object(json!({
            "credential_type": "IdToken", "secret": "h.p.s",
            "home_account_id": "uid.utid", "environment": "idp.example.com",
            "realm": "common", "client_id": "app"
        }));
        let plain = encode(&obj, KEY, true);
        assert!(!plain.windows(5).any(|w| w == b"h.p.s"));
        let back = decode(&plain, KEY).expect("decodes");
        assert!(back.secret_is_session_id_token);
        assert!(!back.object.contains_key("secret"));
        assert_eq!(back.object["realm"], "common");
    }

    #[test]
    fn msal_json_is_still_read() {
        let v = json!({"credential_type": "IdToken", "secret": "x"});
        let back = decode(v.to_string().as_bytes(), KEY).expect("decodes");
        assert_eq!(Value::Object(back.object), v);
        assert!(decode(b"[1]", KEY).is_none());
    }

    #[test]
    fn malformed_plaintexts_are_refused_without_panicking() {
        let obj = object(json!({
            "credential_type": "AccessToken", "secret": "s3cr3t", "client_id": "app",
            "target": "read write", "expires_on": "1700003600", "x": [1]
        }));
        let plain = encode(&obj, KEY, false);
        for n in 1..plain.len() {
            let _ = decode(&plain[..n], KEY);
        }
        for bad in [
            &[COMPACT, 99, b's', 0][..],
            &[COMPACT, 1, b'z'],
            &[COMPACT, 1, b'p', 200, 1],
            &[COMPACT, 1, b'c', 200],
            &[
                COMPACT, 1, b't', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            &[COMPACT, 1, b's', 5, b'a'],
            &[COMPACT, 1, b's', 1, 0xff],
            &[COMPACT, 1, b'j', 1, b'{'],
        ] {
            assert!(decode(bad, KEY).is_none(), "{bad:?}");
        }
        // A cache key cut inside a character is refused, not sliced.
        let obj = object(json!({ "secret": "é-app" }));
        let plain = encode(&obj, "é-app", false);
        assert!(decode(&plain, "é-app").is_some());
        assert!(decode(&plain, "xxxxxé").is_none());
    }
}
