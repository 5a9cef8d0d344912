//! Entry points for the fuzz targets in `fuzz/` and their corpus replay
//! (the `fuzzing` feature; not part of the API).

use idweb::SessionId;

use crate::codec;

/// Bytes read back from Redis: decoded as a cache entry, a tombstone and a
/// session record (compact or JSON). Whatever decodes is encoded again and
/// must decode to the same value.
pub fn redis_values(data: &[u8]) {
    if let Ok(entry) = codec::decode_entry("key".into(), data) {
        let again = codec::encode_entry(&entry);
        match codec::decode_entry("key".into(), &again) {
            Ok(back) => assert_eq!(back, entry, "an entry round-trips"),
            Err(e) => panic!("an encoded entry does not decode: {e}"),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = codec::decode_tombstone(text);
    }
    let _ = codec::parse_i64(data);
    let id = SessionId::from_string("fuzz-session".into());
    if let Ok(session) = codec::decode_session(&id, data) {
        let Ok(record) = codec::encode_session(&session) else {
            return;
        };
        match codec::decode_session(&session.id, &record) {
            Ok(back) => assert_eq!(back, session, "a session round-trips"),
            Err(e) => panic!("an encoded session does not decode: {e}"),
        }
    }
}
