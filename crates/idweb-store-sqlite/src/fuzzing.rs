//! Entry points for the fuzz targets in `fuzz/` and their corpus replay
//! (the `fuzzing` feature; not part of the API).

/// A `sessions.data` value read back from SQLite: decoded as the store
/// does; what decodes is encoded as the store writes it and decodes to the
/// same session.
pub fn session_row(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(session) = crate::ops::decode_session(text) else {
        return;
    };
    let Ok(again) = serde_json::to_string(&session) else {
        panic!("a decoded session does not encode");
    };
    match crate::ops::decode_session(&again) {
        Ok(back) => assert_eq!(back, session, "a session row round-trips"),
        Err(e) => panic!("an encoded session row does not decode: {e}"),
    }
}
