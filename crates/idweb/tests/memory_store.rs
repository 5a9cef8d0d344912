//! The store conformance suite on [`idweb::MemoryStore`].

use std::sync::Arc;

idweb_store_conformance::store_conformance_tests!(|clock| async move {
    Arc::new(idweb::MemoryStore::with_clock(clock)) as Arc<dyn idweb::Store>
});
