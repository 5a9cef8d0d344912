//! Server-side sessions. The browser holds only an opaque random id.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::{hex, random_token, sha256};
use crate::secret::{Secret, constant_time_eq};

/// The opaque, random identifier of a session (256 bits). It is a bearer
/// credential: its `Debug` shows only a short, non-reversible fingerprint.
#[derive(Clone, Serialize, Deserialize, Hash, PartialEq, Eq)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// A new random session id.
    pub fn generate() -> Self {
        Self(random_token())
    }

    /// Wraps an id read from a store or a cookie.
    pub fn from_string(id: String) -> Self {
        Self(id)
    }

    /// The id itself. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// A short fingerprint, safe for logs.
    pub fn fingerprint(&self) -> String {
        hex(&sha256(self.0.as_bytes())[..6])
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &SessionId) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(#{})", self.fingerprint())
    }
}

/// A signed-in user's session, kept on the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// The session id (also the cookie's content, sealed).
    pub id: SessionId,
    /// The issuer that signed the user in.
    pub iss: String,
    /// The user's subject identifier at that issuer.
    pub sub: String,
    /// The provider's session id (`sid` claim), when it sent one.
    pub sid: Option<String>,
    /// The account id used to key the user's token cache.
    pub account_id: String,
    /// The user's display name, when the ID token had one.
    pub name: Option<String>,
    /// The ID token of the sign-in (used as `id_token_hint` at sign-out).
    pub id_token: Secret,
    /// When the session was created, in Unix **microseconds** (see
    /// [`Clock::unix_micros`](crate::Clock::unix_micros)): a sign-out by
    /// subject covers the sessions created up to its instant, so a sign-in
    /// right after a sign-out, in the same second, is not covered by it.
    pub created_at: i64,
    /// Unix seconds when the session ends.
    pub expires_at: i64,
    /// The version of the session's token-cache partition, when the store
    /// read it in the same step as the session (see
    /// [`Store::get_session_and_partition_version`](crate::Store::get_session_and_partition_version)):
    /// the first token lookup for the session, within
    /// [`PartitionRead::TTL`] of the read, then asks the store nothing
    /// more. Never stored.
    #[serde(skip)]
    pub(crate) partition_read: Option<PartitionRead>,
}

/// A partition version read together with its session (one snapshot),
/// for the request that read it: it answers for **one** token lookup
/// (shared by the session's clones), within [`TTL`](Self::TTL) of the
/// read. Any later lookup asks the store, as one without it does.
///
/// It takes no part in comparing sessions.
#[derive(Debug, Clone)]
pub(crate) struct PartitionRead {
    /// The version (`None`: the partition held no entries).
    version: Option<u64>,
    /// When it was read.
    at: std::time::Instant,
    used: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PartitionRead {
    /// How long after the read the version may answer: about a request.
    pub(crate) const TTL: std::time::Duration = std::time::Duration::from_millis(100);

    /// A version read at `at` (just now).
    pub(crate) fn new(version: Option<u64>, at: std::time::Instant) -> Self {
        Self {
            version,
            at,
            used: std::sync::Arc::default(),
        }
    }

    /// The version, the first time it is asked for within
    /// [`TTL`](Self::TTL) of the read; `None` after that.
    pub(crate) fn take(&self) -> Option<Option<u64>> {
        if self.at.elapsed() >= Self::TTL
            || self.used.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return None;
        }
        Some(self.version)
    }
}

impl PartialEq for PartitionRead {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PartitionRead {}

impl Session {
    /// A new session with a fresh random id, for `sub` at `iss`, created at
    /// `created_at` (Unix microseconds) and ending at `expires_at` (Unix
    /// seconds). The account id
    /// is [`account_id_for`]`(iss, sub)`.
    pub fn new(
        iss: impl Into<String>,
        sub: impl Into<String>,
        sid: Option<String>,
        id_token: Secret,
        created_at: i64,
        expires_at: i64,
    ) -> Self {
        let (iss, sub) = (iss.into(), sub.into());
        Self {
            id: SessionId::generate(),
            account_id: account_id_for(&iss, &sub),
            iss,
            sub,
            sid,
            name: None,
            id_token,
            created_at,
            expires_at,
            partition_read: None,
        }
    }

    /// Whether the session has ended at `now` (Unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }

    /// Every claim of the ID token the session was created with (its
    /// signature and claims were checked at sign-in); empty when the session
    /// holds no readable ID token (e.g. a session as the store keeps it, with
    /// the ID token still sealed).
    pub fn id_token_claims(&self) -> serde_json::Map<String, serde_json::Value> {
        use base64::Engine;
        let payload = self.id_token.secret().split('.').nth(1).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .unwrap_or_default()
    }
}

/// A stable account id for providers that do not send Microsoft's
/// `client_info`: `uid.utid`, where `uid` is derived from `sub` and `utid`
/// from `iss` (lower-case hexadecimal, as MSAL keys are lower-cased).
pub fn account_id_for(iss: &str, sub: &str) -> String {
    let uid = hex(&sha256(format!("sub\0{sub}").as_bytes())[..16]);
    let utid = hex(&sha256(format!("iss\0{iss}").as_bytes())[..16]);
    format!("{uid}.{utid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_debug_hides_the_id() {
        let id = SessionId::generate();
        let shown = format!("{id:?}");
        assert!(!shown.contains(id.secret()), "{shown}");
        assert!(id.matches(&id.clone()));
        assert!(!id.matches(&SessionId::generate()));
    }

    #[test]
    fn id_token_claims_are_read_from_the_payload() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"alice","roles":["admin"],"email":"a@example.com"}"#);
        let mut s = Session::new(
            "https://idp.example.com",
            "alice",
            None,
            Secret::new(""),
            0,
            10,
        );
        s.id_token = Secret::new(format!("e30.{payload}.sig"));
        let claims = s.id_token_claims();
        assert_eq!(claims["email"], "a@example.com");
        assert_eq!(claims["roles"][0], "admin");
        s.id_token = Secret::new("sealed:AAAA");
        assert!(s.id_token_claims().is_empty());
    }

    #[test]
    fn account_ids_are_stable_and_distinct() {
        let a = account_id_for("https://idp.example.com", "alice");
        assert_eq!(a, account_id_for("https://idp.example.com", "alice"));
        assert_ne!(a, account_id_for("https://idp.example.com", "bob"));
        assert_ne!(a, account_id_for("https://other.example.com", "alice"));
        assert_eq!(a, a.to_lowercase());
        assert_eq!(a.split('.').count(), 2);
    }
}
