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
mod feed;
mod identity;
mod import;
mod keys;
mod listen;
mod migrate;
mod reads;
mod rows;
mod sql_store;
mod statements;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};

use self::append::Append;
pub use self::feed::{FeedHorizon, OpenTransaction};
pub use self::identity::ClusterAdoption;
use self::listen::{Listener, Notifier};
use self::rows::{
    Replayed, envelope_from_row, replayed_event, snapshot_from_row, stream_event_from_row,
};
use self::statements::Statements;
use super::FeedWakeups;
use super::Limits;
use super::backend::{check_append, columns, stored_u64, to_i64, version_bounds, version_i32};
use super::group::{Group, GroupCommit, Request};
use super::heads::WrittenHeads;
use super::keys::{self as store_keys, Keyring, LastKey};
use super::sql::{AppendHook, Schema};
use super::tx::{self, Transaction, Tx};
use super::{
    EventStore, ExpectedVersion, FeedBatch, FeedQuery, HistoryItem, KnownHead, ReadEnvelope,
    SpareBatches, StreamEvent, Tenancy, strict_envelope,
};
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
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
                // At once, unless its key is to be looked up.
                if let Some(event) = self.visit_now(event, &mut visit, &mut last_key)? {
                    self.visit_looked_up(event, &mut visit, &mut last_key)
                        .await?;
                }
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
            if let Some(event) = self.visit_now(event, &mut visit, &mut last_key)? {
                self.visit_looked_up(event, &mut visit, &mut last_key)
                    .await?;
            }
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
