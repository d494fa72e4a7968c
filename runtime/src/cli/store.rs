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
    pub projection: String,
    pub version: u32,
    pub position: u64,
    pub head: u64,
    /// Events after the checkpoint, of any type.
    pub events_after: u64,
    pub parked_streams: u64,
    pub parked_events: u64,
}

/// A parked stream of the dead-letter queue.
#[derive(Debug, Serialize)]
pub(super) struct Parked {
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
            None => store,
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
    /// rejected), by saga name.
    pub async fn sagas(&self) -> Result<Vec<(String, [u64; 4])>, CliError> {
        let s = self.prefix();
        let rows = self
            .rows(query(format!(
                "SELECT n.saga,
                        (SELECT count(*) FROM {s}sagas i WHERE i.saga = n.saga AND i.status = 'active'),
                        (SELECT count(*) FROM {s}sagas i WHERE i.saga = n.saga AND i.status <> 'active'),
                        (SELECT count(*) FROM {s}saga_outbox o WHERE o.saga = n.saga AND o.status = 'pending'),
                        (SELECT count(*) FROM {s}saga_outbox o WHERE o.saga = n.saga
                                                                AND o.status IN ('failed', 'rejected'))
                 FROM (SELECT DISTINCT saga FROM {s}sagas) n ORDER BY n.saga"
            )))
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
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

    /// Every projection's checkpoint (and saga's: they run as projections).
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, CliError> {
        let head = self.head().await?;
        let s = self.prefix();
        // Events after each checkpoint, of any type, with the checkpoint.
        let after = match self {
            Self::Postgres(_) => format!(
                "(SELECT count(*) FROM {s}events e WHERE (e.tx, e.position) > (c.tx::text::xid8, c.position))"
            ),
            Self::Sqlite(_) => {
                "(SELECT count(*) FROM events e WHERE e.position > c.position)".to_owned()
            }
        };
        let rows = self
            .rows(query(format!(
                "SELECT c.projection, c.version, c.position, {after}
                 FROM {s}projection_checkpoints c ORDER BY c.projection, c.version"
            )))
            .await?;
        let parked = self.parked().await?;
        let mut checkpoints = Vec::with_capacity(rows.len());
        for row in &rows {
            let projection: String = columns::get(row, 0)?;
            let version = columns::unsigned::<_, i64, u32>(row, 1)?;
            let mine: Vec<&Parked> = parked
                .iter()
                .filter(|p| p.projection == projection && p.version == version)
                .collect();
            checkpoints.push(Checkpoint {
                position: columns::unsigned::<_, i64, _>(row, 2)?,
                events_after: columns::unsigned::<_, i64, _>(row, 3)?,
                parked_streams: mine.len() as u64,
                parked_events: mine.iter().map(|p| p.events).sum(),
                projection,
                version,
                head,
            });
        }
        Ok(checkpoints)
    }

    /// The parked streams of every projection.
    pub async fn parked(&self) -> Result<Vec<Parked>, CliError> {
        let s = self.prefix();
        let rows = self
            .rows(query(format!(
                "SELECT d.projection, d.version, d.stream_id, d.stream_version,
                        (SELECT count(*) FROM {s}projection_dead_letters c
                         WHERE c.projection = d.projection AND c.version = d.version
                           AND c.stream_id = d.stream_id AND c.status = 'parked'),
                        d.error
                 FROM {s}projection_dead_letters d
                 WHERE d.status = 'parked' AND d.stream_version = (
                     SELECT min(f.stream_version) FROM {s}projection_dead_letters f
                     WHERE f.projection = d.projection AND f.version = d.version
                       AND f.stream_id = d.stream_id AND f.status = 'parked')
                 ORDER BY d.projection, d.version, d.stream_id"
            )))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Parked {
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
