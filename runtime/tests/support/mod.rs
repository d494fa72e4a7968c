//! A PostgreSQL store in a schema of its own, dropped when the test ends (even when it fails).
#![allow(dead_code)]

use std::ops::{Deref, RangeBounds};

use factum::feed::FeedWakeups;
use factum::store::PostgresStore;
use factum::{
    EventStore, ExpectedVersion, FeedBatch, FeedQuery, HistoryItem, KnownHead, NewEvent,
    RecordedEvent, Snapshot, StreamEvent,
};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The server the tests use: `DATABASE_URL`, as `./scripts/test` sets it, or the local default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A pool whose connections carry the schema as their application name, so that the cleanup
/// can end them (and any transaction a failed test left open).
async fn pool(url: &str, schema: &str, connections: u32) -> sqlx::PgPool {
    let options: PgConnectOptions = url.parse().expect("a valid DATABASE_URL");
    PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options.application_name(schema))
        .await
        .unwrap_or_else(|error| {
            panic!("cannot reach PostgreSQL at {url} ({error}); run the tests with ./scripts/test, which finds or starts a server")
        })
}

/// A migrated store in a fresh schema.
pub struct TestStore {
    store: PostgresStore,
    url: String,
}

impl TestStore {
    pub async fn new() -> Self {
        Self::with_pool_size(8).await
    }

    pub async fn with_pool_size(connections: u32) -> Self {
        let url = database_url();
        let schema = format!("factum_test_{}", uuid::Uuid::now_v7().simple());
        let pool = pool(&url, &schema, connections).await;
        let store = PostgresStore::with_schema(pool, &schema).expect("a valid schema name");
        store.migrate().await.expect("the migrations apply");
        Self { store, url }
    }

    /// A second store on the same schema, with its own pool (another process, as it were).
    pub async fn another_client(&self) -> PostgresStore {
        let pool = pool(&self.url, self.store.schema(), 8).await;
        PostgresStore::with_schema(pool, self.store.schema()).expect("a valid schema name")
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Deref for TestStore {
    type Target = PostgresStore;

    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.store.schema().to_owned();
        let drop_schema = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        // Drop runs inside the test's runtime, which must not block: clean up from a thread of
        // its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            runtime.block_on(async move {
                let mut connection = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&schema)
                .execute(&mut connection)
                .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema))
                    .execute(&mut connection)
                    .await?;
                connection.close().await
            })
        });
        if let Ok(Err(error)) = cleanup.join() {
            eprintln!("could not drop the test schema: {error}");
        }
    }
}

impl EventStore for TestStore {
    async fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> factum::Result<Vec<RecordedEvent>> {
        self.store
            .append(stream_id, aggregate_type, expected, events)
            .await
    }

    async fn append_after(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        head: KnownHead,
        events: Vec<NewEvent>,
    ) -> factum::Result<Vec<RecordedEvent>> {
        self.store
            .append_after(stream_id, aggregate_type, head, events)
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> factum::Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream_id, versions).await
    }

    async fn read_feed(&self, query: &FeedQuery) -> factum::Result<FeedBatch> {
        self.store.read_feed(query).await
    }

    async fn read_stream_events(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> factum::Result<Vec<StreamEvent>> {
        self.store.read_stream_events(stream_id, versions).await
    }

    async fn replay_history<F>(
        &self,
        stream_id: &str,
        with_snapshot: bool,
        visit: F,
    ) -> factum::Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> factum::Result<()> + Send,
    {
        self.store
            .replay_history(stream_id, with_snapshot, visit)
            .await
    }

    async fn stream_version(&self, stream_id: &str) -> factum::Result<u64> {
        self.store.stream_version(stream_id).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> factum::Result<Option<Snapshot>> {
        self.store.load_snapshot(stream_id).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> factum::Result<()> {
        self.store.save_snapshot(snapshot).await
    }

    fn wakeups(&self) -> FeedWakeups {
        self.store.wakeups()
    }
}
