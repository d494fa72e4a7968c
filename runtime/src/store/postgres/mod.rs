//! The PostgreSQL event store.
//!
//! # The global feed never skips
//!
//! Positions come from a sequence, which hands them out in allocation order, not commit order:
//! a transaction can take position 10, commit after another transaction's position 11 was read,
//! and a reader that checkpoints "after 11" would never see 10. Each row therefore records its
//! writing transaction (`tx`, a `xid8`), and readers only read rows whose transaction is below
//! the oldest transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`), ordered and
//! checkpointed by `(tx, position)`. Every transaction below that horizon has finished, so no
//! row can appear behind a reader's checkpoint later.
//!
//! The trade-off: an open transaction holds the horizon back and delays readers (never losing
//! anything) until it ends; [`PostgresStore::horizon`] reports the oldest such transaction. There
//! is no global write lock and no timeout that gives up on gaps.
//!
//! Each stream is delivered in version order: an append writes version n + 1 only after seeing
//! version n committed, so its transaction id is the newer one (see the `append` module).

mod append;
mod archive;
mod identity;
mod import;
mod keys;
mod listen;
mod migrate;
mod sql_store;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row as _};

use self::append::Append;
pub use self::identity::ClusterAdoption;
use self::listen::{Listener, Notifier};
use super::FeedWakeups;
use super::Limits;
use super::backend::{
    check_append, columns, decode_metadata, stored_u64, to_i64, version_bounds, version_i32,
};
use super::group::{Group, GroupCommit, Request};
use super::heads::WrittenHeads;
use super::keys::{self as store_keys, Keyring, LastKey};
use super::sql::{AppendHook, Schema};
use super::tx::{self, Transaction, Tx};
use super::{
    EventStore, ExpectedVersion, FeedBatch, FeedPosition, FeedQuery, HistoryItem, KnownHead,
    ReadEnvelope, SpareBatches, StreamEvent, StreamEventRef, Tenancy, Undecodable, blank_envelope,
    refill_envelopes, strict_envelope,
};
use crate::envelope::{EnvelopeFields, NewEvent, Origin, RecordedEvent, Source};
use crate::error::{Error, Result};
use crate::event::Payload;
use crate::snapshot::Snapshot;

/// Maps a database error, recognising an event store that was never migrated.
fn db_error(schema: &Schema, error: sqlx::Error) -> Error {
    if let Some(changed) = identity::cluster_changed(schema, &error) {
        return changed;
    }
    if let Some(database) = error.as_database_error()
        && matches!(
            database.code().as_deref(),
            Some("42P01" | "42883" | "3F000")
        )
    {
        return Error::NotMigrated {
            schema: schema.name().to_owned(),
        };
    }
    Error::Database(error)
}

/// The store's SQL, qualified with its schema once, at construction.
#[derive(Debug)]
struct Statements {
    append: append::Inserts,
    /// The same, storing the data keys that the append offers (see [`store_keys::Offers`]).
    append_offering: append::Inserts,
    append_group: Arc<str>,
    diagnose_append: Arc<str>,
    read_stream: Arc<str>,
    read_stream_events: Arc<str>,
    replay_stream: Arc<str>,
    load_history: Arc<str>,
    /// The runners' feed reads: by envelope fields, without and with an event-type filter.
    read_feed: FeedReads,
    stream_version: Arc<str>,
    read_event: Arc<str>,
    load_snapshot: Arc<str>,
    save_snapshot: Arc<str>,
    horizon: Arc<str>,
}

/// The columns of an [`Origin`] and the payload, in the order `origin_at` reads them: the
/// first columns of every envelope read.
///
/// Every read sends `tx`, `payload`, `metadata` and a snapshot's `state` as stored, uncast: an
/// `xid8` travels as eight bytes, read as an `int8`, and `json` as its text, read as such
/// ([`columns::text`]). A cast to `text` (and on to `bigint`) converts each value out and in
/// again in the server: of a 5,000-event feed read's execution, a third to a half.
macro_rules! origin_columns {
    () => {
        "e.stream_id, e.stream_version, e.position, e.tx, e.aggregate_type, \
         e.event_id, e.event_type, e.schema_version, e.payload, e.sealed, e.recorded_at"
    };
}

/// The origin's columns alone ([`EnvelopeFields::Origin`]).
const ORIGIN_COLUMNS: &str = origin_columns!();

/// The columns of a [`Source`] and the payload, in the order `refill_source` reads them
/// ([`EnvelopeFields::Source`]).
const SOURCE_COLUMNS: &str =
    "e.stream_id, e.position, e.tx, e.event_type, e.schema_version, e.payload, e.sealed";

/// The feed statements of the runners, one per set of envelope fields read: `[unfiltered,
/// filtered by event type]`, each also bounded (the table read up to a position: the last of
/// a batch of archived events, see `PostgresStore::guess_cold`).
#[derive(Debug)]
struct FeedReads {
    all: [Arc<str>; 4],
    origin: [Arc<str>; 4],
    source: [Arc<str>; 4],
}

impl FeedReads {
    fn new(statement: impl Fn(&str, &str) -> Arc<str>) -> Self {
        let each = |columns| {
            [
                statement(columns, ""),
                statement(columns, "AND e.event_type = ANY ($4)"),
                statement(columns, "AND (e.tx, e.position) <= ($4::text::xid8, $5)"),
                statement(
                    columns,
                    "AND e.event_type = ANY ($4) AND (e.tx, e.position) <= ($5::text::xid8, $6)",
                ),
            ]
        };
        Self {
            all: each(ENVELOPE_COLUMNS),
            origin: each(ORIGIN_COLUMNS),
            source: each(SOURCE_COLUMNS),
        }
    }

    fn get(&self, fields: EnvelopeFields, filtered: bool, bounded: bool) -> &Arc<str> {
        let statements = match fields {
            EnvelopeFields::Source => &self.source,
            EnvelopeFields::Origin => &self.origin,
            EnvelopeFields::All => &self.all,
        };
        &statements[usize::from(filtered) + 2 * usize::from(bounded)]
    }
}

/// The envelope columns, in the order `envelope_from_row` reads them: the origin's, then the
/// metadata, correlation, causation, actor and tenant.
pub(crate) const ENVELOPE_COLUMNS: &str = concat!(
    origin_columns!(),
    // No ", " inside a column: the feed counts the columns by it.
    ", e.metadata, e.correlation_id, e.causation_id, e.actor, nullif(e.tenant,'')"
);

/// The columns of a [`StreamEvent`], in the order `stream_event_from_row` reads them.
const STREAM_EVENT_COLUMNS: &str =
    "e.stream_version, e.aggregate_type, e.event_type, e.schema_version, e.payload, e.sealed";

/// The columns of a replayed event, in the order `replayed_event` reads them: those of
/// [`STREAM_EVENT_COLUMNS`], with the aggregate type sent only when it is not the replaying
/// aggregate's (`$2`): every event of a stream has its type, and each column of each row costs
/// the server and the client alike. The sealed data of personal data comes last
/// ([`Placement::Column`](crate::pii::Placement::Column)), as bytes.
const REPLAY_COLUMNS: &str = "e.stream_version, nullif(e.aggregate_type, $2), e.event_type, \
    e.schema_version, e.payload, e.sealed";

