//! The conformance suite on the in-memory store.

async fn fresh_store() -> factum::MemoryStore {
    factum::MemoryStore::new()
}

factum::conformance_tests!(setup = fresh_store);
