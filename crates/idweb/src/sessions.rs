//! [`Sessions`]: server-side sessions as the app sees them — created at
//! sign-in, found from the browser's sealed cookie, stored with their ID
//! token encrypted.

use std::sync::Arc;

use crate::crypto::Sealer;
use crate::keys::CacheKeys;
use crate::secret::Secret;
use crate::session::{Session, SessionId};
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
        }
    }

    /// The sealed cookie value for a session id.
    pub fn cookie_value(&self, id: &SessionId) -> Secret {
        Secret::new(self.sealer.seal(SESSION_PURPOSE, id.secret().as_bytes()))
    }

    /// The session id inside a cookie value, if the cookie is genuine.
    pub fn id_from_cookie(&self, cookie_value: &str) -> Option<SessionId> {
        let raw = self.sealer.open(SESSION_PURPOSE, cookie_value)?;
        String::from_utf8(raw).ok().map(SessionId::from_string)
    }

    /// The live session a cookie value points to, if any.
    pub async fn from_cookie(&self, cookie_value: &str) -> Result<Option<Session>, StoreError> {
        let Some(id) = self.id_from_cookie(cookie_value) else {
            return Ok(None);
        };
        self.get(&id).await
    }

    /// The live session with this id, if any (its ID token decrypted).
    pub async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let Some(stored) = self.store.get_session(id).await? else {
            return Ok(None);
        };
        let now = self.clock.unix_now();
        if stored.is_expired(now) || !stored.id.matches(id) {
            return Ok(None);
        }
        self.opened(stored).map(Some)
    }

    /// Stores a new session, its ID token encrypted with the cache keys so
    /// that the store holds no token in clear.
    pub(crate) async fn put(&self, session: &Session) -> Result<(), StoreError> {
        self.store.put_session(&self.sealed(session)).await
    }

    /// Removes a session (and its partition) without a sign-out record: for
    /// undoing a half-made sign-in.
    pub(crate) async fn discard(&self, id: &SessionId) -> Result<(), StoreError> {
        self.store.remove_session(id).await.map(|_| ())
    }

    fn sealed(&self, session: &Session) -> Session {
        seal_session(&self.keys, session)
    }

    fn opened(&self, stored: Session) -> Result<Session, StoreError> {
        open_session(&self.keys, stored)
    }
}