impl Statements {
    fn new(schema: &Schema, tenancy: &Tenancy) -> Self {
        let s = schema.quoted();
        // A tenant's feed reads name its tenant as row-level security does, so that PostgreSQL
        // can walk the tenant's own entries of `events_tenant_feed_idx` rather than every
        // tenant's (the policy alone, an OR of two settings, leaves it no index to use). The
        // index holds tenants' rows only (`tenant <> ''`), which the statement says too.
        let tenant_rows = match tenancy {
            Tenancy::Tenant(_) => {
                "AND e.tenant <> '' AND e.tenant = current_setting('factum.tenant', true)"
            }
            Tenancy::None | Tenancy::All => "",
        };
        // The feed's horizon in stored terms: this cluster's oldest running transaction plus the
        // store's offset (see `identity`), which also refuses a store moved to another cluster.
        let xmin = identity::stored_xid(schema, "pg_snapshot_xmin(pg_current_snapshot())");
        let cold = archive::ColdArchives::column(schema);
        // The horizon comes first, in a row of its own; then the events, whose rows leave the
        // horizon's columns NULL: each column of each row costs the server and the client alike.
        let feed = |columns: &str, filter: &str| -> Arc<str> {
            let nulls = vec!["NULL"; columns.split(", ").count()].join(", ");
            format!(
                "WITH horizon AS MATERIALIZED (
                     SELECT x.xmin, x.xmin::text::bigint AS xmin_number,
                            x.newest::text::bigint AS newest_number,
                            -- Anything at or above the horizon is committed or in flight, and
                            -- not yet deliverable.
                            coalesce(x.newest >= x.xmin, false) AS held_back,
                            -- Archived events after the position, in the cold tier.
                            {cold} AS cold
                     FROM (SELECT {xmin} AS xmin,
                                  -- max() reads one index entry.
                                  (SELECT max(w.tx) FROM {s}.events w) AS newest) x
                 )
                 (SELECT h.xmin_number, h.held_back, h.newest_number, h.cold, {nulls}
                  FROM horizon h)
                 UNION ALL
                 SELECT NULL, NULL, NULL, NULL, f.*
                 FROM horizon h,
                      LATERAL (SELECT {columns}
                               FROM {s}.events e
                               WHERE (e.tx, e.position) > ($1::text::xid8, $2)
                                 AND e.tx < h.xmin
                                 {tenant_rows}
                                 {filter}
                               ORDER BY e.tx, e.position
                               LIMIT $3) f"
            )
            .into()
        };
        Self {
            append: append::Inserts::new(schema, false),
            append_offering: append::Inserts::new(schema, true),
            append_group: append::insert_group_sql(schema).into(),
            diagnose_append: append::diagnose_sql(schema).into(),
            read_stream: format!(
                "SELECT {ENVELOPE_COLUMNS} FROM {s}.events e
                 WHERE e.stream_id = $1 AND e.stream_version BETWEEN $2 AND $3
                 ORDER BY e.stream_version"
            )
            .into(),
            read_stream_events: format!(
                "SELECT {STREAM_EVENT_COLUMNS} FROM {s}.events e
                 WHERE e.stream_id = $1 AND e.stream_version BETWEEN $2 AND $3
                 ORDER BY e.stream_version"
            )
            .into(),
            // No ORDER BY: for a long stream the planner reads the table's pages and then sorts
            // (a third of the statement's time), where the pages hold the stream in order
            // almost always (the log is append-only). The reader puts rows in order.
            replay_stream: format!(
                "SELECT {REPLAY_COLUMNS} FROM {s}.events e WHERE e.stream_id = $1"
            )
            .into(),
            // The snapshot (when asked for) and the events after it, in one round trip. The
            // upper bound (every version) makes the versions a range to PostgreSQL's planner,
            // estimated as a narrow one: alone, "after the snapshot's version" (known only as
            // the statement runs) is guessed at a third of the stream's rows, and where one
            // stream fills much of the table the generic plan scanned the whole table and
            // sorted it (1 ms for 10,000 events, against 0.05 ms through the primary key).
            load_history: format!(
                "WITH snapshot AS MATERIALIZED (
                     SELECT stream_version, aggregate_type, state_version, state, taken_at
                     FROM {s}.snapshots WHERE stream_id = $1
                 )
                 (SELECT 1 AS kind, stream_version, aggregate_type, NULL::text, state_version, state,
                         NULL::bytea, taken_at
                  FROM snapshot)
                 UNION ALL
                 (SELECT 0, {REPLAY_COLUMNS}, NULL::timestamptz FROM {s}.events e
                  WHERE e.stream_id = $1
                    AND e.stream_version > coalesce((SELECT stream_version FROM snapshot), 0)
                    AND e.stream_version <= {max_version}
                  ORDER BY e.stream_version)",
                max_version = i64::MAX
            )
            .into(),
            read_feed: FeedReads::new(feed),
            stream_version: format!(
                "SELECT coalesce(max(e.stream_version), 0) FROM {s}.events e WHERE e.stream_id = $1"
            )
            .into(),
            read_event: format!("SELECT {ENVELOPE_COLUMNS} FROM {s}.events e WHERE e.event_id = $1")
                .into(),
            // The columns line up with the snapshot row of `load_history`.
            load_snapshot: format!(
                "SELECT stream_version, aggregate_type, NULL::text, state_version, state,
                        NULL::bytea, taken_at
                 FROM {s}.snapshots WHERE stream_id = $1"
            )
            .into(),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots AS current
                     (stream_id, aggregate_type, stream_version, state_version, state, taken_at)
                 VALUES ($1, $2, $3, $4, $5::text::json, $6)
                 ON CONFLICT (stream_id) DO UPDATE SET
                     aggregate_type = EXCLUDED.aggregate_type,
                     stream_version = EXCLUDED.stream_version,
                     state_version = EXCLUDED.state_version,
                     state = EXCLUDED.state,
                     taken_at = EXCLUDED.taken_at
                 WHERE current.stream_version < EXCLUDED.stream_version
                    OR current.state_version <> EXCLUDED.state_version"
            )
            .into(),
            // Transactions holding an id, from `pg_locks` (readable by every role: each holds
            // its own id's lock) joined to `pg_stat_activity` (its columns are null for other
            // roles' sessions without `pg_read_all_stats`), and prepared (two-phase) ones,
            // which no session holds; the oldest of them all.
            horizon: format!(
                "WITH holders AS (
                     SELECT l.transactionid AS xid, l.pid, NULL::text AS gid,
                            a.xact_start AS since, a.datname::text AS database,
                            a.state, left(a.query, 500) AS query, a.usename::text AS owner
                     FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock'
                       AND l.granted AND l.pid IS NOT NULL AND l.pid <> pg_backend_pid()
                     UNION ALL
                     SELECT p.transaction, NULL, p.gid, p.prepared, p.database::text,
                            'prepared', NULL, p.owner::text
                     FROM pg_prepared_xacts p
                 )
                 SELECT {xmin}::text::bigint,
                        (SELECT max(e.tx)::text::bigint FROM {s}.events e),
                        (h.xid IS NOT NULL),
                        h.pid, extract(epoch FROM now() - h.since)::float8, h.database,
                        h.state, h.query, h.gid, h.owner
                 FROM (SELECT 1) AS one
                 LEFT JOIN LATERAL (
                     SELECT * FROM holders ORDER BY age(holders.xid) DESC LIMIT 1
                 ) h ON true"
            )
            .into(),
        }
    }
}

/// An [`EventStore`] on PostgreSQL (version 13 or later). Cloning shares the pool.
///
/// ```no_run
/// # async fn run() -> factum::Result<()> {
/// use factum::store::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://postgres@localhost/bank").await?;
/// store.migrate().await?; // creates or upgrades the `factum` schema; safe at every start
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// Run in every append's transaction (inline projections).
    hooks: Arc<[Arc<dyn AppendHook<PostgresStore>>]>,
    limits: Limits,
    /// Coalesces concurrent appends (`None`: off).
    group: Option<Arc<Group>>,
    /// Seals and opens personal data (`None`: events with `#[pii]` fields are refused).
    keys: Option<Keyring>,
}

