//! The embedded event store: SQLite (bundled, no server), in a file or in memory.
//!
//! SQLite runs one writing transaction at a time. Each append is one `BEGIN IMMEDIATE`
//! transaction (it takes the write lock at once, so concurrent appends queue instead of
//! failing), in which the head check and the inserts happen; global positions are therefore
//! given in commit order, and the feed is read by position alone: a reader never sees an event
//! without the ones before it. Files use write-ahead logging with full synchronous commits: an
//! acknowledged append survives a crash or a power cut.

mod import;
mod keys;
mod lock;
mod migrate;
mod sql_store;

use std::fmt;
use std::ops::RangeBounds;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use sqlx::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use super::Limits;
use super::backend::{
    StoredId, check_append, classify_retry, columns, decode_metadata, expected_code, stored_u64,
    to_i64, version_bounds,
};
use super::group::{Committer, Group, GroupCommit, Queued, Request};
use super::keys::{self as store_keys, Keyring};
use super::sql::AppendHook;
use super::tx::{self, Transaction, Tx};
use super::{
    EventStore, ExpectedVersion, FeedBatch, FeedPosition, FeedQuery, ReadEnvelope, Tenancy,
    Undecodable, runner_envelopes, strict_envelope,
};
use super::{FeedNotifier, FeedWakeups};
use crate::envelope::{EnvelopeFields, Metadata, NewEvent, Origin, RecordedEvent, Source};
use crate::error::{DecodeError, Error, Result};
use crate::event::Payload;
use crate::snapshot::Snapshot;

/// The columns of an [`Origin`] and the payload, in the order `origin_at` reads them: the
/// first columns of every envelope read.
macro_rules! origin_columns {
    () => {
        "stream_id, stream_version, position, aggregate_type, event_id, event_type, \
         schema_version, payload, recorded_at"
    };
}

/// The origin's columns alone ([`EnvelopeFields::Origin`]).
const ORIGIN_COLUMNS: &str = origin_columns!();

/// The columns of a [`Source`] and the payload, in the order `source_from_row` reads them
/// ([`EnvelopeFields::Source`]).
const SOURCE_COLUMNS: &str = "stream_id, position, event_type, schema_version, payload";

/// The envelope columns, in the order `envelope_from_row` reads them: the origin's, then the
/// metadata, correlation, causation, actor and tenant.
const ENVELOPE_COLUMNS: &str = concat!(
    origin_columns!(),
    ", metadata, correlation_id, causation_id, actor, nullif(tenant, '')"
);

/// An [`EventStore`] on SQLite. Cloning shares the pool.
///
/// ```no_run
/// # async fn run() -> factum::Result<()> {
/// use factum::store::SqliteStore;
///
/// let store = SqliteStore::open("bank.db").await?; // created when missing
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    notifier: FeedNotifier,
    location: String,
    /// The database file (`None`: in memory).
    path: Option<std::path::PathBuf>,
    /// The locks held on an in-memory database.
    memory_locks: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Run in every append's transaction (inline projections).
    hooks: std::sync::Arc<[std::sync::Arc<dyn AppendHook<SqliteStore>>]>,
    limits: Limits,
    /// Coalesces concurrent appends (`None`: off).
    group: Option<std::sync::Arc<Group>>,
    /// Seals and opens personal data (`None`: events with `#[pii]` fields are refused).
    keys: Option<Keyring>,
    /// Data subjects forgotten through this store ([`EventStore::forgets`]).
    forgets: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Whose events this store's statements see and write ([`SqliteStore::for_tenant`]).
    tenancy: Tenancy,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A database error, typed: a missing table means the database is not migrated.
pub(crate) fn backend(error: sqlx::Error) -> Error {
    if let Some(database) = error.as_database_error()
        && database.message().contains("no such table")
    {
        return Error::NotMigrated {
            schema: "main".to_owned(),
        };
    }
    Error::Database(error)
}

