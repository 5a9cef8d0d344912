//! [`Sessions`]: server-side sessions as the app sees them — created at
//! sign-in, found from the browser's sealed cookie, stored with their ID
//! token encrypted.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::{Sealer, b64url};
use crate::keys::CacheKeys;
use crate::secret::Secret;
use crate::session::{Session, SessionId};
use crate::store::{Store, StoreError};
use crate::time::Clock;

const SESSION_PURPOSE: &str = "idweb session v1";

/// Marks an ID token stored encrypted.
const SEALED_PREFIX: &str = "sealed:";

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
        let aad = id_token_aad(&session.id);
        let sealed = self
            .keys
            .seal(aad.as_bytes(), session.id_token.secret().as_bytes());
        let mut stored = session.clone();
        stored.id_token = Secret::new(format!("{SEALED_PREFIX}{}", b64url(&sealed)));
        stored
    }

    fn opened(&self, mut stored: Session) -> Result<Session, StoreError> {
        let Some(b64) = stored.id_token.secret().strip_prefix(SEALED_PREFIX) else {
            return Ok(stored);
        };
        let raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| StoreError::Corrupt(Box::new(e)))?;
        let plain = self
            .keys
            .open(id_token_aad(&stored.id).as_bytes(), &raw)
            .map_err(|e| StoreError::Corrupt(Box::new(e)))?;
        stored.id_token =
            Secret::new(String::from_utf8(plain).map_err(|e| StoreError::Corrupt(Box::new(e)))?);
        Ok(stored)
    }
}

fn id_token_aad(id: &SessionId) -> String {
    format!("session id_token\0{}", id.secret())
}