struct Inner {
    pool: PgPool,
    schema: Schema,
    sql: Statements,
    channel: String,
    notifier: Notifier,
    listener: Listener,
    /// The heads this store committed (see [`WrittenHeads`]).
    heads: WrittenHeads,
    /// Data subjects forgotten through this store ([`EventStore::forgets`]).
    forgets: std::sync::atomic::AtomicU64,
    /// Whose events the pool's sessions see (set when they connect).
    tenancy: Tenancy,
    /// Archive files read lately.
    #[cfg(feature = "archive")]
    cold: archive::ColdCache,
    /// Envelopes of feed batches the runners are done with, for the next reads to fill.
    spare_batches: SpareBatches,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema.name())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// The default schema.
    pub const DEFAULT_SCHEMA: &'static str = "factum";

    /// Server settings for every connection (`PgConnectOptions::options`): the server sends
    /// TCP keepalives after 30 s of silence, every 10 s, and gives up after 3 unanswered (so a
    /// client that vanished behind a dead network releases its transaction, its locks and the
    /// feed's horizon within about a minute, not the operating system's two hours). Pass them
    /// to pools you build yourself; [`PostgresStore::connect`] does.
    pub const SERVER_KEEPALIVES: [(&'static str, &'static str); 3] = [
        ("tcp_keepalives_idle", "30"),
        ("tcp_keepalives_interval", "10"),
        ("tcp_keepalives_count", "3"),
    ];

    /// Connects a pool to `url` (with [`PostgresStore::SERVER_KEEPALIVES`]) and uses the
    /// default schema.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached or `url` is not a PostgreSQL
    /// URL.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(Error::Database)?
            .options(Self::SERVER_KEEPALIVES);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(Error::Database)?;
        Self::with_schema(pool, Self::DEFAULT_SCHEMA)
    }

    /// A store on `pool`, in the default schema.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self::build(pool, Schema::default())
    }

    /// A store on `pool` in its own schema, so that several applications can share a server.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `schema` is not a plain lowercase identifier.
    pub fn with_schema(pool: PgPool, schema: &str) -> Result<Self> {
        Ok(Self::build(pool, Schema::new(schema)?))
    }

    fn build(pool: PgPool, schema: Schema) -> Self {
        Self::build_for(pool, schema, Tenancy::None)
    }

    fn build_for(pool: PgPool, schema: Schema, tenancy: Tenancy) -> Self {
        Self {
            hooks: Arc::new([]),
            limits: Limits::default(),
            group: Some(Group::new(Self::GROUP_COMMIT)),
            keys: None,
            inner: Arc::new(Inner {
                sql: Statements::new(&schema, &tenancy),
                channel: schema.channel("factum"),
                schema,
                pool,
                notifier: Notifier::new(),
                listener: Listener::new(),
                heads: WrittenHeads::default(),
                forgets: std::sync::atomic::AtomicU64::new(0),
                spare_batches: SpareBatches::default(),
                tenancy,
                #[cfg(feature = "archive")]
                cold: archive::ColdCache::default(),
            }),
        }
    }

    /// This store as one tenant sees it (conjoined tenancy): its events and snapshots are the
    /// tenant's, it reads no other tenant's (the feed, streams, loads, and every runner fed by
    /// it), and PostgreSQL enforces it with row-level security on the sessions of a pool of its
    /// own, which name the tenant when they connect (`factum.tenant`; no statement pays for it).
    /// A stream belongs to the tenant of its first event: stream ids are unique across tenants,
    /// so name them per tenant. Its settings (limits, group commit, key provider, inline
    /// projections) are this store's. The runners on it keep their bookkeeping (checkpoints,
    /// dead letters, saga instances, leases) apart from other tenants' runners of the same name.
    ///
    /// It checks, once, that PostgreSQL keeps tenants apart for it: that its role is no
    /// superuser and cannot bypass row-level security, and that the schema forces it. Make it
    /// once per tenant and keep it (clones share it): each call opens a pool, and a key cache,
    /// of its own.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `tenant` is empty, longer than 63 bytes, or holds other
    /// characters than ASCII letters, digits, `_`, `-` and `.`; or when the role bypasses
    /// row-level security, or the schema does not force it (not migrated to tenants); a
    /// database error.
    pub async fn for_tenant(&self, tenant: &str) -> Result<Self> {
        let tenancy = Tenancy::tenant(tenant)?;
        let store = self.with_tenancy([("factum.tenant", tenant)], tenancy);
        store.check_isolation().await?;
        Ok(store)
    }

    /// Whether PostgreSQL keeps this store's tenant apart: its role bound by row-level security,
    /// which the schema forces on the events.
    async fn check_isolation(&self) -> Result<()> {
        let (bypasses, forced): (bool, Option<bool>) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user),
                    (SELECT relrowsecurity AND relforcerowsecurity FROM pg_class
                     WHERE oid = to_regclass('{s}.events'))",
            s = self.inner.schema.quoted()
        )))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))?;
        if bypasses {
            return Err(Error::InvalidConfig(
                "a tenant's store connects as a superuser or a role with BYPASSRLS, which row-level security does not bind: every tenant's events would be visible; connect as the application role (PostgresStore::application_grants)".to_owned(),
            ));
        }
        if forced != Some(true) {
            return Err(Error::InvalidConfig(format!(
                "schema {} does not keep tenants apart (no forced row-level security on its events): run migrate() with this version",
                self.inner.schema.name()
            )));
        }
        Ok(())
    }

    /// This store reading every tenant's events (a cross-tenant projection's, an operator's):
    /// its sessions connect with `factum.all_tenants` on. It appends nothing: an append is
    /// [`Error::TenantRequired`].
    #[must_use]
    pub fn across_tenants(&self) -> Self {
        self.with_tenancy([("factum.all_tenants", "on")], Tenancy::All)
    }

    /// Whose events this store sees.
    #[must_use]
    pub fn tenancy(&self) -> &Tenancy {
        &self.inner.tenancy
    }

    /// This store on a pool like its own whose sessions connect with `settings`.
    fn with_tenancy<'a>(
        &self,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
        tenancy: Tenancy,
    ) -> Self {
        let pool = &self.inner.pool;
        let options = (*pool.connect_options()).clone().options(settings);
        let pool = pool.options().clone().connect_lazy_with(options);
        let mut store = Self::build_for(pool, self.inner.schema.clone(), tenancy);
        store.hooks = Arc::clone(&self.hooks);
        store.limits = self.limits;
        store.group = self.group.as_ref().map(|group| Group::new(group.config()));
        store.keys = self.keys.as_ref().map(Keyring::apart);
        store
    }

    /// Creates or upgrades the store's tables in its schema. Safe to run at every start and
    /// from several processes at once.
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] when the schema was migrated by a newer build, or a
    /// database error.
    pub async fn migrate(&self) -> Result<()> {
        migrate::migrate(&self.inner.pool, &self.inner.schema).await
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

    /// The default group commit: up to 64 appends in a group, one group at the server at once
    /// (the largest groups, so the fewest commits: with durable commits the log's flush is
    /// what a busy server waits for), but an append goes alone, on its own connection, while
    /// fewer than 4 appends are at the server (a few separate single-row statements run side by
    /// side faster than one statement carrying them), and appends held up for 100 ms by a
    /// group that is itself held up (a lock) go alone.
    pub const GROUP_COMMIT: GroupCommit = GroupCommit::new(1).alone_up_to(4);

    super::group::group_commit_methods!(
        "Concurrent appends (from this value and its clones) that find `config.max_in_flight()` \
         appends or groups at the server, carrying at least `config.alone_below()` appends, \
         wait, and go together as one statement. On by default \
         ([`PostgresStore::GROUP_COMMIT`]). A store with inline projections \
         ([`PostgresStore::with_inline`]) appends alone: their handlers run in each append's \
         transaction."
    );

    /// An append, checked, then alone or in a group; measured ([`crate::metrics`]).
    async fn append_request(&self, request: Request<'_>) -> Result<Vec<RecordedEvent>> {
        let started = std::time::Instant::now();
        let aggregate_type = request.aggregate_type;
        let outcome = self.append_checked(request).await;
        crate::metrics::appended("postgresql", aggregate_type, &outcome, started.elapsed());
        outcome
    }

    /// See [`PostgresStore::append_request`].
    async fn append_checked(&self, mut request: Request<'_>) -> Result<Vec<RecordedEvent>> {
        check_append(request.stream_id, &request.events, &self.limits)?;
        self.inner.tenancy.check_append(request.stream_id)?;
        let (stream_id, aggregate_type) = (request.stream_id, request.aggregate_type);
        if request.head.is_none() {
            request.head = self
                .inner
                .heads
                .known(stream_id, aggregate_type, request.expected);
        }
        // The keys of new subjects are stored with the events, in their statement, unless
        // the append is a transaction of its own (the append hooks).
        let mut offers = store_keys::Offers::default();
        let mut plain = store_keys::seal_offering(
            self.keys.as_ref(),
            self,
            &mut request.events,
            self.hooks.is_empty().then_some(&mut offers),
        )
        .await?;
        let mut stored = None;
        if !offers.is_empty() {
            let events = std::mem::take(&mut request.events);
            match self.append_offering(&request, events, &offers).await? {
                append::Offered::Stored(appended) => {
                    if let Some(keys) = &self.keys {
                        keys.keep(offers);
                    }
                    stored = Some(appended);
                }
                append::Offered::NotStored(mut events, answer) => {
                    if let Some(keys) = &self.keys {
                        keys.settle(offers, answer).await?;
                    }
                    store_keys::unseal(&mut events, plain);
                    plain = store_keys::seal(self.keys.as_ref(), self, &mut events).await?;
                    request.events = events;
                }
            }
        }
        let mut appended = match (stored, &self.group) {
            (Some(appended), _) => appended,
            (None, Some(group)) if self.hooks.is_empty() && !request.events.is_empty() => {
                group.append(self, request).await?
            }
            (None, _) => self.append_alone(request).await?,
        };
        store_keys::unseal_appended(&mut appended, plain);
        if let Some(tenant) = self.tenant() {
            for event in &mut appended {
                event.tenant = Some(tenant.to_owned());
            }
        }
        if let Some(last) = appended.last() {
            self.inner
                .heads
                .wrote(stream_id, aggregate_type, last.stream_version);
            self.notify_subscribers();
        }
        Ok(appended)
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding the store's tables.
    #[must_use]
    pub fn schema(&self) -> &str {
        self.inner.schema.name()
    }

    /// The SQL that gives the application role `role` what the runtime needs on this store's
    /// schema and nothing more: appending and reading events (never updating, deleting or
    /// truncating them), the runners' bookkeeping, snapshots. Run it as the schema's owner after
    /// [`migrate`](Self::migrate); the application then connects as `role`, which owns nothing
    /// and cannot disable the append-only trigger. Shipped as
    /// `runtime/sql/postgres/application_role.sql`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `role` is not a plain lowercase identifier (1 to 63
    /// letters, digits and underscores).
    pub fn application_grants(&self, role: &str) -> Result<String> {
        let role = crate::store::sql::Schema::new(role).map_err(|_| {
            Error::InvalidConfig(format!(
                "`{role}` is not a usable role name here: use 1 to 63 lowercase letters, digits and underscores, not starting with a digit"
            ))
        })?;
        Ok(include_str!("../../../sql/postgres/application_role.sql")
            .replace("{schema}", self.inner.schema.quoted())
            .replace("{role}", role.quoted()))
    }

    /// The schema, validated, for SQL text.
    #[cfg(feature = "cli")]
    pub(crate) fn sql_schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// Runs the append hooks on events just inserted in `transaction`.
    async fn run_hooks(
        &self,
        transaction: &mut sqlx::PgConnection,
        events: &[RecordedEvent],
    ) -> Result<()> {
        for hook in self.hooks.iter() {
            hook.appended(self, &mut Tx::from(&mut *transaction), events)
                .await?;
        }
        Ok(())
    }

    pub(crate) fn fail(&self, error: sqlx::Error) -> Error {
        db_error(&self.inner.schema, error)
    }

    /// What holds the global feed back: readers see events up to the oldest running transaction,
    /// so a long transaction (of any application on the server) delays them until it ends.
    ///
    /// # Errors
    /// A database error.
    pub async fn horizon(&self) -> Result<FeedHorizon> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.horizon.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        let get = |error| self.fail(error);
        let oldest = if row.try_get::<bool, _>(2).map_err(get)? {
            Some(OpenTransaction {
                pid: row.try_get(3).map_err(get)?,
                age: row
                    .try_get::<Option<f64>, _>(4)
                    .map_err(get)?
                    .map(|seconds| Duration::from_secs_f64(seconds.max(0.0))),
                database: row.try_get(5).map_err(get)?,
                state: row.try_get(6).map_err(get)?,
                query: row.try_get(7).map_err(get)?,
                prepared: row.try_get(8).map_err(get)?,
                owner: row.try_get(9).map_err(get)?,
            })
        } else {
            None
        };
        crate::metrics::feed_horizon(
            self.schema(),
            oldest
                .as_ref()
                .and_then(|oldest| oldest.age)
                .unwrap_or_default(),
        );
        Ok(FeedHorizon {
            horizon_tx: columns::unsigned::<_, i64, _>(&row, 0)?,
            newest_event_tx: columns::unsigned_opt::<_, i64, _>(&row, 1)?,
            oldest_open_transaction: oldest,
        })
    }

    /// Appends inside the caller's transaction, so that the events commit (or roll back) with
    /// the caller's other writes (an outbox, a read model updated in the same transaction).
    /// `transaction` is a [`Transaction`] of this store (`store.begin()`), which wakes live
    /// subscribers when it commits, or a sqlx transaction or connection of its pool (then call
    /// [`PostgresStore::notify_subscribers`] after the commit, or subscribers find the events
    /// at their next poll).
    ///
    /// Append before the transaction's other writes: a transaction takes its id at its first
    /// write, and an append whose transaction id is older than the stream's last event is
    /// refused ([`Error::StaleTransaction`]) to keep the feed in stream order.
    ///
    /// # Errors
    /// As [`EventStore::append`], plus [`Error::StaleTransaction`]. A lost race is reported as
    /// [`Error::Conflict`]: roll back and retry the transaction.
    pub async fn append_in<'c>(
        &self,
        transaction: impl Into<Tx<'c>>,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let mut tx: Tx<'c> = transaction.into();
        let plain = store_keys::seal(self.keys.as_ref(), self, &mut events).await?;
        let append = Append {
            stream_id,
            aggregate_type,
            expected,
            events,
            offers: None,
        };
        let connection = tx::connection::<sqlx::PgConnection>(&mut tx)?;
        let mut appended = self.append_in_transaction(connection, append).await?;
        store_keys::unseal_appended(&mut appended, plain);
        if !appended.is_empty() {
            let store = self.clone();
            tx.wake_on_commit(move || store.notify_subscribers());
        }
        Ok(appended)
    }

    /// Begins a transaction: appends made in it with [`PostgresStore::append_in`] commit with
    /// its other writes, and wake live subscribers when it commits.
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin(&self) -> Result<Transaction> {
        let transaction = self.inner.pool.begin().await.map_err(|e| self.fail(e))?;
        Ok(Transaction::postgres(transaction))
    }

    /// Wakes live subscribers (after appends committed through [`PostgresStore::append_in`]).
    pub fn notify_subscribers(&self) {
        self.inner.listener.wake_local();
        self.inner
            .notifier
            .appended(&self.inner.pool, &self.inner.channel);
    }

    /// Reads back the events of an idempotent retry.
    async fn read_versions(
        &self,
        stream_id: &str,
        versions: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_stream(stream_id, versions).await
    }

    /// The rows of a stream read (`sql` takes the stream and inclusive version bounds).
    async fn stream_rows(
        &self,
        sql: &Arc<str>,
        stream_id: &str,
        (from, to): (u64, u64),
    ) -> Result<Vec<PgRow>> {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(stream_id)
            .bind(to_i64(from))
            .bind(to_i64(to))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The feed as runners read it ([`Backend::read_feed_parking`](super::sql::Backend)): an
    /// event whose metadata does not read is delivered with empty metadata and named in the
    /// batch's `undecodable`.
    pub(crate) async fn read_feed_parking(&self, query: &FeedQuery) -> Result<FeedBatch> {
        #[cfg(feature = "archive")]
        for _ in 1..archive::STREAM_READ_ATTEMPTS {
            let read = self.read_feed_once(query).await;
            // An archive restored after the read found it: its events are back in the table.
            if let Err(Error::Archive(crate::archive::ArchiveError::Read { archive, .. })) = &read
                && !self.archive_exists(*archive).await?
            {
                continue;
            }
            return read;
        }
        self.read_feed_once(query).await
    }

    /// One read of [`PostgresStore::read_feed_parking`].
    async fn read_feed_once(&self, query: &FeedQuery) -> Result<FeedBatch> {
        if query.limit == 0 {
            return Ok(FeedBatch::new(Vec::new(), query.after));
        }
        let mut guess = self.guess_cold(query).await;
        loop {
            if let Some(batch) = self.read_feed_guessing(query, guess.take()).await? {
                return Ok(batch);
            }
            // The cold tier moved since the guess (an archiving or a restore committed): read
            // again without one, which always gives a batch.
        }
    }

    /// A read of the feed, the table's rows read up to `guess`'s last archived event when
    /// there is a guess; `None` when the statement's own list of archives shows the guess
    /// wrong.
    async fn read_feed_guessing(
        &self,
        query: &FeedQuery,
        guess: Option<archive::ColdGuess>,
    ) -> Result<Option<FeedBatch>> {
        let limit = to_i64(query.limit as u64);
        let sql = &self.inner.sql;
        let statement =
            sql.read_feed
                .get(query.fields, query.event_types.is_some(), guess.is_some());
        let mut sql = sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(to_i64(query.after.tx))
            .bind(to_i64(query.after.position))
            .bind(limit);
        if let Some(types) = &query.event_types {
            sql = sql.bind(types);
        }
        let through = guess.as_ref().map(|guess| guess.through);
        if let Some(through) = through {
            sql = sql.bind(to_i64(through.tx)).bind(to_i64(through.position));
        }
        let rows = sql
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        // The horizon's row, then the events'.
        let Some((first, rows)) = rows.split_first() else {
            return Err(Error::Corrupt {
                reason: "a read of the feed returned no horizon".to_owned(),
            });
        };
        // The union keeps its branches' order in practice; say so plainly if it ever does not.
        let Some(horizon) = columns::unsigned_opt::<_, i64, u64>(first, 0)? else {
            return Err(Error::Corrupt {
                reason: "a read of the feed returned an event before its horizon".to_owned(),
            });
        };
        let held_back: bool = columns::get(first, 1)?;
        let newest: Option<u64> = columns::unsigned_opt::<_, i64, _>(first, 2)?;
        let cold = columns::get::<_, Option<String>>(first, 3)?
            .map(|cold| archive::ColdArchives::parse(&cold))
            .transpose()?;
        let guess = match guess {
            Some(guess) if !guess.holds(cold.as_ref()) => return Ok(None),
            guess => guess,
        };
        self.remember_cold(cold.as_ref());
        // The rows go into the envelopes of batches the runners are done with.
        let spare = || self.inner.spare_batches.take();
        let (mut events, mut undecodable, stopped) = match query.fields {
            EnvelopeFields::Source => refill_envelopes(rows, spare(), |row, slot| {
                refill_source(row, 4, slot).map(|()| None)
            })?,
            EnvelopeFields::Origin => refill_envelopes(rows, spare(), |row, slot| {
                refill_origin(row, 4, slot).map(|()| None)
            })?,
            EnvelopeFields::All => {
                refill_envelopes(rows, spare(), |row, slot| refill_envelope(row, 4, slot))?
            }
        };
        // Whether the table's events stopped the batch (its size reached, or an event no
        // runner may pass).
        let cut = stopped || events.len() >= query.limit;
        let mut next = match (events.last(), newest, through) {
            (Some(last), _, _) if cut => last.feed_position(),
            // The table was read up to the guessed archived events' last.
            (_, _, Some(through)) => through.max(query.after),
            // Everything below the horizon has been read: every transaction below it has ended.
            // The position goes no further than the newest stored event, so that no checkpoint
            // runs ahead of the events (a store adopted by another cluster continues after the
            // newest event: see `PostgresStore::adopt_cluster`).
            (_, Some(newest), None) => {
                FeedPosition::end_of_tx(newest.min(horizon.saturating_sub(1))).max(query.after)
            }
            (_, None, None) => query.after,
        };
        // Archived events after the position (guessed, or read now): merged in feed order, up
        // to the batch's size, and no further than the table's events when those stopped the
        // batch.
        let archived = match (guess, cold) {
            (Some(guess), _) => Some(guess.events),
            (None, Some(cold)) => Some(
                self.cold_feed(
                    &cold,
                    query.after,
                    query.limit,
                    query.event_types.as_deref(),
                )
                .await?,
            ),
            (None, None) => None,
        };
        if let Some(mut archived) = archived {
            let bound = cut.then_some(next);
            archived.retain(|(event, _)| bound.is_none_or(|bound| event.feed_position() <= bound));
            if !archived.is_empty() {
                for (event, defect) in archived {
                    undecodable.extend(defect);
                    events.push(event);
                }
                events.sort_by_key(RecordedEvent::feed_position);
                if events.len() > query.limit {
                    events.truncate(query.limit);
                    undecodable.retain(|bad| events.iter().any(|e| e.event_id == bad.event_id));
                }
                if let Some(last) = events.last() {
                    next = if bound.is_some() || events.len() >= query.limit {
                        last.feed_position()
                    } else {
                        next.max(last.feed_position())
                    };
                }
            }
        }
        self.open_pii(&mut events).await?;
        let mut batch = FeedBatch::new(events, next).held_back(held_back);
        batch.undecodable = undecodable;
        Ok(Some(batch))
    }

    /// The events of `rows`, their personal data opened.
    pub(crate) async fn read_rows(
        &self,
        rows: &[PgRow],
        first_column: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let mut events = rows
            .iter()
            .map(|row| envelope_from_row(row, first_column))
            .collect::<Result<Vec<_>>>()?;
        self.open_pii(&mut events).await?;
        Ok(events)
    }

    /// Opens the personal data of events read (nothing to do without a key provider: sealed
    /// fields stay sealed).
    async fn open_pii(&self, events: &mut [RecordedEvent]) -> Result<()> {
        match &self.keys {
            Some(keys) => keys.open(self, events).await,
            None => Ok(()),
        }
    }

    /// A stream read (`sql`, whose rows hold the stream version at column `version`) with the
    /// versions the table lacks (archived) merged in from the cold tier, in version order: the
    /// table's rows as `hot` reads them, the archived events as `archived` makes them. Read
    /// again when the cold tier moved under the read; refused when a gap stays.
    async fn stream_read<T: Send>(
        &self,
        sql: &Arc<str>,
        stream_id: &str,
        bounds: (u64, u64),
        version: usize,
        hot: impl Fn(&PgRow) -> Result<T> + Sync,
        archived: impl Fn(ReadEnvelope) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        for _ in 0..archive::STREAM_READ_ATTEMPTS {
            let rows = self.stream_rows(sql, stream_id, bounds).await?;
            let versions = rows
                .iter()
                .map(|row| version_at(row, version))
                .collect::<Result<Vec<_>>>()?;
            let Some((from, through)) = archive::missing_span(bounds.0, bounds.1, &versions) else {
                return rows.iter().map(&hot).collect();
            };
            let mut merged = BTreeMap::new();
            for event in self.cold_stream(stream_id, from, through).await? {
                merged.insert(event.0.stream_version, archived(event)?);
            }
            for (row, version) in rows.iter().zip(versions) {
                merged.insert(version, hot(row)?);
            }
            if archive::contiguous(bounds.0, merged.keys().copied()) {
                return Ok(merged.into_values().collect());
            }
        }
        Err(archive::moved(stream_id))
    }

    /// A stream's archived versions `from..=through`, by version. An archived event whose
    /// metadata does not read loads all the same: a load reads no metadata from the table.
    async fn cold_versions(
        &self,
        stream_id: &str,
        from: u64,
        through: u64,
    ) -> Result<BTreeMap<u64, RecordedEvent>> {
        Ok(self
            .cold_stream(stream_id, from, through)
            .await?
            .into_iter()
            .map(|(event, _)| (event.stream_version, event))
            .collect())
    }

    /// Hands an archived event to `visit` as a replayed one, its personal data opened.
    async fn visit_recorded<F>(
        &self,
        event: &RecordedEvent,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        let event = StreamEventRef::new(
            event.stream_version,
            &event.aggregate_type,
            &event.event_type,
            event.schema_version,
            event.event.as_str(),
        );
        self.visit_event(
            Replayed {
                event,
                sealed: None,
            },
            visit,
            last,
        )
        .await
    }

    /// Hands the event of a replayed row ([`REPLAY_COLUMNS`]) to `visit`, its personal data
    /// opened.
    async fn visit_replayed<F>(
        &self,
        row: &PgRow,
        aggregate_type: &str,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        self.visit_event(replayed_event(row, 0, aggregate_type)?, visit, last)
            .await
    }

    /// Hands a replayed event to `visit`, its personal data opened.
    async fn visit_event<F>(
        &self,
        event: Replayed<'_>,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        visit(HistoryItem::Event(self.open_replayed(event, last).await?))
    }

    /// A replayed event with its personal data opened, into `last`'s buffer when it had sealed
    /// fields (`last` also holds the key of the read's event before). Without a key provider,
    /// a row's sealed column is put inside its payload, sealed, as the other reads hand it on.
    async fn open_replayed<'r>(
        &self,
        replayed: Replayed<'r>,
        last: &'r mut LastKey,
    ) -> Result<StreamEventRef<'r>> {
        let Replayed { event, sealed } = replayed;
        let Some(keys) = &self.keys else {
            return Ok(match sealed {
                Some(sealed) => {
                    event.with_payload(last.hold(crate::pii::inline(event.payload, sealed)?))
                }
                None => event,
            });
        };
        Ok(
            match keys
                .open_payload_in_place(self, event.payload, sealed, last)
                .await?
            {
                Some(opened) => event.with_payload(opened),
                None => event,
            },
        )
    }
}

