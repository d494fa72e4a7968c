//! The conformance suite on PostgreSQL, each case in a schema of its own.

mod support;

async fn fresh_store() -> support::TestStore {
    support::TestStore::new().await
}

factum::conformance_tests!(setup = fresh_store);
