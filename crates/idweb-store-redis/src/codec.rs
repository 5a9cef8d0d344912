//! How values are written into Redis.
//!
//! - A cache entry is `EXPIRY:KINDLEN:KIND` followed by the sealed bytes, as
//!   they are: `EXPIRY` is Unix seconds or empty (never expires), `KINDLEN`
//!   the length in bytes of `KIND`. The scripts read only `EXPIRY`.
//! - A tombstone is `uLOGGED_OUT_AT:EXPIRES_AT`, `LOGGED_OUT_AT` in Unix
//!   microseconds. Tombstones written by earlier versions
//!   (`LOGGED_OUT_AT:EXPIRES_AT`, whole seconds) are still read, as the last
//!   microsecond of their second: they cover what they covered.
//! - A session is the compact record below; sessions written by earlier
//!   versions are JSON (they start with `{`) and are still read.
//!
//! The compact session record leaves out what the reader already has or can
//! derive: the session id (every read names the session by its id) and the
//! account id when it is the one [`account_id_for`] derives from `iss` and
//! `sub`. It is `0x04`, a flags byte, `created_at` (Unix microseconds) and
//! `expires_at` (Unix seconds) as zigzag LEB128 integers, then `iss`,
//! `sub`, and when flagged `sid`, `name` and `account_id`, and last the ID
//! token, each as an unsigned LEB128 length and its UTF-8 bytes. Records of
//! earlier versions are still read, their `created_at` (whole seconds)
//! taken as the first microsecond of its second: `0x03` (the same layout)
//! and `0x02` (8-byte big-endian times and 4-byte big-endian lengths); so
//! are JSON sessions. An ID token as idweb stores it
//! (`sealed:` and the base64url of the sealed bytes) is written as the
//! sealed bytes themselves, flagged, and read back as the same text.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idweb::{Secret, Session, SessionId, StoreError, StoredEntry, account_id_for};

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

/// `(logged_out_at, expires_at)` of a tombstone's value, `logged_out_at` in
/// microseconds (an earlier version's whole second read as its last
/// microsecond, so that it covers every session created in that second).
pub(crate) fn decode_tombstone(value: &str) -> Result<(i64, i64), StoreError> {
    let (micros, value) = match value.strip_prefix('u') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (lo, exp): (i64, i64) = value
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| corrupt("tombstone does not decode"))?;
    let lo = if micros { lo } else { last_micro_of(lo) };
    Ok((lo, exp))
}

/// The first microsecond of second `secs`.
fn first_micro_of(secs: i64) -> i64 {
    secs.saturating_mul(MICROS_PER_SEC)
}

/// The last microsecond of second `secs`.
fn last_micro_of(secs: i64) -> i64 {
    first_micro_of(secs).saturating_add(MICROS_PER_SEC - 1)
}

/// The first byte of a compact session record (JSON starts with `{`).
const SESSION_RECORD: u8 = 0x04;
/// The previous record: the same layout, `created_at` in whole seconds; still read.
const SESSION_RECORD_V3: u8 = 0x03;
/// The first compact record (fixed-size integers, whole seconds), still read.
const SESSION_RECORD_V2: u8 = 0x02;
const HAS_SID: u8 = 1;
const HAS_NAME: u8 = 2;
const HAS_ACCOUNT_ID: u8 = 4;
const SEALED_ID_TOKEN: u8 = 8;

/// How idweb's sessions hold their ID token sealed.
const SEALED_PREFIX: &str = "sealed:";

