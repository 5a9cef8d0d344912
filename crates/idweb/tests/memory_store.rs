//! The store conformance suite on [`idweb::MemoryStore`], and on a store
//! that keeps the trait's default `sign_out` and `is_jti_recorded` (the
//! order-based sign-out third-party stores get).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idweb::{
    LockToken, MemoryStore, PartitionKey, PartitionWrite, Session, SessionId, SessionLookup, Store,
    StoreError, StoreStats, StoredPartition, Tombstone,
};

idweb_store_conformance::store_conformance_tests!(|clock| async move {
    Arc::new(MemoryStore::with_clock(clock)) as Arc<dyn Store>
});

/// A store with only the required methods: each delegates to a
/// [`MemoryStore`]; `sign_out` and `is_jti_recorded` are the trait's defaults.
#[derive(Debug)]
struct DefaultsOnly(MemoryStore);

#[async_trait]
impl Store for DefaultsOnly {
    async fn put_session(&self, s: &Session) -> Result<(), StoreError> {
        self.0.put_session(s).await
    }
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.0.get_session(id).await
    }
    async fn remove_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.0.remove_session(id).await
    }
    async fn find_sessions(&self, l: &SessionLookup) -> Result<Vec<SessionId>, StoreError> {
        self.0.find_sessions(l).await
    }
    async fn session_count(&self) -> Result<u64, StoreError> {
        self.0.session_count().await
    }
    async fn list_sessions(
        &self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.0.list_sessions(after, limit).await
    }
    async fn get_partition(&self, k: &PartitionKey) -> Result<Option<StoredPartition>, StoreError> {
        self.0.get_partition(k).await
    }
    async fn write_partition(
        &self,
        k: &PartitionKey,
        w: PartitionWrite,
    ) -> Result<u64, StoreError> {
        self.0.write_partition(k, w).await
    }
    async fn remove_partition(&self, k: &PartitionKey) -> Result<bool, StoreError> {
        self.0.remove_partition(k).await
    }
    async fn put_tombstone(&self, t: &Tombstone) -> Result<(), StoreError> {
        self.0.put_tombstone(t).await
    }
    async fn get_tombstone(&self, s: &SessionLookup) -> Result<Option<Tombstone>, StoreError> {
        self.0.get_tombstone(s).await
    }
    async fn record_jti(&self, iss: &str, jti: &str, exp: i64) -> Result<bool, StoreError> {
        self.0.record_jti(iss, jti, exp).await
    }
    async fn forget_jti(&self, iss: &str, jti: &str) -> Result<(), StoreError> {
        self.0.forget_jti(iss, jti).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.0.stats().await
    }
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.0.try_lock(name, ttl).await
    }
    async fn unlock(&self, name: &str, token: &LockToken) -> Result<(), StoreError> {
        self.0.unlock(name, token).await
    }
}

mod default_sign_out {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        Arc::new(DefaultsOnly(MemoryStore::with_clock(clock))) as Arc<dyn Store>
    });
}
