//! The conformance suite on PostgreSQL, each case in a schema of its own.

async fn fresh_store() -> factum::testing::postgres::TemporaryStore {
    factum::testing::postgres::TemporaryStore::new()
        .await
        .expect("a test store")
}

factum::conformance_tests!(setup = fresh_store);
