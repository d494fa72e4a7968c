//! The store the command line looks into: PostgreSQL or SQLite, chosen by the URL.

use std::collections::BTreeMap;
use std::ops::RangeBounds;

use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::CliError;
use crate::envelope::RecordedEvent;
use crate::store::{EventStore, FeedBatch, FeedPosition, FeedQuery, PostgresStore, SqliteStore};

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

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl AnyStore {
    /// Opens the store at `url` and checks that it holds a Factum store.
    pub async fn open(url: &str, schema: &str) -> Result<Self, CliError> {
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
            if !path.contains(":memory:") && !std::path::Path::new(path).exists() {
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
        if !store.is_migrated().await? {
            return Err(CliError::NotMigrated {
                store: store.describe(),
            });
        }
        Ok(store)
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(store) => format!("the PostgreSQL schema `{}`", store.schema()),
            Self::Sqlite(store) => format!("the SQLite database {}", store.location()),
        }
    }

    async fn is_migrated(&self) -> Result<bool, CliError> {
        let found = match self {
            Self::Postgres(store) => sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                                WHERE table_schema = $1 AND table_name = 'events')",
            )
            .bind(store.schema())
            .fetch_one(store.pool())
            .await
            .map_err(CliError::database)?,
            Self::Sqlite(store) => sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
            )
            .fetch_one(store.pool())
            .await
            .map_err(CliError::database)?,
        };
        Ok(found)
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
        let Self::Postgres(store) = self else {
            return Ok(FeedPosition::new(at, at));
        };
        let row: Option<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT e.tx::text::bigint, e.position FROM \"{}\".events e
             WHERE e.position <= $1 ORDER BY e.position DESC LIMIT 1",
            store.schema()
        )))
        .bind(i64::try_from(at).unwrap_or(i64::MAX))
        .fetch_optional(store.pool())
        .await
        .map_err(CliError::database)?;
        Ok(row.map_or(FeedPosition::START, |(tx, position)| {
            FeedPosition::new(count(tx), count(position))
        }))
    }

    /// The position of the newest event (0: none).
    pub async fn head(&self) -> Result<u64, CliError> {
        let head: Option<i64> = match self {
            Self::Postgres(store) => {
                sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT max(position) FROM \"{}\".events",
                    store.schema()
                )))
                .fetch_one(store.pool())
                .await
            }
            Self::Sqlite(store) => {
                sqlx::query_scalar("SELECT max(position) FROM events")
                    .fetch_one(store.pool())
                    .await
            }
        }
        .map_err(CliError::database)?;
        Ok(head.map_or(0, count))
    }

    pub async fn stats(&self, largest: usize) -> Result<Stats, CliError> {
        let limit = i64::try_from(largest).unwrap_or(i64::MAX);
        let (s, size_sql) = match self {
            Self::Postgres(store) => (
                format!("\"{}\".", store.schema()),
                format!(
                    "SELECT (pg_total_relation_size('\"{0}\".events')
                             + pg_total_relation_size('\"{0}\".snapshots'))::bigint",
                    store.schema()
                ),
            ),
            Self::Sqlite(_) => (
                String::new(),
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
                    .to_owned(),
            ),
        };
        let (events, streams) = self
            .pair_u64(&format!(
                "SELECT count(*), count(DISTINCT stream_id) FROM {s}events"
            ))
            .await?;
        let largest_streams = self
            .rows_str_u64(&format!(
                "SELECT stream_id, count(*) AS n FROM {s}events GROUP BY stream_id
                 ORDER BY n DESC, stream_id LIMIT {limit}"
            ))
            .await?;
        let events_per_type = self
            .rows_str_u64(&format!(
                "SELECT event_type, count(*) FROM {s}events GROUP BY event_type"
            ))
            .await?
            .into_iter()
            .collect();
        let size_bytes = self.scalar_u64(&size_sql).await?;
        Ok(Stats {
            events,
            streams,
            largest_streams,
            events_per_type,
            size_bytes,
        })
    }

    /// One integer (an aggregate query).
    async fn scalar_u64(&self, sql: &str) -> Result<u64, CliError> {
        let value: Option<i64> = match self {
            Self::Postgres(store) => {
                sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
                    .fetch_one(store.pool())
                    .await
            }
            Self::Sqlite(store) => {
                sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
                    .fetch_one(store.pool())
                    .await
            }
        }
        .map_err(CliError::database)?;
        Ok(value.map_or(0, count))
    }

    /// Two integers.
    async fn pair_u64(&self, sql: &str) -> Result<(u64, u64), CliError> {
        let (a, b): (i64, i64) = match self {
            Self::Postgres(store) => {
                sqlx::query_as(AssertSqlSafe(sql.to_owned()))
                    .fetch_one(store.pool())
                    .await
            }
            Self::Sqlite(store) => {
                sqlx::query_as(AssertSqlSafe(sql.to_owned()))
                    .fetch_one(store.pool())
                    .await
            }
        }
        .map_err(CliError::database)?;
        Ok((count(a), count(b)))
    }

    /// Rows of a name and a count.
    async fn rows_str_u64(&self, sql: &str) -> Result<Vec<(String, u64)>, CliError> {
        let rows: Vec<(String, i64)> = match self {
            Self::Postgres(store) => {
                sqlx::query_as(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(store.pool())
                    .await
            }
            Self::Sqlite(store) => {
                sqlx::query_as(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(store.pool())
                    .await
            }
        }
        .map_err(CliError::database)?;
        Ok(rows.into_iter().map(|(name, n)| (name, count(n))).collect())
    }

    /// Every projection's checkpoint (and saga's: they run as projections).
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, CliError> {
        let head = self.head().await?;
        let rows: Vec<(String, i64, i64)> = match self {
            Self::Postgres(store) => {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT projection, version::bigint, position FROM \"{}\".projection_checkpoints
                     ORDER BY projection, version",
                    store.schema()
                )))
                .fetch_all(store.pool())
                .await
            }
            Self::Sqlite(store) => {
                sqlx::query_as(
                    "SELECT projection, version, position FROM projection_checkpoints
                     ORDER BY projection, version",
                )
                .fetch_all(store.pool())
                .await
            }
        }
        .map_err(CliError::database)?;
        let parked = self.parked().await?;
        let mut checkpoints = Vec::with_capacity(rows.len());
        for (projection, version, position) in rows {
            let version = u32::try_from(version).unwrap_or(0);
            let position = count(position);
            let events_after = match self {
                Self::Postgres(store) => {
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
                        "SELECT count(*) FROM \"{}\".events e, \"{0}\".projection_checkpoints c
                         WHERE c.projection = $1 AND c.version = $2
                           AND (e.tx, e.position) > (c.tx::text::xid8, c.position)",
                        store.schema()
                    )))
                    .bind(&projection)
                    .bind(i32::try_from(version).unwrap_or(i32::MAX))
                    .fetch_one(store.pool())
                    .await
                }
                Self::Sqlite(store) => {
                    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE position > ?1")
                        .bind(i64::try_from(position).unwrap_or(i64::MAX))
                        .fetch_one(store.pool())
                        .await
                }
            }
            .map_err(CliError::database)?;
            let mine: Vec<&Parked> = parked
                .iter()
                .filter(|p| p.projection == projection && p.version == version)
                .collect();
            checkpoints.push(Checkpoint {
                events_after: count(events_after),
                parked_streams: mine.len() as u64,
                parked_events: mine.iter().map(|p| p.events).sum(),
                projection,
                version,
                position,
                head,
            });
        }
        Ok(checkpoints)
    }

    /// The parked streams of every projection.
    pub async fn parked(&self) -> Result<Vec<Parked>, CliError> {
        type Row = (String, i64, String, i64, i64, Option<String>);
        let rows: Vec<Row> = match self {
            Self::Postgres(store) => {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT projection, version::bigint, stream_id, min(stream_version), count(*),
                            (array_agg(error ORDER BY stream_version))[1]
                     FROM \"{}\".projection_dead_letters WHERE status = 'parked'
                     GROUP BY projection, version, stream_id
                     ORDER BY projection, version, stream_id",
                    store.schema()
                )))
                .fetch_all(store.pool())
                .await
            }
            Self::Sqlite(store) => {
                sqlx::query_as(
                    "SELECT d.projection, d.version, d.stream_id, d.stream_version,
                            (SELECT count(*) FROM projection_dead_letters c
                             WHERE c.projection = d.projection AND c.version = d.version
                               AND c.stream_id = d.stream_id AND c.status = 'parked'),
                            d.error
                     FROM projection_dead_letters d
                     WHERE d.status = 'parked' AND d.stream_version = (
                         SELECT min(f.stream_version) FROM projection_dead_letters f
                         WHERE f.projection = d.projection AND f.version = d.version
                           AND f.stream_id = d.stream_id AND f.status = 'parked')
                     ORDER BY d.projection, d.version, d.stream_id",
                )
                .fetch_all(store.pool())
                .await
            }
        }
        .map_err(CliError::database)?;
        Ok(rows
            .into_iter()
            .map(
                |(projection, version, stream_id, first_version, events, error)| Parked {
                    projection,
                    version: u32::try_from(version).unwrap_or(0),
                    stream_id,
                    first_version: count(first_version),
                    events: count(events),
                    error,
                },
            )
            .collect())
    }
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