/// Microseconds, as the other stores keep them, so that envelopes compare equal across stores.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl SqliteStore {
    /// Opens (creating it when missing) the database file at `path`.
    ///
    /// # Errors
    /// [`Error::Backend`] when the file cannot be opened.
    pub async fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true);
        let mut store = Self::with_options(options, 8, path.as_ref().display().to_string()).await?;
        store.path = Some(path.as_ref().to_owned());
        Ok(store)
    }

    /// Connects to a `sqlite:` URL (`sqlite://bank.db`, `sqlite::memory:`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a malformed URL, [`Error::Backend`] when the database cannot
    /// be opened.
    pub async fn connect(url: &str) -> Result<Self> {
        if !url.starts_with("sqlite:") {
            return Err(Error::InvalidConfig(format!(
                "`{url}` is not a SQLite URL: use `sqlite://path/to/file.db` or `sqlite::memory:`"
            )));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::InvalidConfig(format!("`{url}` is not a SQLite URL: {e}")))?
            .create_if_missing(true);
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut store =
            Self::with_options(options, if memory { 1 } else { 8 }, url.to_owned()).await?;
        if !memory {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            store.path = Some(path.split('?').next().unwrap_or(path).into());
        }
        Ok(store)
    }

    /// A private in-memory database (gone with the store): for tests and examples.
    ///
    /// # Errors
    /// [`Error::Backend`] when SQLite cannot start.
    pub async fn in_memory() -> Result<Self> {
        Self::with_options(
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(backend)?,
            1,
            "memory".to_owned(),
        )
        .await
    }

    async fn with_options(
        options: SqliteConnectOptions,
        connections: u32,
        location: String,
    ) -> Result<Self> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            // An in-memory database lives as long as its connection.
            .min_connections(u32::from(connections == 1))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|error| {
                Error::Backend(
                    format!("cannot open the SQLite database {location}: {error}").into(),
                )
            })?;
        Ok(Self {
            pool,
            notifier: FeedNotifier::default(),
            location,
            path: None,
            memory_locks: std::sync::Arc::default(),
            hooks: std::sync::Arc::new([]),
            limits: Limits::default(),
            group: Some(Group::new(Self::GROUP_COMMIT)),
            keys: None,
            forgets: std::sync::Arc::default(),
            tenancy: Tenancy::None,
        })
    }

    /// This store as one tenant sees it (conjoined tenancy): its events and snapshots are the
    /// tenant's, and it reads no other tenant's (the feed, streams, loads, and the runners fed
    /// by it). SQLite has no row-level security: Factum's own statements keep tenants apart,
    /// each bound to the tenant's name (the `tenant` column), so raw SQL on the database file
    /// sees every tenant. A stream belongs to the tenant of its first event: stream ids are
    /// unique across tenants, so name them per tenant. It shares this store's pool (and so an
    /// in-memory database); its settings (limits, group commit, key provider, inline
    /// projections) are this store's; its key cache is its own.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `tenant` is empty, longer than 63 bytes, or holds other
    /// characters than ASCII letters, digits, `_`, `-` and `.`, or when the database is not
    /// migrated to tenants; a database error.
    pub async fn for_tenant(&self, tenant: &str) -> Result<Self> {
        let store = self.with_tenancy(Tenancy::tenant(tenant)?);
        let migrated: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'tenant')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        if !migrated {
            return Err(Error::InvalidConfig(format!(
                "the SQLite database {} keeps no tenants apart (its events have no tenant): run migrate() with this version",
                self.location
            )));
        }
        Ok(store)
    }

    /// This store reading every tenant's events (a cross-tenant projection's, an operator's).
    /// It appends nothing: an append is [`Error::TenantRequired`].
    #[must_use]
    pub fn across_tenants(&self) -> Self {
        self.with_tenancy(Tenancy::All)
    }

    /// Whose events this store sees.
    #[must_use]
    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    /// This store, sharing its pool, with another tenancy (and a key cache of its own).
    fn with_tenancy(&self, tenancy: Tenancy) -> Self {
        let mut store = self.clone();
        store.tenancy = tenancy;
        store.group = self.group.as_ref().map(|group| Group::new(group.config()));
        store.keys = self.keys.as_ref().map(Keyring::apart);
        store
    }

    /// The `tenant` value of the rows this store sees (`None`: every tenant's), bound into
    /// its statements as `(?n IS NULL OR tenant = ?n)`.
    pub(crate) fn scope(&self) -> Option<&str> {
        self.tenancy.scope()
    }

    /// Creates or upgrades the store's tables. Safe to run at every start.
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] when the database was migrated by a newer build.
    pub async fn migrate(&self) -> Result<()> {
        migrate::migrate(&self.pool, &self.location).await
    }

    /// This store (sharing its pool) with other size limits for appends.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The size limits of appends.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The default group commit: up to 64 appends in a group, one append or group at the
    /// database at once (SQLite writes one transaction at a time).
    pub const GROUP_COMMIT: GroupCommit = GroupCommit::new(1);

    super::group::group_commit_methods!(
        "Concurrent appends (from this value and its clones) that find `config.max_in_flight()` \
         appends or groups at the database wait, and go together in one `BEGIN IMMEDIATE` \
         transaction (one commit, one flush of the log), several-event appends each in a \
         savepoint. On by default ([`SqliteStore::GROUP_COMMIT`])."
    );

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Where the database is (its path, URL or `memory`).
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Removes the database file at `path` with its write-ahead log, its shared-memory and
    /// journal files and the runners' lock files beside it (close every store on it first);
    /// other files that merely start with its name (`app.db.bak`) stay. A missing file is not an
    /// error.
    ///
    /// # Errors
    /// When the directory cannot be read or a file cannot be removed.
    pub fn remove_files(path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        let path = path.as_ref();
        let (Some(name), dir) = (path.file_name(), path.parent()) else {
            return Ok(());
        };
        let dir = match dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let name = name.as_encoded_bytes();
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name();
            let Some(rest) = file.as_encoded_bytes().strip_prefix(name) else {
                continue;
            };
            let ours = rest.is_empty()
                || [b"-wal".as_slice(), b"-shm", b"-journal"].contains(&rest)
                || (rest.starts_with(b"-") && rest.ends_with(b".lock"));
            if ours {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// The database file (`None`: in memory).
    #[must_use]
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The stored events with these ids, for an idempotent retry.
    async fn stored_ids(
        &self,
        connection: &mut SqliteConnection,
        events: &[NewEvent],
    ) -> Result<Vec<StoredId>> {
        let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        let ids = serde_json::to_string(&ids).map_err(|e| Error::Backend(Box::new(e)))?;
        let rows = sqlx::query(
            "SELECT event_id, stream_id, stream_version FROM events
             WHERE event_id IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR tenant = ?2)",
        )
        .bind(ids)
        .bind(self.scope())
        .fetch_all(&mut *connection)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(StoredId {
                    event_id: uuid(row, 0)?,
                    stream_id: columns::get(row, 1)?,
                    stream_version: columns::unsigned::<_, i64, _>(row, 2)?,
                })
            })
            .collect()
    }

    async fn append_locked(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>> {
        if let [event] = events
            && let Some(recorded) = self
                .insert_one_checked(connection, stream_id, aggregate_type, expected, event)
                .await?
        {
            return Ok(vec![recorded]);
        }
        // Several events, or one the head check refused: look at the head to say why (every
        // tenant's: a stream id is unique across them).
        let head = sqlx::query(
            "SELECT stream_version, aggregate_type, tenant FROM events WHERE stream_id = ?1
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(backend)?;
        let (current, existing_type) = match &head {
            Some(row) => (
                columns::unsigned::<_, i64, u64>(row, 0)?,
                Some(columns::get::<_, String>(row, 1)?),
            ),
            None => (0, None),
        };
        let tenant = self.scope().unwrap_or_default();
        if let Some(row) = &head
            && columns::get::<_, &str>(row, 2)? != tenant
        {
            return Err(Error::StreamOfAnotherTenant {
                stream_id: stream_id.to_owned(),
            });
        }
        if !expected.accepts(current) {
            return Err(Error::Conflict {
                stream_id: stream_id.to_owned(),
                expected,
                actual: current,
            });
        }
        if let Some(existing) = existing_type
            && existing != aggregate_type
        {
            return Err(Error::AggregateTypeMismatch {
                stream_id: stream_id.to_owned(),
                existing,
                requested: aggregate_type.to_owned(),
            });
        }
        let recorded_at = now();
        let mut recorded = Vec::with_capacity(events.len());
        for (offset, event) in events.iter().cloned().enumerate() {
            let stream_version = current + 1 + offset as u64;
            let query = sqlx::query(
                "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id,
                     event_type, schema_version, payload, metadata, correlation_id, causation_id,
                     actor, recorded_at, tenant)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 RETURNING position",
            )
            .bind(stream_id)
            .bind(to_i64(stream_version))
            .bind(aggregate_type);
            let row = bind_event(query, &event, recorded_at)
                .bind(tenant)
                .fetch_one(&mut *connection)
                .await
                .map_err(backend)?;
            let position: i64 = columns::get(&row, 0)?;
            let position = stored_u64(position, "a global position")?;
            recorded.push(self.stored(
                event,
                (stream_id, aggregate_type),
                stream_version,
                position,
                recorded_at,
            ));
        }
        Ok(recorded)
    }
}

