//! The embedded event store: SQLite (bundled, no server), in a file or in memory.
//!
//! SQLite runs one writing transaction at a time. Each append is one `BEGIN IMMEDIATE`
//! transaction (it takes the write lock at once, so concurrent appends queue instead of
//! failing), in which the head check and the inserts happen; global positions are therefore
//! given in commit order, and the feed is read by position alone: a reader never sees an event
//! without the ones before it. Files use write-ahead logging with full synchronous commits: an
//! acknowledged append survives a crash or a power cut.

mod append;
mod feed;
mod import;
mod keys;
mod lock;
mod migrate;
mod rows;
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

pub(crate) use self::rows::uuid;
use self::rows::{ENVELOPE_COLUMNS, envelope_from_row};
use super::Limits;
use super::backend::{columns, stored_u64, to_i64, version_bounds};
use super::group::{Group, GroupCommit};
use super::keys::Keyring;
use super::sql::AppendHook;
use super::{EventStore, ExpectedVersion, FeedBatch, FeedQuery, Tenancy};
use super::{FeedNotifier, FeedWakeups};
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::event::Payload;
use crate::snapshot::Snapshot;

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
