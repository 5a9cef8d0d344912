//! The store conformance suite on [`RedisStore`] and on [`CachingStore`]
//! (with its in-process cache live), each test under its own key prefix on
//! the shared Redis.

mod common;

use std::sync::Arc;
use std::time::Duration;

use idweb_store_redis::{CachingStore, RedisStore};

mod redis_store {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        let prefix = common::unique_prefix();
        let store: RedisStore = common::open(&prefix, clock).await;
        common::Cleaned::wrap(Arc::new(store), common::redis_url(), prefix)
    });
}

mod caching_store {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        let prefix = common::unique_prefix();
        let store = CachingStore::new(common::open(&prefix, clock).await).expect("cache");
        assert!(
            store.wait_until_active(Duration::from_secs(5)).await,
            "the invalidation subscription did not come up"
        );
        common::Cleaned::wrap(Arc::new(store), common::redis_url(), prefix)
    });
}