impl SqliteStore {
    /// The common append, one event, in one statement: the insert checks the expected version
    /// and the aggregate type against the stream's head itself. `None` when the check refused
    /// it (nothing was written).
    async fn insert_one_checked(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        event: &NewEvent,
    ) -> Result<Option<RecordedEvent>> {
        let recorded_at = now();
        let query = sqlx::query(
            "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id, event_type,
                 schema_version, payload, metadata, correlation_id, causation_id, actor,
                 recorded_at, tenant)
             SELECT ?1, coalesce(h.stream_version, 0) + 1, ?2, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                    ?12, ?13
             FROM (SELECT 1) AS one
             LEFT JOIN (SELECT stream_version, aggregate_type, tenant FROM events
                        WHERE stream_id = ?1
                        ORDER BY stream_version DESC LIMIT 1) AS h ON true
             WHERE (?3 = -1
                    OR (?3 = -2 AND h.stream_version IS NULL)
                    OR (?3 = -3 AND h.stream_version IS NOT NULL)
                    OR ?3 = coalesce(h.stream_version, 0))
               AND (h.aggregate_type IS NULL OR h.aggregate_type = ?2)
               AND (h.tenant IS NULL OR h.tenant = ?13)
             RETURNING position, stream_version",
        )
        .bind(stream_id)
        .bind(aggregate_type)
        .bind(expected_code(expected));
        let row = bind_event(query, event, recorded_at)
            .bind(self.scope().unwrap_or_default())
            .fetch_optional(&mut *connection)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let position = stored_u64(columns::get::<_, i64>(&row, 0)?, "a global position")?;
        let stream_version = columns::unsigned::<_, i64, _>(&row, 1)?;
        Ok(Some(self.stored(
            event.clone(),
            (stream_id, aggregate_type),
            stream_version,
            position,
            recorded_at,
        )))
    }

    /// [`SqliteStore::append_locked`], then the append hooks (inline projections) on the
    /// inserted events, in the same transaction.
    async fn append_hooked(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>> {
        let appended = self
            .append_locked(connection, stream_id, aggregate_type, expected, events)
            .await?;
        if !appended.is_empty() {
            for hook in self.hooks.iter() {
                hook.appended(self, &mut Tx::from(&mut *connection), &appended)
                    .await?;
            }
        }
        Ok(appended)
    }

    /// After a failed append (rolled back): was it the retry of an append already stored? Then
    /// its stored events; otherwise `error`. Looked up only on failure.
    async fn stored_retry(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        error: Error,
    ) -> Result<Vec<RecordedEvent>> {
        let stored = self.stored_ids(connection, events).await?;
        if stored.is_empty() {
            return Err(error);
        }
        let versions = classify_retry(stream_id, expected, events, &stored)?;
        read_stream_in(
            connection,
            self.scope(),
            stream_id,
            (*versions.start(), *versions.end()),
        )
        .await
    }

    /// An append (checked) in its own transaction.
    async fn append_alone(&self, request: Request<'_>) -> Result<Vec<RecordedEvent>> {
        let Request {
            stream_id,
            aggregate_type,
            expected,
            events,
            ..
        } = request;
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        match self
            .append_hooked(
                &mut transaction,
                stream_id,
                aggregate_type,
                expected,
                &events,
            )
            .await
        {
            Ok(appended) => {
                transaction.commit().await.map_err(backend)?;
                Ok(appended)
            }
            Err(error) => {
                // Nothing of a failed append stays (a multi-event append may have inserted some).
                transaction.rollback().await.map_err(backend)?;
                let mut connection = self.pool.acquire().await.map_err(backend)?;
                self.stored_retry(&mut connection, stream_id, expected, &events, error)
                    .await
            }
        }
    }

    /// Commits a group in one transaction, each append in a savepoint, and answers each: with
    /// its events, or its own failure (after looking whether it was the retry of a stored
    /// append). When the transaction fails as a whole, nothing of it is stored, and each
    /// append is tried alone.
    async fn commit_group(&self, group: Vec<Queued>) {
        let outcomes = match self.append_group(&group).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::debug!(appends = group.len(), %error, "group commit failed: each append alone");
                for mut queued in group {
                    let outcome = self.append_alone(queued.append.request()).await;
                    queued.reply.send(outcome);
                }
                return;
            }
        };
        for (mut queued, outcome) in group.into_iter().zip(outcomes) {
            let outcome = match outcome {
                Ok(appended) => Ok(appended),
                Err(error) => {
                    let append = queued.append.request();
                    match self.pool.acquire().await.map_err(backend) {
                        Ok(mut connection) => {
                            self.stored_retry(
                                &mut connection,
                                append.stream_id,
                                append.expected,
                                &append.events,
                                error,
                            )
                            .await
                        }
                        Err(_) => Err(error),
                    }
                }
            };
            queued.reply.send(outcome);
        }
    }

    /// The appends of `group` in one `BEGIN IMMEDIATE` transaction; the outcome of each. An
    /// append that can fail after writing (several events, or append hooks) runs in a savepoint
    /// that is rolled back when it fails; a single-event append needs none: its one `INSERT`
    /// is undone by SQLite alone when it fails, and the head check before it writes nothing.
    async fn append_group(&self, group: &[Queued]) -> Result<Vec<Result<Vec<RecordedEvent>>>> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let mut outcomes = Vec::with_capacity(group.len());
        for queued in group {
            let append = &queued.append;
            let guarded = append.events.len() > 1 || !self.hooks.is_empty();
            if guarded {
                sqlx::query("SAVEPOINT factum_group_append")
                    .execute(&mut *transaction)
                    .await
                    .map_err(backend)?;
            }
            let outcome = self
                .append_hooked(
                    &mut transaction,
                    &append.stream_id,
                    &append.aggregate_type,
                    append.expected,
                    &append.events,
                )
                .await;
            if guarded {
                let end = if outcome.is_ok() {
                    "RELEASE factum_group_append"
                } else {
                    "ROLLBACK TO factum_group_append; RELEASE factum_group_append"
                };
                sqlx::raw_sql(end)
                    .execute(&mut *transaction)
                    .await
                    .map_err(backend)?;
            }
            outcomes.push(outcome);
        }
        transaction.commit().await.map_err(backend)?;
        Ok(outcomes)
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: it holds SQLite's write lock until it
    /// ends): appends made in it with [`SqliteStore::append_in`] commit with its other writes,
    /// and wake live subscribers when it commits.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be written.
    pub async fn begin(&self) -> Result<Transaction> {
        let transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        Ok(Transaction::sqlite(transaction))
    }

    /// Appends inside the caller's transaction (from [`SqliteStore::begin`], which holds the
    /// write lock), so that the events commit or roll back with its other writes; the
    /// transaction wakes live subscribers when it commits. An idempotent retry of an append
    /// already stored returns the stored events.
    ///
    /// # Errors
    /// As [`EventStore::append`]; a failed append leaves nothing of itself in the transaction.
    pub async fn append_in<'c>(
        &self,
        transaction: impl Into<Tx<'c>>,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        check_append(stream_id, &events, &self.limits)?;
        self.tenancy.check_append(stream_id)?;
        let mut tx: Tx<'c> = transaction.into();
        let connection = tx::connection::<sqlx::SqliteConnection>(&mut tx)?;
        // The data keys in the caller's transaction, which holds the write lock.
        let plain = {
            let table = keys::TxKeys {
                connection: tokio::sync::Mutex::new(&mut *connection),
                scope: self.scope(),
            };
            store_keys::seal(self.keys.as_ref(), &table, &mut events).await?
        };
        // In a savepoint: a failed append leaves nothing of itself in the transaction.
        let mut savepoint = sqlx::Connection::begin(&mut *connection)
            .await
            .map_err(backend)?;
        let mut appended = match self
            .append_hooked(&mut savepoint, stream_id, aggregate_type, expected, &events)
            .await
        {
            Ok(appended) => {
                savepoint.commit().await.map_err(backend)?;
                appended
            }
            Err(error) => {
                savepoint.rollback().await.map_err(backend)?;
                let mut stored = self
                    .stored_retry(connection, stream_id, expected, &events, error)
                    .await?;
                store_keys::unseal_appended(&mut stored, plain);
                return Ok(stored);
            }
        };
        store_keys::unseal_appended(&mut appended, plain);
        if !appended.is_empty() {
            let notifier = self.notifier.clone();
            tx.wake_on_commit(move || notifier.notify());
        }
        Ok(appended)
    }
}

