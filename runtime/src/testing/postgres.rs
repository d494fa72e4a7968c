//! A PostgreSQL store in a schema of its own, for tests: tests run in parallel on one server,
//! and each leaves nothing behind, even when it fails.

use std::ops::{Deref, RangeBounds};

pub use super::cluster::{Cluster, ClusterBuilder};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::FeedWakeups;
use crate::store::{
    EventStore, ExpectedVersion, FeedBatch, FeedQuery, HistoryItem, KnownHead, PostgresStore,
    StreamEvent,
};

/// The server tests use: `DATABASE_URL` (as `./scripts/test` sets it), or a local server.
#[must_use]
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A migrated [`PostgresStore`] in a fresh schema, dropped (with everything in it) when the last
/// clone of this value is dropped, including after a failed assertion. It dereferences to the
/// store and is an [`EventStore`] itself; clones share the schema.
///
/// ```no_run
/// # async fn run() -> factum::Result<()> {
/// use factum::testing::postgres::TemporaryStore;
///
/// let store = TemporaryStore::new().await?;
/// assert!(store.schema().starts_with("factum_test_"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TemporaryStore {
    store: PostgresStore,
    url: String,
    /// Drops the schema when the last clone goes.
    _cleanup: std::sync::Arc<Cleanup>,
}

/// The schema of a [`TemporaryStore`], dropped with it.
#[derive(Debug)]
struct Cleanup {
    url: String,
    schema: String,
}

impl TemporaryStore {
    /// A store on [`database_url`], with a pool of 8 connections.
    ///
    /// # Errors
    /// When the server cannot be reached (the message says how to provide one) or the
    /// migrations fail.
    pub async fn new() -> Result<Self> {
        Self::with_pool_size(8).await
    }

    /// A store whose pool holds up to `connections` connections.
    ///
    /// # Errors
    /// As [`TemporaryStore::new`].
    pub async fn with_pool_size(connections: u32) -> Result<Self> {
        let url = database_url();
        // As long as a schema name may be (63 bytes), so that every test covers the longest
        // names (channel names derived from them must stay valid identifiers).
        let schema = format!(
            "factum_test_{}_{}",
            uuid::Uuid::now_v7().simple(),
            "x".repeat(18)
        );
        let pool = connect(&url, &schema, connections).await?;
        let store = PostgresStore::with_schema(pool, &schema)?;
        let cleanup = std::sync::Arc::new(Cleanup {
            url: url.clone(),
            schema: schema.clone(),
        });
        store.migrate().await?;
        Ok(Self {
            store,
            url,
            _cleanup: cleanup,
        })
    }

    /// Another store on the same schema with a pool of its own, as another process would have.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn another_client(&self) -> Result<PostgresStore> {
        let pool = connect(&self.url, self.store.schema(), 8).await?;
        PostgresStore::with_schema(pool, self.store.schema())
    }

    /// The server's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A pool whose connections carry the schema as their application name, so that the cleanup
/// can end them (and any transaction a failed test left open).
async fn connect(url: &str, schema: &str, connections: u32) -> Result<PgPool> {
    let unreachable = |error: sqlx::Error| {
        Error::Backend(
            format!(
                "cannot reach PostgreSQL at {url} ({error}); run the tests with ./scripts/test, which finds or starts a server, or set DATABASE_URL"
            )
            .into(),
        )
    };
    let options: PgConnectOptions = url.parse().map_err(unreachable)?;
    PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options.application_name(schema))
        .await
        .map_err(unreachable)
}

impl Deref for TemporaryStore {
    type Target = PostgresStore;

    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        clean_up(self.url.clone(), "a test schema", move |connection| {
            Box::pin(async move {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&schema)
                .execute(&mut *connection)
                .await?;
                let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&mut *connection)
                    .await
                    .map(|_| ())
            })
        });
    }
}

/// Runs `work` on a connection of its own to `url`, from a thread and a runtime of its own:
/// `Drop` runs inside the test's runtime, which must not block. A failure is logged as the
/// cleanup of `what`.
fn clean_up<F>(url: String, what: &'static str, work: F)
where
    F: for<'c> FnOnce(
            &'c mut sqlx::PgConnection,
        ) -> futures_util::future::BoxFuture<'c, sqlx::Result<()>>
        + Send
        + 'static,
{
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut connection = sqlx::PgConnection::connect(&url).await?;
            work(&mut connection).await?;
            connection.close().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
    });
    match cleanup.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not clean up {what}"),
        Err(_) => tracing::warn!("the cleanup of {what} panicked"),
    }
}

