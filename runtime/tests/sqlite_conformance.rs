//! The conformance suite on the SQLite store (a private in-memory database per case).

async fn fresh_store() -> factum::store::SqliteStore {
    let store = factum::store::SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    store
}

factum::conformance_tests!(setup = fresh_store);