impl SqliteStore {
    /// The events of `rows` ([`ENVELOPE_COLUMNS`]), their personal data opened.
    pub(crate) async fn envelopes(&self, rows: &[SqliteRow]) -> Result<Vec<RecordedEvent>> {
        let mut events = rows
            .iter()
            .map(envelope_from_row)
            .collect::<Result<Vec<_>>>()?;
        self.open_pii(&mut events).await?;
        Ok(events)
    }

    /// Opens the personal data of events read (nothing to do without a key provider: sealed
    /// fields stay sealed).
    pub(crate) async fn open_pii(&self, events: &mut [RecordedEvent]) -> Result<()> {
        match &self.keys {
            Some(keys) => keys.open(self, events).await,
            None => Ok(()),
        }
    }

    /// The feed as runners read it ([`Backend::read_feed_parking`](super::sql::Backend)): an
    /// event whose metadata does not read is delivered with empty metadata and named in the
    /// batch's `undecodable`.
    pub(crate) async fn read_feed_parking(&self, query: &FeedQuery) -> Result<FeedBatch> {
        if query.limit == 0 {
            return Ok(FeedBatch::new(Vec::new(), query.after));
        }
        let after = to_i64(query.after.position);
        let limit = to_i64(query.limit as u64);
        // One read transaction: the head and the events from the same snapshot.
        let mut transaction = self.pool.begin().await.map_err(backend)?;
        let types = query
            .event_types
            .as_ref()
            .map(|types| serde_json::to_string(types).unwrap_or_else(|_| "[]".to_owned()));
        let columns = match query.fields {
            EnvelopeFields::Source => SOURCE_COLUMNS,
            EnvelopeFields::Origin => ORIGIN_COLUMNS,
            EnvelopeFields::All => ENVELOPE_COLUMNS,
        };
        let rows = match &types {
            Some(types) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM events
                     WHERE position > ?1 AND event_type IN (SELECT value FROM json_each(?3))
                       AND (?4 IS NULL OR tenant = ?4)
                     ORDER BY position LIMIT ?2"
                )))
                .bind(after)
                .bind(limit)
                .bind(types)
                .bind(self.scope())
                .fetch_all(&mut *transaction)
                .await
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM events
                     WHERE position > ?1 AND (?3 IS NULL OR tenant = ?3)
                     ORDER BY position LIMIT ?2"
                )))
                .bind(after)
                .bind(limit)
                .bind(self.scope())
                .fetch_all(&mut *transaction)
                .await
            }
        }
        .map_err(backend)?;
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(&mut *transaction)
            .await
            .map_err(backend)?;
        transaction.commit().await.map_err(backend)?;
        let (mut events, undecodable, stopped) = match query.fields {
            EnvelopeFields::Source => {
                runner_envelopes(&rows, |row| Ok((source_from_row(row)?, None)))?
            }
            EnvelopeFields::Origin => {
                runner_envelopes(&rows, |row| Ok((origin_from_row(row)?, None)))?
            }
            EnvelopeFields::All => runner_envelopes(&rows, envelope_or_defect)?,
        };
        let next = match events.last() {
            Some(last) if stopped || events.len() >= query.limit => last.feed_position(),
            _ => {
                let head = stored_u64(head, "a global position")?;
                FeedPosition::new(head, head).max(query.after)
            }
        };
        self.open_pii(&mut events).await?;
        let mut batch = FeedBatch::new(events, next);
        batch.undecodable = undecodable;
        Ok(batch)
    }
}

