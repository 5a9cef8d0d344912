//! A sign-out on one instance is acknowledged across instances: once it has
//! returned, no instance sharing the store answers a request from the
//! session, even instances whose link to Redis is slow.

mod common;

#[path = "../../idweb-test-support/src/relay.rs"]
mod relay;

use std::sync::Arc;
use std::time::Duration;

use common::scenarios::clock;
use idweb::Store;
use idweb_store_conformance::multi_instance;
use idweb_store_redis::{CachingStore, RedisStore};
use relay::DelayRelay;

/// How late the slow instances hear from Redis.
const DELAY: Duration = Duration::from_millis(40);

/// Sign-outs in all, and how many run at once (each with its own session
/// and its own clients).
const ROUNDS: usize = 500;
const AT_ONCE: usize = 10;

/// How long the clients go on after the sign-out returned: past the delay,
/// so that a slow instance that would serve from a stale cache is caught.
const AFTER: Duration = Duration::from_millis(70);

/// Deletes the prefix's keys when the test ends, however it ends.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        common::delete_keys(&common::redis_url(), &self.0);
    }
}

async fn instance(url: &str, prefix: &str) -> Arc<CachingStore> {
    let redis = RedisStore::open_with_prefix(url, prefix, clock())
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {url}: {e}"));
    multi_instance::caching(redis).await
}

/// Three instances with their caches on; two reach Redis through a relay
/// that delays what Redis sends them by 40 ms. Over 500 sign-outs through
/// the third, while clients keep asking the slow two for the session: no
/// request that started after the sign-out returned is answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_serves_a_session_once_its_sign_out_returned() {
    let prefix = common::unique_prefix();
    let _sweep = Sweep(prefix.clone());
    let direct = common::redis_url();
    let upstream = direct
        .strip_prefix("redis://")
        .expect("a redis:// URL")
        .trim_end_matches('/')
        .to_string();
    let relay_a = DelayRelay::start(&upstream, DELAY).await.expect("relay");
    let relay_b = DelayRelay::start(&upstream, DELAY).await.expect("relay");
    let c = instance(&direct, &prefix).await;
    let a = instance(&format!("redis://{}", relay_a.addr()), &prefix).await;
    let b = instance(&format!("redis://{}", relay_b.addr()), &prefix).await;

    multi_instance::no_instance_serves_a_session_once_its_sign_out_returned(
        c, a, b, ROUNDS, AT_ONCE, AFTER,
    )
    .await;
}

/// What acknowledgement costs a sign-out when every instance is healthy:
/// three instances on a direct link, 200 back-channel sign-outs through
/// one of them, timed with the acknowledgement step (`CachingStore`) and
/// without any cache (`RedisStore`). Prints the figures; asserts only that
/// each sign-out removed its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_acknowledgement_costs_a_sign_out_on_a_direct_link() {
    const SIGN_OUTS: usize = 200;
    let prefix = common::unique_prefix();
    let _sweep = Sweep(prefix.clone());
    let url = common::redis_url();
    let c = instance(&url, &prefix).await;
    let _others = [instance(&url, &prefix).await, instance(&url, &prefix).await];
    // Let every instance hear the others' heartbeats for a whole lease.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let plain: Arc<dyn Store> = Arc::new(c.inner().clone());
    let cached: Arc<dyn Store> = c.clone();
    for (name, store) in [("CachingStore", cached), ("RedisStore", plain)] {
        let (median, p99) = multi_instance::time_sign_outs(store, SIGN_OUTS).await;
        println!(
            "{name}: back-channel sign-out of one session, 3 instances: {median:?} (median), {p99:?} (p99)"
        );
    }
}
