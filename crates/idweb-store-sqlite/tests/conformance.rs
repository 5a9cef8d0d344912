//! The store conformance suite on [`SqliteStore`]: in a private in-memory
//! database per test, and in a database file per test.

mod common;

use std::sync::Arc;

use idweb_store_sqlite::SqliteStore;

mod in_memory {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        Arc::new(SqliteStore::open_in_memory_with_clock(clock).await.unwrap())
            as Arc<dyn idweb::Store>
    });
}

mod on_file {
    use super::*;

    idweb_store_conformance::store_conformance_tests!(|clock| async move {
        let path = common::db_path("conformance");
        Arc::new(SqliteStore::open_with_clock(&path, clock).await.unwrap()) as Arc<dyn idweb::Store>
    });
}