/// Binds `event`'s columns as the parameters `?4` to `?12` of an insert into `events`
/// (`event_id` to `recorded_at`, in table order).
fn bind_event<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    event: &'q NewEvent,
    recorded_at: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(event.event_id.to_string())
        .bind(event.event_type.as_ref())
        .bind(i64::from(event.schema_version))
        .bind(event.payload.as_str())
        .bind(serde_json::to_string(&event.metadata).unwrap_or_else(|_| "{}".to_owned()))
        .bind(event.correlation_id.to_string())
        .bind(event.causation_id.to_string())
        .bind(event.actor.as_deref())
        .bind(recorded_at)
}

impl SqliteStore {
    /// The envelope of `event`, stored in `stream` (its id and aggregate type) at
    /// `stream_version` and `position` (SQLite's commit order too), by this store's tenant.
    fn stored(
        &self,
        event: NewEvent,
        stream: (&str, &str),
        stream_version: u64,
        position: u64,
        recorded_at: DateTime<Utc>,
    ) -> RecordedEvent {
        let mut recorded =
            event.into_recorded(stream, stream_version, (position, position), recorded_at);
        recorded.tenant = self.tenancy.name().map(str::to_owned);
        recorded
    }
}

/// A UUID stored as text.
pub(crate) fn uuid(row: &SqliteRow, index: usize) -> Result<Uuid> {
    let text: String = columns::get(row, index)?;
    Uuid::parse_str(&text).map_err(|error| Error::Corrupt {
        reason: format!("`{text}` is stored as an id, which it is not ({error})"),
    })
}

