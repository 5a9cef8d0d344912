//! The store conformance suite on [`PostgresStore`], each test in a schema
//! of its own on the shared server, dropped at the end.

mod common;

use std::sync::Arc;

idweb_store_conformance::store_conformance_tests!(|clock| async move {
    let schema = common::unique_name("conf");
    let store = common::open(&schema, clock).await;
    common::Cleaned::wrap(Arc::new(store), schema)
});
