//! A store wrapper for the faults a real store cannot be made to produce on
//! demand: it delegates every call to a real store, but can be told to fail
//! (as a store that went down) or to hold partition writes at a gate (to
//! interleave a refresh with a sign-out deliberately).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idweb::{
    LockToken, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup, SignOutOutcome,
    SignOutRequest, Store, StoreError, StoreStats, StoredPartition, Tombstone,
};
use tokio::sync::{Mutex, Notify};

/// A gate that holds the next partition write until released.
#[derive(Debug, Default)]
pub struct Gate {
    /// Notified when a write reaches the gate.
    pub reached: Notify,
    /// Notify to let the write through.
    pub release: Notify,
}

/// A real store with a fault switch and a write gate.
#[derive(Debug)]
pub struct ControlledStore {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
    gate: Mutex<Option<Arc<Gate>>>,
}

impl ControlledStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
            gate: Mutex::new(None),
        }
    }

    /// Makes every call fail as an unavailable store would (or work again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Holds the next `write_partition` at the returned gate.
    pub async fn gate_next_partition_write(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        *self.gate.lock().await = Some(gate.clone());
        gate
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the test switched the store off".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for ControlledStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_session(session).await
    }
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.check()?;
        self.inner.get_session(id).await
    }

    async fn get_session_and_partition_version(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Session, Option<Option<u64>>)>, StoreError> {
        self.check()?;
        self.inner.get_session_and_partition_version(id).await
    }
    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.check()?;
        self.inner.remove_session(id).await
    }
    async fn find_sessions(&self, lookup: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        self.check()?;
        self.inner.find_sessions(lookup).await
    }
    async fn session_count(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.session_count().await
    }
    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.check()?;
        self.inner.list_sessions(after, limit).await
    }
    async fn get_partition(
        &self,
        key: &PartitionKey,
    ) -> Result<Option<StoredPartition>, StoreError> {
        self.check()?;
        self.inner.get_partition(key).await
    }
    async fn write_partition(
        &self,
        key: &PartitionKey,
        write: PartitionWrite,
    ) -> Result<u64, StoreError> {
        let gate = self.gate.lock().await.take();
        if let Some(gate) = gate {
            gate.reached.notify_one();
            gate.release.notified().await;
        }
        self.check()?;
        self.inner.write_partition(key, write).await
    }
    async fn remove_partition(&self, key: &PartitionKey) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.remove_partition(key).await
    }
    async fn put_tombstone(&self, tombstone: &Tombstone) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_tombstone(tombstone).await
    }
    async fn get_tombstone(
        &self,
        selector: &SessionLookup,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.check()?;
        self.inner.get_tombstone(selector).await
    }
    async fn record_jti(&self, iss: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.record_jti(iss, jti, expires_at).await
    }
    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.forget_jti(iss, jti).await
    }
    async fn is_jti_recorded(&self, iss: &str, jti: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.is_jti_recorded(iss, jti).await
    }
    async fn sign_out(&self, request: &SignOutRequest) -> Result<SignOutOutcome, StoreError> {
        self.check()?;
        self.inner.sign_out(request).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.check()?;
        self.inner.stats().await
    }
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.check()?;
        self.inner.try_lock(name, ttl).await
    }
    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        self.check()?;
        self.inner.unlock(name, token).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.purge_expired().await
    }
}