/// Reads the envelope columns ([`ENVELOPE_COLUMNS`]).
///
/// # Errors
/// [`Error::Decode`] naming the event when its metadata is no JSON object; [`Error::Corrupt`]
/// when a column that identifies it does not read.
fn envelope_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    strict_envelope(envelope_or_defect(row)?)
}

/// Reads the origin columns ([`ORIGIN_COLUMNS`]): an envelope whose other fields hold their
/// placeholders ([`EnvelopeFields::Origin`]).
fn origin_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    let (origin, payload) = origin_at(row)?;
    Ok(origin.into_envelope(payload))
}

/// Reads the source columns ([`SOURCE_COLUMNS`]): an envelope whose other fields hold their
/// placeholders ([`EnvelopeFields::Source`]).
fn source_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    let position = columns::unsigned::<_, i64, _>(row, 1)?;
    let source = Source {
        stream_id: columns::get(row, 0)?,
        global_position: position,
        tx: position,
        event_type: columns::get(row, 2)?,
        schema_version: columns::unsigned::<_, i64, _>(row, 3)?,
    };
    let payload: &str = columns::get(row, 4)?;
    Ok(source.into_envelope(Payload::from_stored_json(payload.to_owned())))
}

/// An event's origin and payload, from the columns [`ORIGIN_COLUMNS`] and [`ENVELOPE_COLUMNS`]
/// begin with. Each column's stored type is checked: SQLite would turn any value into text.
fn origin_at(row: &SqliteRow) -> Result<(Origin<'_>, Payload)> {
    let position = columns::unsigned::<_, i64, _>(row, 2)?;
    let origin = Origin {
        stream_id: columns::get(row, 0)?,
        stream_version: columns::unsigned::<_, i64, _>(row, 1)?,
        global_position: position,
        tx: position,
        aggregate_type: columns::get(row, 3)?,
        event_id: uuid(row, 4)?,
        event_type: columns::get(row, 5)?,
        schema_version: columns::unsigned::<_, i64, _>(row, 6)?,
        recorded_at: columns::get(row, 8)?,
    };
    let payload: &str = columns::get(row, 7)?;
    Ok((origin, Payload::from_stored_json(payload.to_owned())))
}