/// What holds the global feed's horizon back.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FeedHorizon {
    /// Readers see events of transactions below this id.
    pub horizon_tx: u64,
    /// The transaction of the newest stored event.
    pub newest_event_tx: Option<u64>,
    /// The oldest transaction still running (holding the horizon), if any.
    pub oldest_open_transaction: Option<OpenTransaction>,
}

/// A transaction holding the feed back: a running one (its session's details come from
/// `pg_stat_activity`), or a prepared (two-phase) one, which no session holds and which lasts
/// until someone runs `COMMIT PREPARED` or `ROLLBACK PREPARED` with its `prepared` id.
///
/// Any role sees that a transaction is open, its process, database and owner. Its age, state
/// and query are `None` for other roles' sessions unless the store's role may read all
/// statistics: `GRANT pg_read_all_stats TO <role>;` (PostgreSQL 10 or later).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OpenTransaction {
    /// Its backend's process id; `None` for a prepared transaction.
    pub pid: Option<i32>,
    /// How long it has been running (since it was prepared, for a prepared one); `None` when
    /// the role may not see it.
    pub age: Option<Duration>,
    /// Its database.
    pub database: Option<String>,
    /// Its state (`active`, `idle in transaction`, `prepared`...).
    pub state: Option<String>,
    /// Its current or last query (truncated).
    pub query: Option<String>,
    /// The global id of a prepared transaction (`PREPARE TRANSACTION '<id>'`).
    pub prepared: Option<String>,
    /// The role running it.
    pub owner: Option<String>,
}

