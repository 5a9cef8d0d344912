//! The purge task the app starts (`IDWEB_PURGE_INTERVAL`): tombstones and
//! logout-token ids left by back-channel logouts, and expired sessions, are
//! deleted from the memory store once expired (clock injected), over HTTP
//! against the dev IdP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use idweb::{ManualClock, MemoryStore};
use idweb_test_support::{AppOptions, browser, dev_idp, sign_in, start_app};

/// Generous bound on the wait for the task (not a speed check).
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_purge_task_deletes_expired_tombstones_jtis_and_sessions() {
    let idp = dev_idp(true).await;
    let clock = Arc::new(ManualClock::starting_now());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let app = start_app(
        &idp,
        AppOptions {
            clock: clock.clone(),
            store: Some(store.clone()),
            extra_env: vec![("IDWEB_PURGE_INTERVAL", "1".into())],
            ..AppOptions::default()
        },
    )
    .await;
    sign_in(&browser(), &app, "alice").await;
    // Valid logouts for sessions this app never had: each leaves a
    // tombstone and a jti record.
    for i in 0..5 {
        let token = idp.logout_token_for(&app.client_id, Some("ghost"), Some(&format!("gone-{i}")));
        let resp = reqwest::Client::new()
            .post(app.at("/backchannel-logout"))
            .form(&[("logout_token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let held = store.held();
    assert_eq!((held.tombstones, held.jtis, held.sessions), (5, 5, 1));

    // Past the tombstones' lifetime (session lifetime + skew + 1 h), which
    // is also past the session's and the jti records'.
    clock.advance(Duration::from_secs(12 * 3600 + 300 + 3600 + 1));
    let purged = tokio::time::timeout(PATIENCE, async {
        loop {
            let held = store.held();
            if (held.tombstones, held.jtis, held.sessions, held.partitions) == (0, 0, 0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(purged.is_ok(), "still held: {:?}", store.held());
}