/// [`envelope_from_row`], but an event whose metadata does not read (not a JSON object, or
/// not even text) comes back with empty metadata and the defect, for the runners to park.
fn envelope_or_defect(row: &SqliteRow) -> Result<ReadEnvelope> {
    let metadata = match columns::get::<_, String>(row, 9) {
        Ok(text) => decode_metadata(&text),
        Err(error) => Err(DecodeError::column("metadata", error.to_string())),
    };
    let (metadata, defect) = match metadata {
        Ok(metadata) => (metadata, None),
        Err(cause) => (Metadata::new(), Some(cause)),
    };
    let (origin, payload) = origin_at(row)?;
    let mut event = origin.into_envelope(payload);
    event.metadata = metadata;
    event.correlation_id = uuid(row, 10)?;
    event.causation_id = uuid(row, 11)?;
    event.actor = columns::get(row, 12)?;
    event.tenant = columns::get(row, 13)?;
    let defect = defect.map(|cause| Undecodable::of(&event, &cause));
    Ok((event, defect))
}

/// The stream's events between two versions, as a store of `scope` sees them.
async fn read_stream_in(
    connection: &mut SqliteConnection,
    scope: Option<&str>,
    stream_id: &str,
    (from, to): (u64, u64),
) -> Result<Vec<RecordedEvent>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENVELOPE_COLUMNS} FROM events
         WHERE stream_id = ?1 AND stream_version BETWEEN ?2 AND ?3
           AND (?4 IS NULL OR tenant = ?4)
         ORDER BY stream_version"
    )))
    .bind(stream_id)
    .bind(to_i64(from))
    .bind(to_i64(to))
    .bind(scope)
    .fetch_all(&mut *connection)
    .await
    .map_err(backend)?;
    rows.iter().map(envelope_from_row).collect()
}

impl SqliteStore {
    /// An append, checked, then alone or in a group (see [`EventStore::append`]).
    async fn append_checked(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        check_append(stream_id, &events, &self.limits)?;
        self.tenancy.check_append(stream_id)?;
        let plain = store_keys::seal(self.keys.as_ref(), self, &mut events).await?;
        let request = Request {
            stream_id,
            aggregate_type,
            expected,
            head: None,
            events,
        };
        let mut appended = match &self.group {
            Some(group) => group.append(self, request).await?,
            None => self.append_alone(request).await?,
        };
        store_keys::unseal_appended(&mut appended, plain);
        if !appended.is_empty() {
            self.notifier.notify();
        }
        Ok(appended)
    }
}