/// Reads a snapshot's columns starting at `at`: `stream_version, aggregate_type, (unused),
/// state_version, state, (unused), taken_at` (lined up with a replayed event's).
fn snapshot_from_row(row: &PgRow, at: usize, stream_id: &str) -> Result<Snapshot> {
    let mut snapshot = Snapshot::new(
        stream_id,
        columns::get::<_, String>(row, at + 1)?,
        columns::unsigned::<_, i64, _>(row, at)?,
        columns::unsigned::<_, i32, _>(row, at + 3)?,
        Payload::from_stored_json(columns::text(row, at + 4)?.to_owned()),
    );
    snapshot.taken_at = columns::get::<_, DateTime<Utc>>(row, at + 6)?;
    Ok(snapshot)
}

/// Reads the replay columns ([`REPLAY_COLUMNS`]) starting at `at`: an aggregate type left out
/// is the replaying one's. The statements' own casts fix the text columns' types, so they are
/// decoded without comparing types first (this runs once per replayed event).
fn replayed_event<'r>(row: &'r PgRow, at: usize, aggregate_type: &'r str) -> Result<Replayed<'r>> {
    let event = StreamEventRef::new(
        columns::unsigned_unchecked(row, at)?,
        columns::get_unchecked::<_, Option<&str>>(row, at + 1)?.unwrap_or(aggregate_type),
        columns::get_unchecked(row, at + 2)?,
        columns::unsigned_unchecked(row, at + 3)?,
        columns::text(row, at + 4)?,
    );
    Ok(Replayed {
        event,
        sealed: columns::get_unchecked(row, at + 5)?,
    })
}