impl EventStore for TemporaryStore {
    async fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
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
    ) -> Result<Vec<RecordedEvent>> {
        self.store
            .append_after(stream_id, aggregate_type, head, events)
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream_id, versions).await
    }

    async fn read_stream_events(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> Result<Vec<StreamEvent>> {
        self.store.read_stream_events(stream_id, versions).await
    }

    async fn replay_history<F>(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        with_snapshot: bool,
        visit: F,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        self.store
            .replay_history(stream_id, aggregate_type, with_snapshot, visit)
            .await
    }

    async fn read_feed(&self, query: &FeedQuery) -> Result<FeedBatch> {
        self.store.read_feed(query).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        self.store.stream_version(stream_id).await
    }

    async fn read_event(&self, event_id: crate::Uuid) -> Result<Option<RecordedEvent>> {
        self.store.read_event(event_id).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>> {
        self.store.load_snapshot(stream_id).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.store.save_snapshot(snapshot).await
    }

    fn wakeups(&self) -> FeedWakeups {
        self.store.wakeups()
    }
}

/// A schema of its own owned by a role of its own, which migrated it and ran
/// [`PostgresStore::application_grants`] for an application role of its own: the
/// [`application`](Self::application) store connects as that role, which owns nothing (least
/// privilege). The schema and both roles are dropped when the value is, even after a failed
/// assertion; those a killed test process left behind are dropped by the next one made.
#[derive(Debug)]
pub struct LeastPrivilege {
    owner: PostgresStore,
    application: PostgresStore,
    /// The application role's URL.
    application_url: String,
    _cleanup: RoleCleanup,
}

/// The schema and roles of a [`LeastPrivilege`], dropped with it.
#[derive(Debug)]
struct RoleCleanup {
    url: String,
    schema: String,
}

impl LeastPrivilege {
    /// Creates the roles and the schema, migrates it as the owner and grants the application
    /// role what the runtime needs. Needs a superuser on [`database_url`] (the test server).
    ///
    /// # Errors
    /// When the server cannot be reached, or the roles cannot be created.
    pub async fn new() -> Result<Self> {
        Self::on(&database_url()).await
    }

    /// [`LeastPrivilege::new`] on the server of `url` (a superuser's), such as a throwaway
    /// [`Cluster`] a fault test restarts.
    ///
    /// # Errors
    /// When the server cannot be reached, or the roles cannot be created.
    pub async fn on(url: &str) -> Result<Self> {
        let url = url.to_owned();
        let mut admin = sqlx::PgConnection::connect(&url)
            .await
            .map_err(|e| Error::Backend(format!("cannot reach PostgreSQL at {url}: {e}").into()))?;
        sweep(&mut admin).await?;
        let schema = format!(
            "factum_lp_{}_{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let cleanup = RoleCleanup {
            url: url.clone(),
            schema: schema.clone(),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {schema}_owner LOGIN;
             CREATE ROLE {schema}_app LOGIN;
             CREATE SCHEMA {schema} AUTHORIZATION {schema}_owner;"
        )))
        .execute(&mut admin)
        .await
        .map_err(|e| Error::Backend(Box::new(e)))?;
        let as_role = |role: String| {
            let url = url.clone();
            async move {
                let options: PgConnectOptions = url
                    .parse()
                    .map_err(|e: sqlx::Error| Error::Backend(Box::new(e)))?;
                PgPoolOptions::new()
                    .max_connections(8)
                    .connect_with(options.username(&role).application_name(&role))
                    .await
                    .map_err(|e| Error::Backend(Box::new(e)))
            }
        };
        let owner = PostgresStore::with_schema(as_role(format!("{schema}_owner")).await?, &schema)?;
        owner.migrate().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            owner.application_grants(&format!("{schema}_app"))?,
        ))
        .execute(owner.pool())
        .await
        .map_err(|e| Error::Backend(Box::new(e)))?;
        let application =
            PostgresStore::with_schema(as_role(format!("{schema}_app")).await?, &schema)?;
        let server: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| Error::Backend(Box::new(e)))?;
        let application_url = format!(
            "postgres://{schema}_app@{}:{}/{}",
            server.get_host(),
            server.get_port(),
            server.get_database().unwrap_or("postgres")
        );
        Ok(Self {
            owner,
            application,
            application_url,
            _cleanup: cleanup,
        })
    }

    /// The store as the schema's owner sees it (for what the application may not do: creating
    /// a read model's table and granting it, say).
    #[must_use]
    pub fn owner(&self) -> &PostgresStore {
        &self.owner
    }

    /// The store as the application role sees it.
    #[must_use]
    pub fn application(&self) -> &PostgresStore {
        &self.application
    }

    /// The application role's name.
    #[must_use]
    pub fn application_role(&self) -> String {
        format!("{}_app", self.owner.schema())
    }

    /// A URL connecting as the application role (trust authentication, as the test servers
    /// have): for a tool or a process of the test's.
    #[must_use]
    pub fn application_url(&self) -> &str {
        &self.application_url
    }
}

/// Drops what [`LeastPrivilege`] values of processes that no longer run left behind (their
/// names carry the process id).
async fn sweep(admin: &mut sqlx::PgConnection) -> Result<()> {
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'factum\\_lp\\_%\\_owner'",
    )
    .fetch_all(&mut *admin)
    .await
    .map_err(|e| Error::Backend(Box::new(e)))?;
    for owner in owners {
        let schema = owner.trim_end_matches("_owner");
        let pid = schema
            .split('_')
            .nth(2)
            .and_then(|pid| pid.parse::<u32>().ok());
        let running = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !running {
            drop_roles(admin, schema)
                .await
                .map_err(|e| Error::Backend(Box::new(e)))?;
        }
    }
    Ok(())
}

async fn drop_roles(admin: &mut sqlx::PgConnection, schema: &str) -> sqlx::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name IN ('{schema}_owner', '{schema}_app');
         DROP SCHEMA IF EXISTS {schema} CASCADE;
         DROP OWNED BY {schema}_app;
         DROP ROLE IF EXISTS {schema}_app;
         DROP ROLE IF EXISTS {schema}_owner;"
    )))
    .execute(admin)
    .await
    .map(|_| ())
}

impl Drop for RoleCleanup {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        clean_up(self.url.clone(), "a test schema's roles", move |admin| {
            Box::pin(async move { drop_roles(admin, &schema).await })
        });
    }
}
