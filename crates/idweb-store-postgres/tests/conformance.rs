//! The store conformance suite on [`PostgresStore`] and on its
//! [`CachingStore`] (the in-process cache live, kept coherent by
//! `LISTEN/NOTIFY`), each test in a schema of its own on the shared server,
//! dropped at the end.

mod common;

use std::sync::Arc;

mod postgres_store {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        let schema = common::unique_name("conf");
        let store = common::open(&schema, clock).await;
        common::Cleaned::wrap(Arc::new(store), schema)
    });
}

mod caching_store {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        let schema = common::unique_name("confl1");
        let store = common::open(&schema, clock).await;
        let cached = idweb_store_conformance::multi_instance::caching(store).await;
        common::Cleaned::wrap(cached, schema)
    });
}