/// A replayed event as its row holds it: the payload, and the sealed data of its personal data
/// when the row keeps that in its `sealed` column.
struct Replayed<'r> {
    event: StreamEventRef<'r>,
    sealed: Option<&'r [u8]>,
}

/// The payload of a row whose columns `at` and `at + 1` are `payload` and `sealed`, with its
/// sealed data, if any, inside it ([`pii::inline`]): opened later, or handed on sealed.
fn stored_payload(row: &PgRow, at: usize) -> Result<Payload> {
    Ok(Payload::from_stored_json(
        row_payload(row, at)?.into_owned(),
    ))
}

/// The text of [`stored_payload`], borrowed from the row unless it has sealed data to put
/// inside it.
fn row_payload(row: &PgRow, at: usize) -> Result<std::borrow::Cow<'_, str>> {
    let payload = columns::text(row, at)?;
    Ok(
        match columns::get_unchecked::<_, Option<&[u8]>>(row, at + 1)? {
            Some(sealed) => crate::pii::inline(payload, sealed)?.into(),
            None => payload.into(),
        },
    )
}

/// The stream version in a stream read's row, at column `at`.
fn version_at(row: &PgRow, at: usize) -> Result<u64> {
    columns::unsigned_unchecked(row, at)
}

/// Reads the stream event columns ([`STREAM_EVENT_COLUMNS`]) starting at `at`.
fn stream_event_from_row(row: &PgRow, at: usize) -> Result<StreamEvent> {
    Ok(StreamEvent {
        stream_version: columns::unsigned::<_, i64, _>(row, at)?,
        aggregate_type: columns::get(row, at + 1)?,
        event_type: columns::get(row, at + 2)?,
        schema_version: columns::unsigned::<_, i32, _>(row, at + 3)?,
        payload: stored_payload(row, at + 4)?,
    })
}

/// Reads the envelope columns ([`ENVELOPE_COLUMNS`]) starting at `at`.
///
/// # Errors
/// [`Error::Decode`] naming the event when its metadata is no JSON object; [`Error::Corrupt`]
/// when a column that identifies it does not read.
fn envelope_from_row(row: &PgRow, at: usize) -> Result<RecordedEvent> {
    let mut event = blank_envelope();
    let defect = refill_envelope(row, at, &mut event)?;
    strict_envelope((event, defect))
}

/// Reads the source columns ([`SOURCE_COLUMNS`]) starting at `at` into `envelope`, whose
/// other fields get their placeholders ([`EnvelopeFields::Source`]), in the room its strings
/// have (see [`SpareBatches`]).
fn refill_source(row: &PgRow, at: usize, envelope: &mut RecordedEvent) -> Result<()> {
    let source = Source {
        stream_id: columns::get_unchecked(row, at)?,
        global_position: columns::unsigned_unchecked(row, at + 1)?,
        tx: columns::unsigned_unchecked(row, at + 2)?,
        event_type: columns::get_unchecked(row, at + 3)?,
        schema_version: columns::unsigned_unchecked(row, at + 4)?,
    };
    source.refill(envelope, &row_payload(row, at + 5)?);
    Ok(())
}

/// Reads the origin columns ([`ORIGIN_COLUMNS`]) starting at `at` into `envelope`, as
/// [`refill_source`] does ([`EnvelopeFields::Origin`]).
fn refill_origin(row: &PgRow, at: usize, envelope: &mut RecordedEvent) -> Result<()> {
    let origin = origin_only(row, at)?;
    origin.refill(envelope, &row_payload(row, at + 8)?);
    Ok(())
}

/// An event's origin, from the columns [`ORIGIN_COLUMNS`] and [`ENVELOPE_COLUMNS`] begin with,
/// from `at` (the payload follows it). The statements' own casts fix the text columns' types,
/// so they are decoded without comparing types first (this runs once per event read).
fn origin_only(row: &PgRow, at: usize) -> Result<Origin<'_>> {
    Ok(Origin {
        stream_id: columns::get_unchecked(row, at)?,
        stream_version: columns::unsigned_unchecked(row, at + 1)?,
        global_position: columns::unsigned_unchecked(row, at + 2)?,
        tx: columns::unsigned_unchecked(row, at + 3)?,
        aggregate_type: columns::get_unchecked(row, at + 4)?,
        event_id: columns::get(row, at + 5)?,
        event_type: columns::get_unchecked(row, at + 6)?,
        schema_version: columns::unsigned_unchecked(row, at + 7)?,
        recorded_at: columns::get(row, at + 10)?,
    })
}

/// Reads the envelope columns ([`ENVELOPE_COLUMNS`]) starting at `at` into `envelope`, as
/// [`refill_source`] does; an event whose metadata does not read gets empty metadata, and the
/// defect comes back, for the runners to park ([`envelope_from_row`] refuses it).
fn refill_envelope(
    row: &PgRow,
    at: usize,
    envelope: &mut RecordedEvent,
) -> Result<Option<Undecodable>> {
    refill_origin(row, at, envelope)?;
    envelope.correlation_id = columns::get(row, at + 12)?;
    envelope.causation_id = columns::get(row, at + 13)?;
    envelope.actor = columns::get(row, at + 14)?;
    envelope.tenant = columns::get(row, at + 15)?;
    Ok(read_metadata(envelope, columns::text(row, at + 11)?))
}

