//! The [`Store`] trait — where sessions live — and [`MemoryStore`].

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::session::{Session, SessionId};
use crate::time::{Clock, SystemClock};

/// A boxed error from a store backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or failed; the operation may or may
    /// not have happened and can be retried.
    #[error("the session store is unavailable")]
    Unavailable(#[source] BoxError),
    /// Data read from the backend could not be decoded.
    #[error("the session store holds data idweb cannot read")]
    Corrupt(#[source] BoxError),
}

/// How to find sessions without their id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionLookup {
    /// Sessions of one provider session: `(iss, sid)`.
    ByProviderSession {
        /// Issuer.
        iss: String,
        /// The provider's `sid`.
        sid: String,
    },
    /// All sessions of one user: `(iss, sub)`.
    BySubject {
        /// Issuer.
        iss: String,
        /// Subject.
        sub: String,
    },
}

/// Where sessions live.
///
/// # Contract
///
/// Every implementation passes the conformance suite in the
/// `idweb-store-conformance` crate. In short:
///
/// - [`put_session`](Store::put_session) inserts or replaces a session and its
///   index entries `(iss, sid)` and `(iss, sub)` atomically: a reader sees the
///   session and its index entries together or not at all.
/// - [`get_session`](Store::get_session) returns `None` for an unknown id and
///   for a session whose `expires_at` has passed (by the store's clock).
/// - [`remove_session`](Store::remove_session) removes the session and its
///   index entries atomically and returns what it removed; removing a missing
///   session is not an error.
/// - [`find_sessions`](Store::find_sessions) returns the ids of live sessions
///   matching the lookup, at a cost proportional to the number of matches,
///   not to the size of the store.
/// - Errors of the backend are [`StoreError::Unavailable`] (never a panic, never
///   a silent success).
#[async_trait]
pub trait Store: Debug + Send + Sync + 'static {
    /// Inserts or replaces `session` and its index entries.
    async fn put_session(&self, session: &Session) -> Result<(), StoreError>;

    /// The live session with this id, if any.
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Removes the session and its index entries; returns it if it existed.
    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Ids of the live sessions matching `lookup`.
    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError>;

    /// The number of live sessions (for statistics; may be approximate on
    /// distributed stores).
    async fn session_count(&self) -> Result<u64, StoreError>;
}

/// A store in process memory: for development, tests and single-instance apps
/// that accept losing sessions on restart.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    sessions: HashMap<SessionId, Session>,
    index: HashMap<SessionLookup, HashSet<SessionId>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store using the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store using `clock` to decide expiry.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemoryInner::default())),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn index_keys(s: &Session) -> Vec<SessionLookup> {
    let mut keys = vec![SessionLookup::BySubject {
        iss: s.iss.clone(),
        sub: s.sub.clone(),
    }];
    if let Some(sid) = &s.sid {
        keys.push(SessionLookup::ByProviderSession {
            iss: s.iss.clone(),
            sid: sid.clone(),
        });
    }
    keys
}

impl MemoryInner {
    fn unindex(&mut self, s: &Session) {
        for key in index_keys(s) {
            if let Some(set) = self.index.get_mut(&key) {
                set.remove(&s.id);
                if set.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
    }

    fn remove(&mut self, id: &SessionId) -> Option<Session> {
        let s = self.sessions.remove(id)?;
        self.unindex(&s);
        Some(s)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.remove(&session.id);
        for key in index_keys(session) {
            inner
                .index
                .entry(key)
                .or_default()
                .insert(session.id.clone());
        }
        inner.sessions.insert(session.id.clone(), session.clone());
        Ok(())
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let now = self.clock.unix_now();
        let mut inner = self.lock();
        match inner.sessions.get(id) {
            Some(s) if s.is_expired(now) => {
                inner.remove(id);
                Ok(None)
            }
            Some(s) => Ok(Some(s.clone())),
            None => Ok(None),
        }
    }

    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().remove(id))
    }

    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        let now = self.clock.unix_now();
        let inner = self.lock();
        Ok(inner
            .index
            .get(lookup)
            .map(|ids| {
                ids.iter()
                    .filter(|id| inner.sessions.get(*id).is_some_and(|s| !s.is_expired(now)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let now = self.clock.unix_now();
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| !s.is_expired(now))
            .count() as u64)
    }
}
