//! The store conformance suite on [`idweb::MemoryStore`].

use std::sync::Arc;

idweb_store_conformance::store_conformance_tests!(|clock| async move {
    Arc::new(idweb::MemoryStore::with_clock(clock)) as Arc<dyn idweb::Store>
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