/// Puts its stored metadata into `event`; when it does not read, leaves `event`'s metadata
/// as it is (empty) and returns the defect (for the runners to park).
fn read_metadata(event: &mut RecordedEvent, metadata: &str) -> Option<Undecodable> {
    match decode_metadata(metadata) {
        Ok(metadata) => {
            event.metadata = metadata;
            None
        }
        Err(cause) => Some(Undecodable::of(event, &cause)),
    }
}

impl EventStore for PostgresStore {
    async fn forget(&self, subject: &str) -> Result<bool> {
        Self::forget(self, subject).await
    }

    fn forgets(&self) -> u64 {
        self.inner
            .forgets
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn tenant(&self) -> Option<&str> {
        self.inner.tenancy.name()
    }

    async fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        self.append_request(Request {
            stream_id,
            aggregate_type,
            expected,
            head: None,
            events,
        })
        .await
    }

    async fn append_after(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        head: KnownHead,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        self.append_request(Request {
            stream_id,
            aggregate_type,
            expected: ExpectedVersion::Exact(head.version()),
            head: Some(head),
            events,
        })
        .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> Result<Vec<RecordedEvent>> {
        let (sql, bounds) = (&self.inner.sql.read_stream, version_bounds(&versions));
        let mut events = self
            .stream_read(
                sql,
                stream_id,
                bounds,
                1,
                |row| envelope_from_row(row, 0),
                strict_envelope,
            )
            .await?;
        self.open_pii(&mut events).await?;
        Ok(events)
    }

    async fn read_feed(&self, query: &FeedQuery) -> Result<FeedBatch> {
        self.read_feed_parking(query).await?.strict()
    }

    async fn read_stream_events(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> Result<Vec<StreamEvent>> {
        let (sql, bounds) = (
            &self.inner.sql.read_stream_events,
            version_bounds(&versions),
        );
        let archived = |(event, _): ReadEnvelope| {
            Ok(StreamEvent {
                stream_version: event.stream_version,
                aggregate_type: event.aggregate_type,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.event,
            })
        };
        let mut events = self
            .stream_read(
                sql,
                stream_id,
                bounds,
                0,
                |row| stream_event_from_row(row, 0),
                archived,
            )
            .await?;
        if let Some(keys) = &self.keys {
            let mut last = LastKey::default();
            for event in &mut events {
                if let Some(opened) = keys
                    .open_payload(self, event.payload.as_str(), &mut last)
                    .await?
                {
                    event.payload = opened.payload;
                }
            }
        }
        Ok(events)
    }

    async fn replay_history<F>(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        with_snapshot: bool,
        mut visit: F,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        let mut last_key = LastKey::default();
        if !with_snapshot {
            // The plain stream read is cheaper than the union with the snapshot. Each event is
            // decoded and applied as its row arrives, while the server sends the next ones: a
            // long stream costs the longer of the two sides, not their sum. The rows come in
            // no promised order: one that comes early waits for those before it.
            let mut rows = sqlx::query(AssertSqlSafe(self.inner.sql.replay_stream.clone()))
                .bind(stream_id)
                .bind(aggregate_type)
                .fetch(&self.inner.pool);
            let mut next = 1;
            let mut early = BTreeMap::new();
            while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows)
                .await
                .map_err(|e| self.fail(e))?
            {
                // Each row is decoded once; one that comes early, again in its turn.
                let event = replayed_event(&row, 0, aggregate_type)?;
                if event.event.stream_version != next {
                    early.insert(event.event.stream_version, row);
                    continue;
                }
                self.visit_event(event, &mut visit, &mut last_key).await?;
                next += 1;
                while let Some(row) = early.remove(&next) {
                    self.visit_replayed(&row, aggregate_type, &mut visit, &mut last_key)
                        .await?;
                    next += 1;
                }
            }
            // Versions missing from the table were archived: from the cold tier, in order.
            if let Some(&last) = early.keys().next_back() {
                let mut archived = self.cold_versions(stream_id, next, last - 1).await?;
                // Without archived versions, a gap is the stream's own.
                let own_gaps = archived.is_empty();
                while let Some((&version, _)) = early.first_key_value() {
                    if let Some(event) = archived.remove(&next) {
                        self.visit_recorded(&event, &mut visit, &mut last_key)
                            .await?;
                    } else if let Some(row) = early.remove(&next) {
                        self.visit_replayed(&row, aggregate_type, &mut visit, &mut last_key)
                            .await?;
                    } else if own_gaps {
                        // A stream whose versions have gaps (none does when written by
                        // Factum) and no archived versions: the rest, in order.
                        next = version;
                        continue;
                    } else {
                        return Err(archive::moved(stream_id));
                    }
                    next += 1;
                }
            }
            return Ok(());
        }
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.load_history.clone()))
            .bind(stream_id)
            .bind(aggregate_type)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        let mut events = Vec::with_capacity(rows.len());
        let mut expected = 1;
        for row in &rows {
            if columns::get::<_, i32>(row, 0)? == 1 {
                let snapshot = snapshot_from_row(row, 1, stream_id)?;
                expected = snapshot.stream_version + 1;
                visit(HistoryItem::Snapshot(snapshot))?;
            } else {
                // Borrowed from the row buffers: nothing is copied before decoding.
                events.push(replayed_event(row, 1, aggregate_type)?);
            }
        }
        // The union keeps each branch's order in practice; make sure rather than assume.
        if !events.is_sorted_by_key(|e: &Replayed<'_>| e.event.stream_version) {
            events.sort_by_key(|e| e.event.stream_version);
        }
        // Versions after the snapshot (or from the first) missing from the table were
        // archived: from the cold tier, in order.
        let versions: Vec<u64> = events.iter().map(|e| e.event.stream_version).collect();
        let mut archived = match archive::missing_span(expected, u64::MAX, &versions) {
            Some((from, through)) => self.cold_versions(stream_id, from, through).await?,
            None => BTreeMap::new(),
        };
        // Without archived versions, a gap is the stream's own.
        let own_gaps = archived.is_empty();
        for event in events {
            while !own_gaps && expected < event.event.stream_version {
                let Some(archived) = archived.remove(&expected) else {
                    return Err(archive::moved(stream_id));
                };
                self.visit_recorded(&archived, &mut visit, &mut last_key)
                    .await?;
                expected += 1;
            }
            expected = event.event.stream_version + 1;
            self.visit_event(event, &mut visit, &mut last_key).await?;
        }
        Ok(())
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        let version: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.stream_version.clone()))
            .bind(stream_id)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        stored_u64(version, "a stream version")
    }

    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.read_event.clone()))
            .bind(event_id)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        if let Some(event) = self.read_rows(&rows, 0).await?.pop() {
            return Ok(Some(event));
        }
        // Archived, perhaps.
        let mut archived = self.cold_by_id(&[event_id]).await?;
        self.open_pii(&mut archived).await?;
        Ok(archived.pop())
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.load_snapshot.clone()))
            .bind(stream_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        row.map(|row| snapshot_from_row(&row, 0, stream_id))
            .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let state_version = version_i32(&snapshot.stream_id, snapshot.state_version, || {
            format!(
                "the snapshot of `{}` has state version",
                snapshot.aggregate_type
            )
        })?;
        sqlx::query(AssertSqlSafe(self.inner.sql.save_snapshot.clone()))
            .bind(&snapshot.stream_id)
            .bind(&snapshot.aggregate_type)
            .bind(to_i64(snapshot.stream_version))
            .bind(state_version)
            .bind(snapshot.state.as_str())
            .bind(snapshot.taken_at)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn wakeups(&self) -> FeedWakeups {
        self.inner
            .listener
            .subscribe(&self.inner.pool, &self.inner.channel)
    }
}

/// Stores in schemas of a unit test's own (`factum::testing` sits above the stores).
#[cfg(test)]
mod scratch {
    use super::PostgresStore;