impl EventStore for SqliteStore {
    async fn forget(&self, subject: &str) -> Result<bool> {
        Self::forget(self, subject).await
    }

    fn forgets(&self) -> u64 {
        self.forgets.load(std::sync::atomic::Ordering::Acquire)
    }

    fn tenant(&self) -> Option<&str> {
        self.tenancy.name()
    }

    async fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let started = std::time::Instant::now();
        let outcome = self
            .append_checked(stream_id, aggregate_type, expected, events)
            .await;
        crate::metrics::appended("sqlite", aggregate_type, &outcome, started.elapsed());
        outcome
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> Result<Vec<RecordedEvent>> {
        let mut connection = self.pool.acquire().await.map_err(backend)?;
        let mut events = read_stream_in(
            &mut connection,
            self.scope(),
            stream_id,
            version_bounds(&versions),
        )
        .await?;
        drop(connection);
        self.open_pii(&mut events).await?;
        Ok(events)
    }

    async fn read_feed(&self, query: &FeedQuery) -> Result<FeedBatch> {
        self.read_feed_parking(query).await?.strict()
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        let version: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(stream_version), 0) FROM events
             WHERE stream_id = ?1 AND (?2 IS NULL OR tenant = ?2)",
        )
        .bind(stream_id)
        .bind(self.scope())
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        stored_u64(version, "a stream version")
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE event_id = ?1 AND (?2 IS NULL OR tenant = ?2)"
        )))
        .bind(event_id.to_string())
        .bind(self.scope())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let mut events = row.as_ref().map(envelope_from_row).transpose()?;
        self.open_pii(events.as_mut_slice()).await?;
        Ok(events)
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT stream_version, aggregate_type, state_version, state, taken_at
             FROM snapshots WHERE stream_id = ?1 AND (?2 IS NULL OR tenant = ?2)",
        )
        .bind(stream_id)
        .bind(self.scope())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut snapshot = Snapshot::new(
            stream_id,
            columns::get::<_, String>(&row, 1)?,
            columns::unsigned::<_, i64, _>(&row, 0)?,
            columns::unsigned::<_, i64, _>(&row, 2)?,
            Payload::from_stored_json(columns::get(&row, 3)?),
        );
        snapshot.taken_at = columns::get(&row, 4)?;
        Ok(Some(snapshot))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        sqlx::query(
            // The snapshot is its stream's tenant's; a store of another tenant saves none.
            "INSERT INTO snapshots (stream_id, aggregate_type, stream_version, state_version,
                                    state, taken_at, tenant)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, owner.tenant
             FROM (SELECT coalesce((SELECT tenant FROM events WHERE stream_id = ?1 LIMIT 1),
                                   ?7, '') AS tenant) AS owner
             WHERE ?7 IS NULL OR owner.tenant = ?7
             ON CONFLICT (stream_id) DO UPDATE SET
                 aggregate_type = excluded.aggregate_type,
                 stream_version = excluded.stream_version,
                 state_version = excluded.state_version,
                 state = excluded.state,
                 taken_at = excluded.taken_at,
                 tenant = excluded.tenant
             WHERE snapshots.stream_version < excluded.stream_version
                OR snapshots.state_version <> excluded.state_version",
        )
        .bind(&snapshot.stream_id)
        .bind(&snapshot.aggregate_type)
        .bind(to_i64(snapshot.stream_version))
        .bind(i64::from(snapshot.state_version))
        .bind(snapshot.state.as_str())
        .bind(snapshot.taken_at)
        .bind(self.scope())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    fn wakeups(&self) -> FeedWakeups {
        self.notifier.subscribe()
    }
}

/// Group commit: the appends of a group in one transaction, each with its own outcome.
impl Committer for SqliteStore {
    /// Appends run one after the other in the group's transaction, each seeing the ones
    /// before it.
    const SAME_STREAM: bool = true;

    fn alone(
        &self,
        request: Request<'_>,
    ) -> impl std::future::Future<Output = Result<Vec<RecordedEvent>>> + Send {
        self.append_alone(request)
    }

    fn commit(&self, group: Vec<Queued>) -> impl std::future::Future<Output = ()> + Send {
        self.commit_group(group)
    }
}
