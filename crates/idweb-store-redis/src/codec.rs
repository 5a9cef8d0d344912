//! How values are written into Redis.
//!
//! - A cache entry is `EXPIRY:KINDLEN:KIND` followed by the sealed bytes, as
//!   they are: `EXPIRY` is Unix seconds or empty (never expires), `KINDLEN`
//!   the length in bytes of `KIND`. The scripts read only `EXPIRY`.
//! - A tombstone is `LOGGED_OUT_AT:EXPIRES_AT`.
//! - A session is its JSON.

use idweb::{Session, StoreError, StoredEntry};

use crate::error::corrupt;

/// Encodes an entry (the cache key is the hash field, not part of the value).
pub(crate) fn encode_entry(e: &StoredEntry) -> Vec<u8> {
    let exp = e.expires_at.map(|x| x.to_string()).unwrap_or_default();
    let mut out = Vec::with_capacity(exp.len() + e.kind.len() + e.sealed.len() + 24);
    out.extend_from_slice(exp.as_bytes());
    out.push(b':');
    out.extend_from_slice(e.kind.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(e.kind.as_bytes());
    out.extend_from_slice(&e.sealed);
    out
}

fn split_colon(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|c| *c == b':')?;
    Some((&b[..i], &b[i + 1..]))
}

fn ascii_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Decodes an entry stored under `cache_key`.
pub(crate) fn decode_entry(cache_key: String, value: &[u8]) -> Result<StoredEntry, StoreError> {
    let bad = || {
        corrupt(format!(
            "cache entry of {} bytes does not decode",
            value.len()
        ))
    };
    let (exp, rest) = split_colon(value).ok_or_else(bad)?;
    let expires_at = if exp.is_empty() {
        None
    } else {
        Some(ascii_i64(exp).ok_or_else(bad)?)
    };
    let (len, rest) = split_colon(rest).ok_or_else(bad)?;
    let len = usize::try_from(ascii_i64(len).ok_or_else(bad)?).map_err(|_| bad())?;
    if rest.len() < len {
        return Err(bad());
    }
    let (kind, sealed) = rest.split_at(len);
    let kind = String::from_utf8(kind.to_vec()).map_err(|_| bad())?;
    Ok(StoredEntry::new(
        cache_key,
        kind,
        expires_at,
        sealed.to_vec(),
    ))
}

/// `(logged_out_at, expires_at)` of a tombstone's value.
pub(crate) fn decode_tombstone(value: &str) -> Result<(i64, i64), StoreError> {
    value
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| corrupt("tombstone does not decode"))
}

pub(crate) fn encode_session(s: &Session) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(corrupt)
}

pub(crate) fn decode_session(data: &[u8]) -> Result<Session, StoreError> {
    serde_json::from_slice(data).map_err(corrupt)
}

/// A whole-number reply that came back as text.
pub(crate) fn parse_i64(b: &[u8]) -> Result<i64, StoreError> {
    ascii_i64(b).ok_or_else(|| corrupt("a number stored in Redis does not decode"))
}

/// Seconds to live for a key whose content ends at `expires_at`, by the
/// store's clock standing at `now`: at least one (Redis deletes a key given
/// zero or less at once; such content already reads as absent anyway).
pub(crate) fn ttl_secs(expires_at: i64, now: i64) -> i64 {
    expires_at.saturating_sub(now).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_binary_payloads_and_odd_kinds() {
        for (exp, kind, sealed) in [
            (
                Some(1_900_000_000),
                "AccessToken",
                vec![0u8, b':', 255, b'\n'],
            ),
            (None, "Refresh:Token\n", vec![]),
            (Some(-5), "", b"12:34".to_vec()),
        ] {
            let e = StoredEntry::new("k", kind, exp, sealed);
            let back = decode_entry("k".into(), &encode_entry(&e)).expect("decode");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn broken_entries_are_corrupt() {
        for bad in [&b""[..], b"x:1:a", b"1:9:ab", b"1:a", b"1"] {
            assert!(
                matches!(decode_entry("k".into(), bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tombstones_decode() {
        assert_eq!(decode_tombstone("10:-20").expect("decode"), (10, -20));
        assert!(decode_tombstone("10").is_err());
    }

    #[test]
    fn ttls_are_positive() {
        assert_eq!(ttl_secs(100, 40), 60);
        assert_eq!(ttl_secs(100, 100), 1);
        assert_eq!(ttl_secs(i64::MIN, i64::MAX), 1);
    }
}
