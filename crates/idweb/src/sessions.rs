//! [`Sessions`]: server-side sessions as the app sees them — created at
//! sign-in, found from the browser's sealed cookie, stored with their ID
//! token encrypted.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::crypto::Sealer;
use crate::keys::CacheKeys;
use crate::secret::Secret;
use crate::session::{PartitionRead, Session, SessionId};
use crate::store::{Store, StoreError};
use crate::time::Clock;
use crate::token_cache::{open_session, seal_session};

pub(crate) const SESSION_PURPOSE: &str = "idweb session v1";

/// Server-side sessions: the browser holds only a sealed random id.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    keys: Arc<CacheKeys>,
    clock: Arc<dyn Clock>,
    /// foldhash, as `cookies`: the keys are random session ids.
    opened: Arc<Mutex<hashbrown::HashMap<SessionId, Opened>>>,
    cookies: Arc<Mutex<hashbrown::HashMap<SealedCookie, SessionId>>>,
}

/// A session cookie's value that opened (was sealed by this app), as the key
/// of the session id inside it: the request path opens each browser's
/// cookie once, not on every request. A cookie's content never changes
/// meaning, so nothing makes an entry stale: whether its session still
/// lives is the store's answer, asked on every request as before. Only
/// genuine cookies are kept (a forged one never opens), at most
/// [`MAX_OPENED`]; keys are compared in constant time.
struct SealedCookie(Box<str>);

impl PartialEq for SealedCookie {
    fn eq(&self, other: &Self) -> bool {
        crate::secret::constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for SealedCookie {}

impl std::fmt::Debug for SealedCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedCookie(..)")
    }
}

impl std::hash::Hash for SealedCookie {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A cookie value to look up without copying it (hashes as [`SealedCookie`]).
#[derive(Hash)]
struct CookieRef<'a>(&'a str);

impl hashbrown::Equivalent<SealedCookie> for CookieRef<'_> {
    fn equivalent(&self, key: &SealedCookie) -> bool {
        crate::secret::constant_time_eq(self.0.as_bytes(), key.0.as_bytes())
    }
}

/// How long an opened ID token is reused: its plaintext is never kept
/// longer than this, whatever happens to the session meanwhile.
const OPENED_TTL: Duration = Duration::from_secs(60);

/// Most opened ID tokens kept; past it the expired ones are dropped, and if
/// none had expired, all of them.
const MAX_OPENED: usize = 10_000;

