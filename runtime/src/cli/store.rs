//! The store the command line looks into: PostgreSQL or SQLite, chosen by the URL.

use std::collections::BTreeMap;
use std::ops::RangeBounds;

use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use super::CliError;
use crate::envelope::RecordedEvent;
use crate::pii::LocalKeyProvider;
use crate::store::backend::{columns, to_i64};
use crate::store::sql::{Backend as _, Connection};
use crate::store::{EventStore, FeedBatch, FeedPosition, FeedQuery, PostgresStore, SqliteStore};

/// The tenants a view across tenants shows at most (the first by name); a tenant's own console
/// (`factum serve --tenant`) shows any.
pub(super) const MAX_TENANTS: u64 = 50;

/// A statement for either store, through `Any`.
type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

fn query(sql: String) -> Query {
    sqlx::query(AssertSqlSafe(sql))
}

/// Either store.
#[derive(Debug, Clone)]
pub(super) enum AnyStore {
    Postgres(PostgresStore),
    Sqlite(SqliteStore),
}

impl AnyStore {
    /// Which store it is.
    pub fn kind(&self) -> crate::store::StoreKind {
        match self {
            Self::Postgres(_) => crate::store::StoreKind::Postgres,
            Self::Sqlite(_) => crate::store::StoreKind::Sqlite,
        }
    }
}

/// What `stats` reports.
#[derive(Debug, Serialize)]
pub(super) struct Stats {
    pub events: u64,
    pub streams: u64,
    /// The largest streams: id and events.
    pub largest_streams: Vec<(String, u64)>,
    /// Events per type.
    pub events_per_type: BTreeMap<String, u64>,
    /// The store's size on disk, bytes.
    pub size_bytes: u64,
}

/// A projection's checkpoint, as stored.
#[derive(Debug, Serialize)]
pub(super) struct Checkpoint {
    /// Whose runner keeps it, in a view across tenants (see [`AnyStore::scopes`]): a tenant,
    /// `*` (a runner across tenants) or `''` (a runner of no tenant); `None` in a store's view
    /// of its own runners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub projection: String,
    pub version: u32,
    pub position: u64,
    pub head: u64,
    /// Events after the checkpoint, of any type.
    pub events_after: u64,
    pub parked_streams: u64,
    pub parked_events: u64,
    /// When the oldest event waiting for it was recorded (`None`: none waits).
    #[serde(skip)]
    pub waiting_since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Checkpoint {
    /// The runner's name and version, and its tenant in a view across tenants.
    pub fn key(&self) -> String {
        match &self.tenant {
            Some(tenant) => format!(
                "{} v{} ({})",
                self.projection,
                self.version,
                scope_label(tenant)
            ),
            None => format!("{} v{}", self.projection, self.version),
        }
    }
}

/// How a bookkeeping scope is named on a page: `*` is the runners' across tenants, `''` the
/// runners' of no tenant.
pub(super) fn scope_label(scope: &str) -> &str {
    match scope {
        "*" => "across tenants",
        "" => "no tenant",
        tenant => tenant,
    }
}

/// A parked stream of the dead-letter queue.
#[derive(Debug, Serialize)]
pub(super) struct Parked {
    /// As [`Checkpoint::tenant`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub projection: String,
    pub version: u32,
    pub stream_id: String,
    pub first_version: u64,
    pub events: u64,
    pub error: Option<String>,
}

impl AnyStore {
    /// Opens the store at `url` and checks that it holds a Factum store.
    pub async fn open(url: &str, schema: &str) -> Result<Self, CliError> {
        let store = Self::connect(url, schema, true).await?;
        if !store.is_migrated().await? {
            return Err(CliError::NotMigrated {
                store: store.describe(),
            });
        }
        Ok(store)
    }

    /// Opens the store at `url`, creating it (the SQLite file, the PostgreSQL schema and
    /// tables) when missing: the target of an import.
    pub async fn create(url: &str, schema: &str) -> Result<Self, CliError> {
        let store = Self::connect(url, schema, false).await?;
        match &store {
            Self::Postgres(postgres) => postgres.migrate().await?,
            Self::Sqlite(sqlite) => sqlite.migrate().await?,
        }
        Ok(store)
    }

