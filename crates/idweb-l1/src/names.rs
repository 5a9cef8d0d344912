//! The names of L1 entries, which are also the words of invalidation
//! messages. A store that composes an invalidation itself (in a script or a
//! SQL statement) must build the same words; each function says how.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idweb::{PartitionKey, Session, SessionId, SessionLookup};

/// The tag of a session: base64url (no padding) of the SHA-256 of its id.
/// Names and messages never carry a session id (a bearer credential).
pub fn session_tag(id: &SessionId) -> String {
    B64.encode(digest(&SHA256, id.secret().as_bytes()).as_ref())
}

/// The tag of a lookup (and of the tombstone with the same selector):
/// `sid:B64(ISS).B64(SID)` or `sub:B64(ISS).B64(SUB)`, base64url without
/// padding of the UTF-8 bytes. `None` for a kind of lookup this version
/// does not know.
pub fn selector_tag(lookup: &SessionLookup) -> Option<String> {
    match lookup {
        SessionLookup::ByProviderSession { iss, sid } => {
            Some(format!("sid:{}.{}", B64.encode(iss), B64.encode(sid)))
        }
        SessionLookup::BySubject { iss, sub } => {
            Some(format!("sub:{}.{}", B64.encode(iss), B64.encode(sub)))
        }
        _ => None,
    }
}

/// The selector tags of a session: `(iss, sub)` always, `(iss, sid)` when it
/// has a sid.
pub fn session_selectors(s: &Session) -> Vec<String> {
    let mut tags = vec![format!("sub:{}.{}", B64.encode(&s.iss), B64.encode(&s.sub))];
    if let Some(sid) = &s.sid {
        tags.push(format!("sid:{}.{}", B64.encode(&s.iss), B64.encode(sid)));
    }
    tags
}

/// The word of a session: `s:TAG`.
pub fn session_word(tag: &str) -> String {
    format!("s:{tag}")
}

/// The word of a session's partition: `p:s:TAG`.
pub fn session_partition_word(tag: &str) -> String {
    format!("p:s:{tag}")
}

/// The word of a partition: `p:s:TAG` for a session's, `p:STORAGE_KEY` for
/// an app partition. `None` for a kind of key this version does not know.
pub fn partition_word(key: &PartitionKey) -> Option<String> {
    match key {
        PartitionKey::Session(id) => Some(session_partition_word(&session_tag(id))),
        PartitionKey::App { .. } => Some(format!("p:{}", key.storage_key())),
        _ => None,
    }
}

/// An invalidation message: the sender's origin word, then each word, one
/// per line (`ORIGIN\nWORD\nWORD...`), built in one allocation.
pub fn message<S: AsRef<str>>(origin: &str, words: &[S]) -> String {
    let len = origin.len() + words.iter().map(|w| w.as_ref().len() + 1).sum::<usize>();
    let mut m = String::with_capacity(len);
    m.push_str(origin);
    for w in words {
        m.push('\n');
        m.push_str(w.as_ref());
    }
    m
}

/// The word of a tombstone: `t:SELECTOR_TAG`; it drops the cached sessions
/// the selector names, and their partitions.
pub fn tombstone_word(selector_tag: &str) -> String {
    format!("t:{selector_tag}")
}