/// A session's ID token as the store returned it (sealed) and opened.
/// Reused only while the store returns the very same sealed text for the
/// session: a session the store no longer returns (signed out, expired,
/// replaced) never gets it.
struct Opened {
    sealed: Secret,
    plain: Secret,
    at: Instant,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

impl Sessions {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        keys: Arc<CacheKeys>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            sealer,
            keys,
            clock,
            opened: Arc::default(),
            cookies: Arc::default(),
        }
    }

    /// The sealed cookie value for a session id.
    pub fn cookie_value(&self, id: &SessionId) -> Secret {
        Secret::new(self.sealer.seal(SESSION_PURPOSE, id.secret().as_bytes()))
    }

    /// The session id inside a cookie value, if the cookie is genuine.
    pub fn id_from_cookie(&self, cookie_value: &str) -> Option<SessionId> {
        if let Some(id) = self
            .cookies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&CookieRef(cookie_value))
        {
            return Some(id.clone());
        }
        let raw = self.sealer.open(SESSION_PURPOSE, cookie_value)?;
        let id = String::from_utf8(raw).ok().map(SessionId::from_string)?;
        let mut cookies = self.cookies.lock().unwrap_or_else(PoisonError::into_inner);
        if cookies.len() >= MAX_OPENED {
            cookies.clear();
        }
        cookies.insert(SealedCookie(cookie_value.into()), id.clone());
        Some(id)
    }

    /// The live session a cookie value points to, if any.
    pub async fn from_cookie(&self, cookie_value: &str) -> Result<Option<Session>, StoreError> {
        let Some(id) = self.id_from_cookie(cookie_value) else {
            return Ok(None);
        };
        self.get(&id).await
    }

    /// The live session with this id, if any (its ID token decrypted).
    ///
    /// Where the store reads it in the same step, the session carries the
    /// version of its token-cache partition, so that the first token lookup
    /// for it, right after, asks the store nothing more
    /// ([`Store::get_session_and_partition_version`]).
    pub async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let Some((stored, version)) = self.store.get_session_and_partition_version(id).await?
        else {
            return Ok(None);
        };
        let now = self.clock.unix_now();
        if stored.is_expired(now) || !stored.id.matches(id) {
            return Ok(None);
        }
        let at = Instant::now();
        let mut session = self.opened(stored, at)?;
        session.partition_read = version.map(|v| PartitionRead::new(v, at));
        Ok(Some(session))
    }

    /// Stores a new session, its ID token encrypted with the cache keys so
    /// that the store holds no token in clear.
    pub(crate) async fn put(&self, session: &Session) -> Result<(), StoreError> {
        self.store.put_session(&self.sealed(session)).await
    }

    /// Removes a session (and its partition) without a sign-out record: for
    /// undoing a half-made sign-in.
    pub(crate) async fn discard(&self, id: &SessionId) -> Result<(), StoreError> {
        self.forget(id);
        self.store.remove_session(id).await.map(|_| ())
    }

    fn sealed(&self, session: &Session) -> Session {
        seal_session(&self.keys, session)
    }

    /// `stored` with its ID token opened: decrypted, or — on the request
    /// path, where the same session comes back again and again — the
    /// plaintext of the same sealed text opened less than [`OPENED_TTL`] ago.
    fn opened(&self, mut stored: Session, now: Instant) -> Result<Session, StoreError> {
        {
            let memo = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(o) = memo.get(&stored.id)
                && now.duration_since(o.at) < OPENED_TTL
                && (o.sealed.same_buffer(&stored.id_token)
                    || o.sealed.secret() == stored.id_token.secret())
            {
                stored.id_token = o.plain.clone();
                return Ok(stored);
            }
        }
        let sealed = stored.id_token.clone();
        let session = open_session(&self.keys, stored)?;
        if !sealed.same_buffer(&session.id_token) {
            let mut memo = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
            if memo.len() >= MAX_OPENED {
                memo.retain(|_, o| now.duration_since(o.at) < OPENED_TTL);
                if memo.len() >= MAX_OPENED {
                    memo.clear();
                }
            }
            memo.insert(
                session.id.clone(),
                Opened {
                    sealed,
                    plain: session.id_token.clone(),
                    at: now,
                },
            );
        }
        Ok(session)
    }

    /// Forgets the opened ID token of `id` (its session is gone).
    fn forget(&self, id: &SessionId) {
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::time::SystemClock;

    fn sessions() -> (Sessions, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let s = Sessions::new(
            store.clone(),
            Arc::new(Sealer::new(&[7u8; 64])),
            Arc::new(CacheKeys::generate()),
            Arc::new(SystemClock),
        );
        (s, store)
    }

    fn session(id_token: &str) -> Session {
        let now = SystemClock.unix_now();
        Session::new(
            "https://idp",
            "alice",
            None,
            Secret::new(id_token),
            now,
            now + 3600,
        )
    }

    #[tokio::test]
    async fn a_cookie_opens_to_its_session_id_once_and_forged_ones_never() {
        let (sessions, store) = sessions();
        let session = session("header.first.sig");
        sessions.put(&session).await.unwrap();
        let cookie = sessions.cookie_value(&session.id);
        for _ in 0..2 {
            let id = sessions.id_from_cookie(cookie.secret()).unwrap();
            assert!(id.matches(&session.id));
        }
        assert_eq!(sessions.cookies.lock().unwrap().len(), 1);
        // Another sealing of the same id is another genuine cookie.
        let other = sessions.cookie_value(&session.id);
        assert!(
            sessions
                .id_from_cookie(other.secret())
                .unwrap()
                .matches(&session.id)
        );
        // A changed cookie does not open and is not kept.
        let mut forged = cookie.secret().to_string();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(sessions.id_from_cookie(&forged).is_none());
        assert_eq!(sessions.cookies.lock().unwrap().len(), 2);
        assert!(!format!("{sessions:?}").contains(cookie.secret()));
        // The session's end is the store's answer, whatever the memo holds.
        store.remove_session(&session.id).await.unwrap();
        assert!(
            sessions
                .from_cookie(cookie.secret())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_opened_id_token_is_reused_only_for_the_same_sealed_text() {
        let (sessions, store) = sessions();
        let first = session("header.first.sig");
        sessions.put(&first).await.unwrap();
        let stored = store.get_session(&first.id).await.unwrap().unwrap();
        assert_ne!(
            stored.id_token.secret(),
            "header.first.sig",
            "sealed in the store"
        );

        for _ in 0..2 {
            let got = sessions.get(&first.id).await.unwrap().unwrap();
            assert_eq!(got.id_token.secret(), "header.first.sig");
        }
        // The same session id stored again with another ID token: the memo
        // holds the old one's sealed text, which no longer matches.
        let mut second = session("header.second.sig");
        second.id = first.id.clone();
        sessions.put(&second).await.unwrap();
        let got = sessions.get(&first.id).await.unwrap().unwrap();
        assert_eq!(got.id_token.secret(), "header.second.sig");

        // Gone from the store: gone, whatever the memo holds.
        store.remove_session(&first.id).await.unwrap();
        assert!(sessions.get(&first.id).await.unwrap().is_none());
    }
}