    /// Connects to `url`; `existing`: a SQLite file must already exist.
    async fn connect(url: &str, schema: &str, existing: bool) -> Result<Self, CliError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store =
                PostgresStore::connect(url)
                    .await
                    .map_err(|error| CliError::Unreachable {
                        url: redact(url),
                        cause: error.to_string(),
                    })?;
            let store = PostgresStore::with_schema(store.pool().clone(), schema)
                .map_err(|error| CliError::Usage(error.to_string()))?;
            Self::Postgres(store)
        } else if url.starts_with("sqlite:") {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if existing && !path.contains(":memory:") && !std::path::Path::new(path).exists() {
                return Err(CliError::Unreachable {
                    url: url.to_owned(),
                    cause: "the file does not exist".to_owned(),
                });
            }
            let store = SqliteStore::connect(url)
                .await
                .map_err(|error| CliError::Unreachable {
                    url: url.to_owned(),
                    cause: error.to_string(),
                })?;
            Self::Sqlite(store)
        } else {
            return Err(CliError::Usage(format!(
                "`{}` is not a store URL: use postgres://user@host/database or sqlite://path/to/file.db",
                redact(url)
            )));
        };
        store.with_env_key_provider()
    }

    /// The store opening personal data with the key-encryption key of
    /// [`LocalKeyProvider::ENV`], when it is set (else sealed fields are shown sealed).
    fn with_env_key_provider(self) -> Result<Self, CliError> {
        if std::env::var_os(LocalKeyProvider::ENV).is_none() {
            return Ok(self);
        }
        let provider = LocalKeyProvider::from_env().map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(match self {
            Self::Postgres(store) => Self::Postgres(store.with_key_provider(provider)),
            Self::Sqlite(store) => Self::Sqlite(store.with_key_provider(provider)),
        })
    }

    /// The store as `tenant` sees it, or across tenants (every tenant's events, each naming
    /// its own) when `None`.
    pub async fn tenants(&self, tenant: Option<&str>) -> Result<Self, CliError> {
        Ok(match (self, tenant) {
            (Self::Postgres(store), Some(tenant)) => {
                Self::Postgres(store.for_tenant(tenant).await?)
            }
            (Self::Postgres(store), None) => Self::Postgres(store.across_tenants()),
            (Self::Sqlite(store), Some(tenant)) => Self::Sqlite(store.for_tenant(tenant).await?),
            (Self::Sqlite(store), None) => Self::Sqlite(store.across_tenants()),
        })
    }

    /// The store reading personal data sealed, as stored.
    pub fn without_key_provider(&self) -> Self {
        match self {
            Self::Postgres(store) => Self::Postgres(store.clone().without_key_provider()),
            Self::Sqlite(store) => Self::Sqlite(store.clone().without_key_provider()),
        }
    }

    pub fn describe(&self) -> String {
        let (store, tenant) = match self {
            Self::Postgres(store) => (
                format!("the PostgreSQL schema `{}`", store.schema()),
                store.tenant(),
            ),
            Self::Sqlite(store) => (
                format!("the SQLite database {}", store.location()),
                store.tenant(),
            ),
        };
        match tenant {
            Some(tenant) => format!("{store}, tenant `{tenant}`"),
            None if self.is_across_tenants() => format!("{store}, every tenant"),
            None => store,
        }
    }

    /// Whether it is a PostgreSQL store across tenants, reading every tenant's events.
    fn is_across_tenants(&self) -> bool {
        matches!(self, Self::Postgres(store) if matches!(store.tenancy(), crate::store::Tenancy::All))
    }

    /// Whether any tenant has events (PostgreSQL; `false` on SQLite, whose console reads
    /// every row as stored): a console of the store then shows every tenant's.
    pub async fn has_tenants(&self) -> Result<bool, CliError> {
        if let Self::Sqlite(_) = self {
            return Ok(false);
        }
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM {}events WHERE tenant <> '' LIMIT 1) t",
            self.prefix()
        );
        let row = self.row_in(Some("*"), query(sql)).await?;
        Ok(columns::unsigned::<_, i64, u64>(&row, 0)? > 0)
    }

    /// The bookkeeping scopes a view across tenants shows, in order: `*` (runners across
    /// tenants), `''` (runners of no tenant), then each tenant with events, by name, at most
    /// [`MAX_TENANTS`]. `None` for a store that shows its own runners only (a tenant's, one
    /// without tenants, SQLite).
    ///
    /// Each scope's rows are read in a transaction of their own naming the scope, as its
    /// runners' sessions do, so the application role's row-level security lets them through
    /// (and a superuser's statements filter by the scope themselves).
    pub async fn scopes(&self) -> Result<Option<Vec<String>>, CliError> {
        if !self.is_across_tenants() {
            return Ok(None);
        }
        // A loose scan of the tenants' feed index: one probe per tenant, not per event.
        let rows = self
            .rows(
                query(format!(
                    "WITH RECURSIVE t(tenant) AS (
                         (SELECT tenant FROM {s}events WHERE tenant <> '' ORDER BY tenant LIMIT 1)
                         UNION ALL
                         SELECT (SELECT e.tenant FROM {s}events e
                                 WHERE e.tenant <> '' AND e.tenant > t.tenant
                                 ORDER BY e.tenant LIMIT 1)
                         FROM t WHERE t.tenant IS NOT NULL
                     )
                     SELECT tenant FROM t WHERE tenant IS NOT NULL LIMIT $1",
                    s = self.prefix()
                ))
                .bind(to_i64(MAX_TENANTS)),
            )
            .await?;
        let mut scopes = vec!["*".to_owned(), String::new()];
        for row in &rows {
            scopes.push(columns::get(row, 0)?);
        }
        Ok(Some(scopes))
    }

    /// `read` for each scope of a view across tenants, or once for the store's own runners.
    async fn in_every_scope<T, F, R>(&self, read: F) -> Result<Vec<T>, CliError>
    where
        F: Fn(Option<String>) -> R,
        R: Future<Output = Result<Vec<T>, CliError>>,
    {
        let Some(scopes) = self.scopes().await? else {
            return read(None).await;
        };
        let mut all = Vec::new();
        for scope in scopes {
            all.extend(read(Some(scope)).await?);
        }
        Ok(all)
    }

    /// The filter keeping a statement on the bookkeeping rows of its session's scope (the
    /// rows' `tenant`, under `alias`): row-level security does it for the application role,
    /// not for a superuser. Nothing on SQLite, whose runners' names carry their tenant.
    fn own_rows(&self, alias: &str) -> String {
        match self {
            Self::Postgres(_) => format!(
                "{alias}.tenant = (SELECT {}bookkeeping_scope())",
                self.prefix()
            ),
            Self::Sqlite(_) => "true".to_owned(),
        }
    }

    /// What table names are prefixed with in SQL: the quoted schema on PostgreSQL.
    fn prefix(&self) -> String {
        match self {
            Self::Postgres(store) => format!("{}.", store.sql_schema().quoted()),
            Self::Sqlite(_) => String::new(),
        }
    }

    /// A connection of the store's pool.
    async fn connection(&self) -> Result<Connection, CliError> {
        Ok(match self {
            Self::Postgres(store) => store.acquire().await?,
            Self::Sqlite(store) => store.acquire().await?,
        })
    }

    /// The rows of `query`, on either store.
    async fn rows(&self, query: Query) -> Result<Vec<AnyRow>, CliError> {
        let mut connection = self.connection().await?;
        query
            .fetch_all(&mut connection.tx())
            .await
            .map_err(CliError::database)
    }

    /// The one row of `query`.
    async fn row(&self, query: Query) -> Result<AnyRow, CliError> {
        self.rows(query)
            .await?
            .pop()
            .ok_or_else(|| CliError::database(sqlx::Error::RowNotFound))
    }

    /// The rows of `query` as the runners of `scope` see their bookkeeping (see
    /// [`AnyStore::scopes`]); `None`: as the store's own sessions see it.
    async fn rows_in(&self, scope: Option<&str>, query: Query) -> Result<Vec<AnyRow>, CliError> {
        let (Some(scope), Self::Postgres(store)) = (scope, self) else {
            return self.rows(query).await;
        };
        let mut connection = store.acquire().await?;
        let mut tx = connection.tx();
        let Some(postgres) = tx.postgres() else {
            return self.rows(query).await;
        };
        let mut transaction = sqlx::Connection::begin(postgres)
            .await
            .map_err(CliError::database)?;
        let (tenant, all) = if scope == "*" {
            ("", "on")
        } else {
            (scope, "off")
        };
        sqlx::query(
            "SELECT set_config('factum.tenant', $1, true), set_config('factum.all_tenants', $2, true)",
        )
        .bind(tenant)
        .bind(all)
        .execute(&mut *transaction)
        .await
        .map_err(CliError::database)?;
        let rows = query
            .fetch_all(&mut crate::store::Tx::from(&mut transaction))
            .await
            .map_err(CliError::database)?;
        transaction.rollback().await.map_err(CliError::database)?;
        Ok(rows)
    }

    /// The one row of `query`, as [`AnyStore::rows_in`].
    async fn row_in(&self, scope: Option<&str>, query: Query) -> Result<AnyRow, CliError> {
        self.rows_in(scope, query)
            .await?
            .pop()
            .ok_or_else(|| CliError::database(sqlx::Error::RowNotFound))
    }

    async fn is_migrated(&self) -> Result<bool, CliError> {
        let statement = match self {
            Self::Postgres(store) => query(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema = $1 AND table_name = 'events'"
                    .to_owned(),
            )
            .bind(store.schema().to_owned()),
            Self::Sqlite(_) => query(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'"
                    .to_owned(),
            ),
        };
        let row = self.row(statement).await?;
        Ok(columns::unsigned::<_, i64, u64>(&row, 0)? > 0)
    }

    pub async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> Result<Vec<RecordedEvent>, CliError> {
        Ok(match self {
            Self::Postgres(store) => store.read_stream(stream_id, versions).await?,
            Self::Sqlite(store) => store.read_stream(stream_id, versions).await?,
        })
    }

    pub async fn read_feed(&self, query: &FeedQuery) -> Result<FeedBatch, CliError> {
        Ok(match self {
            Self::Postgres(store) => store.read_feed(query).await?,
            Self::Sqlite(store) => store.read_feed(query).await?,
        })
    }

    pub fn wakeups(&self) -> crate::store::FeedWakeups {
        match self {
            Self::Postgres(store) => store.wakeups(),
            Self::Sqlite(store) => store.wakeups(),
        }
    }

    /// Where to start reading the feed to come after the event at global position `at`: that
    /// event's feed position (or the last one's before it; the start when there is none).
    pub async fn feed_position_at(&self, at: u64) -> Result<FeedPosition, CliError> {
        if let Self::Sqlite(_) = self {
            return Ok(FeedPosition::new(at, at));
        }
        let rows = self
            .rows(
                query(format!(
                    "SELECT e.tx::text::bigint, e.position FROM {}events e
                     WHERE e.position <= $1 ORDER BY e.position DESC LIMIT 1",
                    self.prefix()
                ))
                .bind(to_i64(at)),
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(FeedPosition::START);
        };
        Ok(FeedPosition::new(
            columns::unsigned::<_, i64, _>(row, 0)?,
            columns::unsigned::<_, i64, _>(row, 1)?,
        ))
    }

    /// The event of this id, if any.
    pub async fn read_event(&self, id: uuid::Uuid) -> Result<Option<RecordedEvent>, CliError> {
        Ok(match self {
            Self::Postgres(store) => store.read_event(id).await?,
            Self::Sqlite(store) => store.read_event(id).await?,
        })
    }

    /// When the first event after global position `position` was recorded (`None`: there is
    /// none yet): how long a runner standing there has kept it waiting.
    pub async fn first_unhandled_at(
        &self,
        position: u64,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CliError> {
        let after = self.feed_position_at(position).await?;
        let batch = self.read_feed(&FeedQuery::after(after).limit(1)).await?;
        Ok(batch.events.first().map(|event| event.recorded_at))
    }

    /// Every relay's status, by name (PostgreSQL; none on SQLite, where relays do not run).
    pub async fn relays(&self) -> Result<Vec<(String, crate::relay::RelayStatus)>, CliError> {
        let Self::Postgres(store) = self else {
            return Ok(Vec::new());
        };
        let names = self
            .rows(query(format!(
                "SELECT relay FROM {}relay_checkpoints ORDER BY relay",
                self.prefix()
            )))
            .await?;
        let mut relays = Vec::with_capacity(names.len());
        for row in &names {
            let name: String = columns::get(row, 0)?;
            let status = crate::relay::status(store, &name).await?;
            relays.push((name, status));
        }
        Ok(relays)
    }

    /// The events of one correlation (a business flow) across streams, in feed order, at most
    /// `limit`: stream, version, type, id, causation id. A scan of the event table (no index
    /// on correlation ids): for a console, not a hot path.
    pub async fn correlated(
        &self,
        correlation: uuid::Uuid,
        limit: u64,
    ) -> Result<Vec<(String, u64, String, String, String)>, CliError> {
        let (id, causation, matches) = match self {
            Self::Postgres(_) => (
                "e.event_id::text",
                "e.causation_id::text",
                "e.correlation_id = $1::uuid",
            ),
            Self::Sqlite(_) => ("e.event_id", "e.causation_id", "e.correlation_id = $1"),
        };
        let rows = self
            .rows(
                query(format!(
                    "SELECT e.stream_id, e.stream_version, e.event_type, {id}, {causation}
                     FROM {}events e WHERE {matches} ORDER BY e.position LIMIT $2",
                    self.prefix()
                ))
                .bind(correlation.to_string())
                .bind(to_i64(limit)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    columns::get(row, 0)?,
                    columns::unsigned::<_, i64, _>(row, 1)?,
                    columns::get(row, 2)?,
                    columns::get(row, 3)?,
                    columns::get(row, 4)?,
                ))
            })
            .collect()
    }

    /// Each saga's instances (active, completed) and its queued commands (pending, failed or
    /// rejected), by saga name, of every scope in a view across tenants (with the scope).
    pub async fn sagas(&self) -> Result<Vec<(Option<String>, String, [u64; 4])>, CliError> {
        self.in_every_scope(|scope| self.sagas_in(scope)).await
    }

    /// The sagas of one scope (`None`: the store's own).
    async fn sagas_in(
        &self,
        scope: Option<String>,
    ) -> Result<Vec<(Option<String>, String, [u64; 4])>, CliError> {
        let s = self.prefix();
        let (instances, outbox) = (self.own_rows("i"), self.own_rows("o"));
        let rows = self
            .rows_in(
                scope.as_deref(),
                query(format!(
                    "SELECT n.saga,
                        (SELECT count(*) FROM {s}sagas i WHERE {instances} AND i.saga = n.saga AND i.status = 'active'),
                        (SELECT count(*) FROM {s}sagas i WHERE {instances} AND i.saga = n.saga AND i.status <> 'active'),
                        (SELECT count(*) FROM {s}saga_outbox o WHERE {outbox} AND o.saga = n.saga AND o.status = 'pending'),
                        (SELECT count(*) FROM {s}saga_outbox o WHERE {outbox} AND o.saga = n.saga
                                                                AND o.status IN ('failed', 'rejected'))
                     FROM (SELECT DISTINCT i.saga FROM {s}sagas i WHERE {instances}) n ORDER BY n.saga"
                )),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    scope.clone(),
                    columns::get(row, 0)?,
                    [
                        columns::unsigned::<_, i64, _>(row, 1)?,
                        columns::unsigned::<_, i64, _>(row, 2)?,
                        columns::unsigned::<_, i64, _>(row, 3)?,
                        columns::unsigned::<_, i64, _>(row, 4)?,
                    ],
                ))
            })
            .collect()
    }

    /// The position of the newest event (0: none).
    pub async fn head(&self) -> Result<u64, CliError> {
        let sql = format!(
            "SELECT coalesce(max(position), 0) FROM {}events",
            self.prefix()
        );
        let row = self.row(query(sql)).await?;
        Ok(columns::unsigned::<_, i64, _>(&row, 0)?)
    }

    pub async fn stats(&self, largest: usize) -> Result<Stats, CliError> {
        let s = self.prefix();
        let size_sql = match self {
            Self::Postgres(store) => format!(
                "SELECT (pg_total_relation_size('{0}.events')
                         + pg_total_relation_size('{0}.snapshots'))::bigint",
                store.sql_schema().quoted()
            ),
            Self::Sqlite(_) => {
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
                    .to_owned()
            }
        };
        let totals = self
            .row(query(format!(
                "SELECT count(*), count(DISTINCT stream_id) FROM {s}events"
            )))
            .await?;
        let largest_streams = self
            .named_counts(
                query(format!(
                    "SELECT stream_id, count(*) AS n FROM {s}events GROUP BY stream_id
                     ORDER BY n DESC, stream_id LIMIT $1"
                ))
                .bind(to_i64(largest as u64)),
            )
            .await?;
        let events_per_type = self
            .named_counts(query(format!(
                "SELECT event_type, count(*) FROM {s}events GROUP BY event_type"
            )))
            .await?
            .into_iter()
            .collect();
        let size = self.row(query(size_sql)).await?;
        Ok(Stats {
            events: columns::unsigned::<_, i64, _>(&totals, 0)?,
            streams: columns::unsigned::<_, i64, _>(&totals, 1)?,
            largest_streams,
            events_per_type,
            size_bytes: columns::unsigned::<_, i64, _>(&size, 0)?,
        })
    }

    /// Rows of a name and a count.
    async fn named_counts(&self, query: Query) -> Result<Vec<(String, u64)>, CliError> {
        let rows = self.rows(query).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    columns::get(row, 0)?,
                    columns::unsigned::<_, i64, u64>(row, 1)?,
                ))
            })
            .collect()
    }

    /// Every projection's checkpoint (and saga's: they run as projections), of every scope in
    /// a view across tenants.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, CliError> {
        self.in_every_scope(|scope| self.checkpoints_in(scope))
            .await
    }

    /// The checkpoints of one scope (`None`: the store's own).
    async fn checkpoints_in(&self, scope: Option<String>) -> Result<Vec<Checkpoint>, CliError> {
        // The store's head, for its own runners; a scope's rows carry their own (below).
        let head = match scope {
            Some(_) => 0,
            None => self.head().await?,
        };
        let s = self.prefix();
        let mine = self.own_rows("c");
        // Where each runner stands: the position of the last event it read (a checkpoint
        // after a whole commit stores the end of that commit, not an event's position). The
        // events after it that its runner reads (any type): how many, the newest position and
        // when the oldest was recorded, read with the checkpoint.
        let sql = match self {
            Self::Postgres(_) => format!(
                "SELECT c.projection, c.version, coalesce(r.position, 0), a.behind,
                        coalesce(a.newest, r.position, 0), extract(epoch FROM a.oldest)::float8
                 FROM {s}projection_checkpoints c
                 CROSS JOIN LATERAL (
                     SELECT count(*) AS behind, max(e.position) AS newest,
                            min(e.recorded_at) AS oldest
                     FROM {s}events e
                     WHERE (e.tx, e.position) > (c.tx::text::xid8, c.position)
                       AND (c.tenant = '*' OR e.tenant = c.tenant)
                 ) a
                 LEFT JOIN LATERAL (
                     SELECT e.position FROM {s}events e
                     WHERE (e.tx, e.position) <= (c.tx::text::xid8, c.position)
                       AND (c.tenant = '*' OR e.tenant = c.tenant)
                     ORDER BY e.tx DESC, e.position DESC LIMIT 1
                 ) r ON true
                 WHERE {mine}
                 ORDER BY c.projection, c.version"
            ),
            Self::Sqlite(_) => format!(
                "SELECT c.projection, c.version, c.position,
                        (SELECT count(*) FROM events e WHERE e.position > c.position), 0, NULL
                 FROM projection_checkpoints c WHERE {mine} ORDER BY c.projection, c.version"
            ),
        };
        let rows = self.rows_in(scope.as_deref(), query(sql)).await?;
        let parked = self.parked_in(scope.clone()).await?;
        let mut checkpoints = Vec::with_capacity(rows.len());
        for row in &rows {
            let projection: String = columns::get(row, 0)?;
            let version = columns::unsigned::<_, i64, u32>(row, 1)?;
            let position = columns::unsigned::<_, i64, u64>(row, 2)?;
            let events_after = columns::unsigned::<_, i64, u64>(row, 3)?;
            let mine: Vec<&Parked> = parked
                .iter()
                .filter(|p| p.projection == projection && p.version == version)
                .collect();
            let waiting_since = match self {
                Self::Postgres(_) => columns::get::<_, Option<f64>>(row, 5)?
                    .and_then(|at| chrono::DateTime::from_timestamp_micros((at * 1e6) as i64)),
                Self::Sqlite(_) if events_after > 0 => self.first_unhandled_at(position).await?,
                Self::Sqlite(_) => None,
            };
            checkpoints.push(Checkpoint {
                tenant: scope.clone(),
                position,
                events_after,
                parked_streams: mine.len() as u64,
                parked_events: mine.iter().map(|p| p.events).sum(),
                waiting_since,
                projection,
                version,
                // A scope's own head: the newest event its runner has to read, else where
                // it stands.
                head: if scope.is_some() {
                    columns::unsigned::<_, i64, u64>(row, 4)?
                } else {
                    head
                },
            });
        }
        Ok(checkpoints)
    }

    /// The parked streams of every projection, of every scope in a view across tenants.
    pub async fn parked(&self) -> Result<Vec<Parked>, CliError> {
        self.in_every_scope(|scope| self.parked_in(scope)).await
    }

    /// The parked streams of one scope (`None`: the store's own).
    async fn parked_in(&self, scope: Option<String>) -> Result<Vec<Parked>, CliError> {
        let s = self.prefix();
        let mine = self.own_rows("d");
        let (same_c, same_f) = match self {
            Self::Postgres(_) => ("c.tenant = d.tenant AND", "f.tenant = d.tenant AND"),
            Self::Sqlite(_) => ("", ""),
        };
        let rows = self
            .rows_in(
                scope.as_deref(),
                query(format!(
                    "SELECT d.projection, d.version, d.stream_id, d.stream_version,
                            (SELECT count(*) FROM {s}projection_dead_letters c
                             WHERE {same_c} c.projection = d.projection AND c.version = d.version
                               AND c.stream_id = d.stream_id AND c.status = 'parked'),
                            d.error
                     FROM {s}projection_dead_letters d
                     WHERE {mine} AND d.status = 'parked' AND d.stream_version = (
                         SELECT min(f.stream_version) FROM {s}projection_dead_letters f
                         WHERE {same_f} f.projection = d.projection AND f.version = d.version
                           AND f.stream_id = d.stream_id AND f.status = 'parked')
                     ORDER BY d.projection, d.version, d.stream_id"
                )),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Parked {
                    tenant: scope.clone(),
                    projection: columns::get(row, 0)?,
                    version: columns::unsigned::<_, i64, _>(row, 1)?,
                    stream_id: columns::get(row, 2)?,
                    first_version: columns::unsigned::<_, i64, _>(row, 3)?,
                    events: columns::unsigned::<_, i64, _>(row, 4)?,
                    error: columns::get(row, 5)?,
                })
            })
            .collect()
    }
}

/// A URL without its password (given as `user:password@`, or as a `password=` query
/// parameter).
fn redact(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// `forget <subject>`: deletes the subject's data key (see [`PostgresStore::forget`]).
pub(super) async fn forget(store: &AnyStore, subject: &str, json: bool) -> Result<(), CliError> {
    let forgotten = match store {
        AnyStore::Postgres(store) => store.forget(subject).await?,
        AnyStore::Sqlite(store) => store.forget(subject).await?,
    };
    if json {
        super::output::print_json(&serde_json::json!({
            "subject": subject,
            "forgotten": forgotten,
        }));
    } else if forgotten {
        println!(
            "forgot data subject {subject:?}: its personal data now reads as its replacements"
        );
    } else {
        println!(
            "data subject {subject:?} has no key here (forgotten before, or no personal data of it was stored)"
        );
    }
    Ok(())
}
