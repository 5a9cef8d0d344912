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

/// `purge_expired` deletes expired sessions, tombstones and jti records, and
/// nothing live.
#[tokio::test]
async fn purge_drops_expired_records_and_keeps_live_ones() {
    use idweb::{Clock, ManualClock, MemoryStore, SessionLookup, Store, StoreError, Tombstone};
    use idweb_store_conformance::sample_session;
    use std::time::Duration;

    let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
    let store = MemoryStore::with_clock(clock.clone());
    let now = clock.unix_now();
    let iss = "https://iss.example";
    let tomb = |sid: &str, until: i64| {
        Tombstone::new(
            SessionLookup::ByProviderSession {
                iss: iss.into(),
                sid: sid.into(),
            },
            now,
            until,
        )
    };
    // Short-lived records, and long-lived ones.
    for i in 0..5 {
        store
            .put_tombstone(&tomb(&format!("old-{i}"), now + 60))
            .await
            .unwrap();
        assert!(
            store
                .record_jti(iss, &format!("old-{i}"), now + 60)
                .await
                .unwrap()
        );
    }
    store
        .put_tombstone(&tomb("live", now + 7200))
        .await
        .unwrap();
    assert!(store.record_jti(iss, "live", now + 7200).await.unwrap());
    let mut short = sample_session(iss, "alice", Some("s-short"), now);
    short.expires_at = now + 60;
    store.put_session(&short).await.unwrap();
    let long = sample_session(iss, "bob", Some("s-long"), now);
    store.put_session(&long).await.unwrap();
    assert_eq!(
        store.purge_expired().await.unwrap(),
        0,
        "nothing expired yet"
    );

    clock.advance(Duration::from_secs(61));
    let held = store.held();
    assert_eq!((held.tombstones, held.jtis, held.sessions), (6, 6, 2));
    assert_eq!(store.purge_expired().await.unwrap(), 5 + 5 + 1);
    let held = store.held();
    assert_eq!((held.tombstones, held.jtis, held.sessions), (1, 1, 1));

    // The live records still do their work.
    assert!(store.get_session(&long.id).await.unwrap().is_some());
    assert!(!store.record_jti(iss, "live", now + 7200).await.unwrap());
    let again = sample_session(iss, "carol", Some("live"), clock.unix_now());
    assert!(matches!(
        store.put_session(&again).await,
        Err(StoreError::SignedOut)
    ));
}

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