    /// A migrated store in a new schema named after `name`, on `DATABASE_URL` (or the local
    /// server).
    pub(in crate::store::postgres) async fn store(name: &str) -> PostgresStore {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let schema = format!("factum_{name}_{}", uuid::Uuid::now_v7().simple());
        let store = PostgresStore::with_schema(pool, &schema).unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Drops `store`'s schema.
    pub(in crate::store::postgres) async fn drop(store: &PostgresStore) {
        let schema = store.schema();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(store.pool())
        .await
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::scratch;
    use crate::pii::{LocalKeyProvider, PiiField, PiiSpec};
    use crate::store::{EnvelopeFields, FeedQuery, HistoryItem};
    use crate::{EventStore as _, ExpectedVersion, NewEvent, Payload, Snapshot};
    use sqlx::Connection as _;

    /// The hot paths' integer reader takes every width a statement sends in binary form, the
    /// text form through sqlx's decoder, and refuses NULL and values no unsigned one can be.
    #[tokio::test]
    async fn integer_columns_read_from_their_bytes_in_every_width() {
        use crate::store::backend::columns::unsigned_unchecked;
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let statement = "SELECT 7::int2, 70000::int4, 5000000000::int8, \
                         '6000000000'::text::xid8, NULL::int8, (-1)::int8";
        let binary = sqlx::query(statement).fetch_one(&pool).await.unwrap();
        let text = sqlx::raw_sql(statement).fetch_one(&pool).await.unwrap();
        for row in [&binary, &text] {
            assert_eq!(unsigned_unchecked::<u16>(row, 0).unwrap(), 7);
            assert_eq!(unsigned_unchecked::<u32>(row, 1).unwrap(), 70_000);
            assert_eq!(unsigned_unchecked::<u64>(row, 2).unwrap(), 5_000_000_000);
            assert_eq!(unsigned_unchecked::<u64>(row, 3).unwrap(), 6_000_000_000);
            assert!(unsigned_unchecked::<u64>(row, 4).is_err());
            assert!(matches!(
                unsigned_unchecked::<u64>(row, 5),
                Err(crate::Error::Corrupt { .. })
            ));
            // A value too wide for the type asked for.
            assert!(unsigned_unchecked::<u16>(row, 1).is_err());
        }
    }

    static FIELDS: [PiiField; 1] = [PiiField::new("email", || json!("[erased]"))];
    static SPEC: PiiSpec = PiiSpec::new("customer", &FIELDS);

    /// Every read of `stream`'s one event, its payload as JSON: replays (with and without the
    /// snapshot's statement), stream reads, stream event reads, and the feed with all fields
    /// and with the source's alone.
    async fn every_read(store: &super::PostgresStore, stream: &str) -> Vec<Value> {
        let mut payloads = Vec::new();
        for with_snapshot in [false, true] {
            store
                .replay_history(stream, "Customer", with_snapshot, |item| {
                    if let HistoryItem::Event(event) = item {
                        payloads.push(serde_json::from_str(event.payload).unwrap());
                    }
                    Ok(())
                })
                .await
                .unwrap();
        }
        let read = store.read_stream(stream, ..).await.unwrap();
        payloads.push(serde_json::from_str(read[0].event.as_str()).unwrap());
        let read = store.read_stream_events(stream, ..).await.unwrap();
        payloads.push(serde_json::from_str(read[0].payload.as_str()).unwrap());
        for fields in [EnvelopeFields::All, EnvelopeFields::Source] {
            let mut query = FeedQuery::from_start();
            query.fields = fields;
            // Other tests' transactions may hold the feed back for a moment.
            for _ in 0..500 {
                let batch = store.read_feed(&query).await.unwrap();
                if !batch.held_back {
                    let event = batch.events.iter().find(|e| e.stream_id == stream).unwrap();
                    payloads.push(serde_json::from_str(event.event.as_str()).unwrap());
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        assert_eq!(payloads.len(), 6, "every read ran");
        payloads
    }

    /// Personal data is stored sealed in the events' `sealed` column, the payload holding its
    /// erased values; a row written before that column (its sealed data inside its payload)
    /// reads as it did. Every read opens both to the event, and to its erased values once the
    /// subject is forgotten; a store without a key provider hands both on sealed, inside the
    /// payload.
    #[tokio::test]
    async fn sealed_data_reads_from_its_column_and_from_older_rows_payloads() {
        let store = scratch::store("sealed_column")
            .await
            .with_key_provider(LocalKeyProvider::ephemeral().unwrap());
        let plain = json!({"customer": "ada", "email": "ada@example.com", "plan": "pro"});
        let mut event = NewEvent::new("Registered", 1, Payload::encode(&plain).unwrap());
        event.pii = Some(&SPEC);
        store
            .append("new", "Customer", ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
        let events = format!("\"{}\".events", store.schema());
        let (payload, sealed): (String, Option<Vec<u8>>) = sqlx::query_as(sqlx::AssertSqlSafe(
            format!("SELECT payload::text, sealed FROM {events} WHERE stream_id = 'new'"),
        ))
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert!(
            payload.starts_with(r#"{"$pii":{"email":"[erased]"}"#) && !payload.contains("ada@"),
            "{payload}"
        );
        let sealed = sealed.expect("the sealed data in its column");
        assert!(!String::from_utf8_lossy(&sealed).contains("ada@"));
        // The row as stores wrote it before the column: the same data inside the payload.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {events} (stream_id, stream_version, aggregate_type, event_id,
                 event_type, schema_version, payload, metadata, correlation_id, causation_id,
                 recorded_at, tx)
             SELECT 'old', 1, aggregate_type, gen_random_uuid(), event_type, schema_version,
                    $1::json, metadata, correlation_id, causation_id, recorded_at, tx
             FROM {events} WHERE stream_id = 'new'"
        )))
        .bind(crate::pii::inline(&payload, &sealed).unwrap())
        .execute(store.pool())
        .await
        .unwrap();

        for stream in ["new", "old"] {
            for read in every_read(&store, stream).await {
                assert_eq!(read, plain, "{stream}");
            }
        }
        let sealed_store =
            super::PostgresStore::with_schema(store.pool().clone(), store.schema()).unwrap();
        for stream in ["new", "old"] {
            for read in every_read(&sealed_store, stream).await {
                assert_eq!(read["plan"], "pro");
                assert!(
                    read["$pii"][0].is_string(),
                    "{stream}: sealed, inside: {read}"
                );
                assert!(!read.to_string().contains("ada@"));
            }
        }
        assert!(store.forget("ada").await.unwrap());
        let erased = json!({"customer": "ada", "email": "[erased]", "plan": "pro"});
        for stream in ["new", "old"] {
            for read in every_read(&store, stream).await {
                assert_eq!(read, erased, "{stream}");
            }
        }
        scratch::drop(&store).await;
    }

    /// The events after a snapshot are read through the primary key, in its order, even where
    /// the stream fills the table and PostgreSQL plans the statement without its parameters
    /// (as it may for a prepared statement after its fifth run): neither by scanning the table
    /// nor by sorting what a bitmap scan of the key finds (the plans it chose before the
    /// statement bounded the versions from above).
    #[tokio::test]
    async fn the_events_after_a_snapshot_are_read_through_the_primary_key() {
        let store = scratch::store("after_snapshot").await;
        for _ in 0..10 {
            let events = (0..1000)
                .map(|n| {
                    let event =
                        serde_json::json!({"amount": 1, "balance_after": n, "memo": "a deposit"});
                    NewEvent::new("Deposited", 1, Payload::encode(&event).unwrap())
                })
                .collect();
            store
                .append("s-1", "Pinger", ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
        let snapshot = Snapshot::new("s-1", "Pinger", 9990, 1, Payload::encode(&1).unwrap());
        store.save_snapshot(snapshot).await.unwrap();
        let mut connection = store.pool().acquire().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ANALYZE \"{}\".events;
             SET plan_cache_mode = force_generic_plan;
             PREPARE load_history (text, text) AS {}",
            store.schema(),
            store.inner.sql.load_history
        )))
        .execute(&mut *connection)
        .await
        .unwrap();
        let plan: Vec<(String,)> = sqlx::query_as("EXPLAIN EXECUTE load_history ('s-1', 'Pinger')")
            .fetch_all(&mut *connection)
            .await
            .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
        connection.detach().close().await.unwrap();
        scratch::drop(&store).await;
        // In the key's order: no table scan, no sort (which a bitmap scan of the key needs).
        assert!(
            plan.iter()
                .any(|line| line.contains("Index Scan using events_pkey on events")),
            "{plan:#?}"
        );
        assert!(
            !plan
                .iter()
                .any(|line| line.contains("Seq Scan on events") || line.contains("Sort")),
            "{plan:#?}"
        );
    }
}