/// The sealed bytes of an ID token stored as `sealed:BASE64URL`, when the
/// text is exactly what encoding them gives back.
fn sealed_bytes(id_token: &str) -> Option<Vec<u8>> {
    let b64 = id_token.strip_prefix(SEALED_PREFIX)?;
    let bytes = B64.decode(b64).ok()?;
    (B64.encode(&bytes) == b64).then_some(bytes)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
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

fn put_time(out: &mut Vec<u8>, t: i64) {
    put_varint(out, ((t << 1) ^ (t >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(b.len()).map_err(|_| corrupt("a session field is too long"))?;
    put_varint(out, u64::from(len));
    out.extend_from_slice(b);
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    put_bytes(out, s.as_bytes())
}

/// Encodes a session as its compact record (see the module documentation).
pub(crate) fn encode_session(s: &Session) -> Result<Vec<u8>, StoreError> {
    let explicit_account = s.account_id != account_id_for(&s.iss, &s.sub);
    let mut flags = 0;
    if s.sid.is_some() {
        flags |= HAS_SID;
    }
    if s.name.is_some() {
        flags |= HAS_NAME;
    }
    if explicit_account {
        flags |= HAS_ACCOUNT_ID;
    }
    let id_token = s.id_token.secret();
    let sealed = sealed_bytes(id_token);
    if sealed.is_some() {
        flags |= SEALED_ID_TOKEN;
    }
    let mut out = Vec::with_capacity(64 + s.iss.len() + s.sub.len() + id_token.len());
    out.push(SESSION_RECORD);
    out.push(flags);
    put_time(&mut out, s.created_at);
    put_time(&mut out, s.expires_at);
    put_str(&mut out, &s.iss)?;
    put_str(&mut out, &s.sub)?;
    if let Some(sid) = &s.sid {
        put_str(&mut out, sid)?;
    }
    if let Some(name) = &s.name {
        put_str(&mut out, name)?;
    }
    if explicit_account {
        put_str(&mut out, &s.account_id)?;
    }
    match &sealed {
        Some(bytes) => put_bytes(&mut out, bytes)?,
        None => put_str(&mut out, id_token)?,
    }
    Ok(out)
}

/// Reads a compact record field by field; `.1` is whether it is the first
/// version (fixed-size integers).
struct Reader<'a>(&'a [u8], bool);

/// Microseconds in a second (`created_at` of earlier records is in seconds).
const MICROS_PER_SEC: i64 = idweb::MICROS_PER_SEC;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn i64(&mut self) -> Option<i64> {
        if self.1 {
            return Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?));
        }
        let z = self.varint()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = if self.1 {
            u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
        } else {
            self.varint()?
        };
        self.take(usize::try_from(len).ok()?)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn decode_record(id: &SessionId, data: &[u8]) -> Option<Session> {
    let mut r = Reader(data, false);
    let (flags, in_seconds) = match r.take(2)? {
        [SESSION_RECORD, flags] => (*flags, false),
        [SESSION_RECORD_V3, flags] => (*flags, true),
        [SESSION_RECORD_V2, flags] => {
            r.1 = true;
            (*flags, true)
        }
        _ => return None,
    };
    if flags & !(HAS_SID | HAS_NAME | HAS_ACCOUNT_ID | SEALED_ID_TOKEN) != 0 {
        return None;
    }
    let created_at = r.i64()?;
    let created_at = if in_seconds {
        first_micro_of(created_at)
    } else {
        created_at
    };
    let expires_at = r.i64()?;
    let iss = r.string()?;
    let sub = r.string()?;
    let sid = if flags & HAS_SID != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let name = if flags & HAS_NAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let account_id = if flags & HAS_ACCOUNT_ID != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let id_token = if flags & SEALED_ID_TOKEN != 0 {
        format!("{SEALED_PREFIX}{}", B64.encode(r.bytes()?))
    } else {
        r.string()?
    };
    if !r.0.is_empty() {
        return None;
    }
    let mut s = Session::new(iss, sub, sid, Secret::new(id_token), created_at, expires_at);
    s.id = id.clone();
    s.name = name;
    if let Some(account_id) = account_id {
        s.account_id = account_id;
    }
    Some(s)
}

/// Decodes the session `id`: a compact record, or the JSON that earlier
/// versions wrote (which carries the id itself).
pub(crate) fn decode_session(id: &SessionId, data: &[u8]) -> Result<Session, StoreError> {
    if data.first() == Some(&b'{') {
        // Only earlier versions wrote JSON: `created_at` in whole seconds.
        let mut s: Session = serde_json::from_slice(data).map_err(corrupt)?;
        s.created_at = first_micro_of(s.created_at);
        return Ok(s);
    }
    decode_record(id, data).ok_or_else(|| {
        corrupt(format!(
            "session record of {} bytes does not decode",
            data.len()
        ))
    })
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

    fn sessions() -> Vec<Session> {
        let plain = Session::new(
            "https://idp.example/",
            "alice",
            None,
            Secret::new("h.p.s"),
            1_800_000_000_654_321,
            1_800_043_200,
        );
        let mut full = Session::new(
            "https://idp.example/{x}",
            "b\u{e9}b",
            Some("sid-1".into()),
            Secret::new(""),
            -1,
            i64::MAX,
        );
        full.name = Some("B\u{e9}b".into());
        full.account_id = "imported.account".into();
        let mut sealed = plain.clone();
        sealed.id_token = Secret::new(format!("sealed:{}", B64.encode([0u8, 1, 254, 255, 7])));
        let mut not_canonical = plain.clone();
        // Not what encoding its bytes gives back (the last character's
        // unused bits are set): kept as text.
        not_canonical.id_token = Secret::new("sealed:AB");
        let mut not_base64 = plain.clone();
        not_base64.id_token = Secret::new("sealed:not base64!");
        vec![plain, full, sealed, not_canonical, not_base64]
    }

    #[test]
    fn sessions_round_trip_in_the_compact_record_without_their_id() {
        for s in sessions() {
            let data = encode_session(&s).expect("encode");
            assert_eq!(data.first(), Some(&SESSION_RECORD));
            assert!(
                !data
                    .windows(s.id.secret().len())
                    .any(|w| w == s.id.secret().as_bytes()),
                "the record holds the session id"
            );
            assert_eq!(decode_session(&s.id, &data).expect("decode"), s);
        }
    }

    #[test]
    fn a_sealed_id_token_is_stored_as_its_bytes() {
        let mut s = sessions()[0].clone();
        let bytes: Vec<u8> = (0..=255).collect();
        s.id_token = Secret::new(format!("sealed:{}", B64.encode(&bytes)));
        let data = encode_session(&s).expect("encode");
        assert_eq!(data[1] & SEALED_ID_TOKEN, SEALED_ID_TOKEN);
        assert!(data.ends_with(&bytes));
        assert!(data.len() < encode_session(&sessions()[0]).expect("encode").len() + 260);
        assert_eq!(decode_session(&s.id, &data).expect("decode"), s);
        // Records written before the flag existed hold the text.
        let old = encode_v2(&s);
        assert_eq!(old[1] & SEALED_ID_TOKEN, 0);
        assert_eq!(decode_session(&s.id, &old).expect("decode"), in_seconds(&s));
    }

    /// `s` as a version that kept whole seconds reads back: created at the
    /// first microsecond of its second.
    fn in_seconds(s: &Session) -> Session {
        let mut s = s.clone();
        s.created_at = first_micro_of(s.created_at.div_euclid(MICROS_PER_SEC));
        s
    }

    /// The first compact record, as the previous version wrote it.
    fn encode_v2(s: &Session) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, v: &str) {
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        let explicit_account = s.account_id != account_id_for(&s.iss, &s.sub);
        let flags = u8::from(s.sid.is_some())
            | u8::from(s.name.is_some()) << 1
            | u8::from(explicit_account) << 2;
        let mut out = vec![SESSION_RECORD_V2, flags];
        out.extend_from_slice(&s.created_at.div_euclid(MICROS_PER_SEC).to_be_bytes());
        out.extend_from_slice(&s.expires_at.to_be_bytes());
        put(&mut out, &s.iss);
        put(&mut out, &s.sub);
        for v in [&s.sid, &s.name].into_iter().flatten() {
            put(&mut out, v);
        }
        if explicit_account {
            put(&mut out, &s.account_id);
        }
        put(&mut out, s.id_token.secret());
        out
    }

    #[test]
    fn records_of_the_first_compact_version_are_read() {
        for s in sessions() {
            let old = encode_v2(&s);
            assert_eq!(decode_session(&s.id, &old).expect("decode"), in_seconds(&s));
            assert!(encode_session(&s).expect("encode").len() < old.len());
        }
    }

    #[test]
    fn records_of_the_previous_compact_version_are_read_in_seconds() {
        for s in sessions() {
            // Version 3 had this layout with `created_at` in seconds.
            let mut then = s.clone();
            then.created_at = s.created_at.div_euclid(MICROS_PER_SEC);
            let mut old = encode_session(&then).expect("encode");
            old[0] = SESSION_RECORD_V3;
            assert_eq!(decode_session(&s.id, &old).expect("decode"), in_seconds(&s));
        }
    }

    #[test]
    fn sessions_written_as_json_by_earlier_versions_are_read() {
        for s in sessions() {
            let mut then = s.clone();
            then.created_at = s.created_at.div_euclid(MICROS_PER_SEC);
            let json = serde_json::to_vec(&then).expect("json");
            assert_eq!(
                decode_session(&s.id, &json).expect("decode"),
                in_seconds(&s)
            );
        }
    }

    #[test]
    fn broken_session_records_are_corrupt() {
        let s = &sessions()[1];
        let data = encode_session(s).expect("encode");
        let mut bad: Vec<Vec<u8>> = (0..data.len()).map(|n| data[..n].to_vec()).collect();
        let mut trailing = data.clone();
        trailing.push(0);
        let mut flags = data.clone();
        flags[1] |= 0x80;
        let mut utf8 = data.clone();
        if let Some(last) = utf8.last_mut() {
            *last = 0xff;
        }
        bad.extend([trailing, flags, b"{\"id\":".to_vec(), vec![0x03]]);
        for b in bad {
            assert!(
                matches!(decode_session(&s.id, &b), Err(StoreError::Corrupt(_))),
                "{b:?}"
            );
        }
        let mut utf8_full = sessions()[0].clone();
        utf8_full.id_token = Secret::new("x");
        let mut data = encode_session(&utf8_full).expect("encode");
        if let Some(last) = data.last_mut() {
            *last = 0xff;
        }
        assert!(decode_session(&utf8_full.id, &data).is_err());
    }

    #[test]
    fn tombstones_decode() {
        assert_eq!(
            decode_tombstone("u10000001:-20").expect("decode"),
            (10_000_001, -20)
        );
        // An earlier version's whole second covers all of that second.
        assert_eq!(
            decode_tombstone("10:-20").expect("decode"),
            (10_999_999, -20)
        );
        assert_eq!(
            decode_tombstone(&format!("{}:1", i64::MAX)).expect("decode"),
            (i64::MAX, 1)
        );
        for bad in ["10", "u", "u:1", "uu1:2", "x1:2"] {
            assert!(decode_tombstone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ttls_are_positive() {
        assert_eq!(ttl_secs(100, 40), 60);
        assert_eq!(ttl_secs(100, 100), 1);
        assert_eq!(ttl_secs(i64::MIN, i64::MAX), 1);
    }
}
