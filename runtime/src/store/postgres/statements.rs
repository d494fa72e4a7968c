//! The store's SQL, written once per store with its schema.

use std::sync::Arc;

use super::{append, archive, identity};
use crate::envelope::EnvelopeFields;
use crate::store::Tenancy;
use crate::store::sql::Schema;

/// The store's SQL, qualified with its schema once, at construction.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) append: append::Inserts,
    /// The same, storing the data keys that the append offers (see [`Offers`]).
    ///
    /// [`Offers`]: crate::store::keys::Offers
    pub(super) append_offering: append::Inserts,
    pub(super) append_group: Arc<str>,
    pub(super) diagnose_append: Arc<str>,
    pub(super) read_stream: Arc<str>,
    pub(super) read_stream_events: Arc<str>,
    pub(super) replay_stream: Arc<str>,
    pub(super) load_history: Arc<str>,
    /// The runners' feed reads: by envelope fields, without and with an event-type filter.
    pub(super) read_feed: FeedReads,
    pub(super) stream_version: Arc<str>,
    pub(super) read_event: Arc<str>,
    pub(super) load_snapshot: Arc<str>,
    pub(super) save_snapshot: Arc<str>,
    pub(super) horizon: Arc<str>,
}

/// The columns of an [`Origin`] and the payload, in the order `refill_origin` and `refill_envelope`
/// read them: the first columns of every envelope read.
///
/// Every read sends `tx`, `payload`, `metadata` and a snapshot's `state` as stored, uncast: an
/// `xid8` travels as eight bytes, read as an `int8`, and `json` as its text, read as such
/// ([`columns::text`]). A cast to `text` (and on to `bigint`) converts each value out and in again
/// in the server: of a 5,000-event feed read's execution, a third to a half.
///
/// [`Origin`]: crate::envelope::Origin
/// [`columns::text`]: crate::store::backend::columns::text
macro_rules! origin_columns {
    () => {
        "e.stream_id, e.stream_version, e.position, e.tx, e.aggregate_type, \
         e.event_id, e.event_type, e.schema_version, e.payload, e.sealed, e.recorded_at"
    };
}

/// The origin's columns alone ([`EnvelopeFields::Origin`]).
pub(super) const ORIGIN_COLUMNS: &str = origin_columns!();

/// The columns of a [`Source`] and the payload, in the order `refill_source` reads them
/// ([`EnvelopeFields::Source`]).
///
/// [`Source`]: crate::envelope::Source
pub(super) const SOURCE_COLUMNS: &str =
    "e.stream_id, e.position, e.tx, e.event_type, e.schema_version, e.payload, e.sealed";

/// The feed statements of the runners, one per set of envelope fields read: `[unfiltered,
/// filtered by event type]`, each also bounded (the table read up to a position: the last of
/// a batch of archived events, see `PostgresStore::guess_cold`).
#[derive(Debug)]
pub(super) struct FeedReads {
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

    pub(super) fn get(&self, fields: EnvelopeFields, filtered: bool, bounded: bool) -> &Arc<str> {
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
pub(super) const ENVELOPE_COLUMNS: &str = concat!(
    origin_columns!(),
    // No ", " inside a column: the feed counts the columns by it.
    ", e.metadata, e.correlation_id, e.causation_id, e.actor, nullif(e.tenant,'')"
);

/// The columns of a [`StreamEvent`], in the order `stream_event_from_row` reads them.
///
/// [`StreamEvent`]: crate::store::StreamEvent
pub(super) const STREAM_EVENT_COLUMNS: &str =
    "e.stream_version, e.aggregate_type, e.event_type, e.schema_version, e.payload, e.sealed";

/// The columns of a replayed event, in the order `replayed_event` reads them: those of
/// [`STREAM_EVENT_COLUMNS`], with the aggregate type sent only when it is not the replaying
/// aggregate's (`$2`): every event of a stream has its type, and each column of each row costs
/// the server and the client alike. The sealed data of personal data comes last
/// ([`Placement::Column`](crate::pii::Placement::Column)), as bytes.
pub(super) const REPLAY_COLUMNS: &str = "e.stream_version, nullif(e.aggregate_type, $2), e.event_type, \
    e.schema_version, e.payload, e.sealed";

impl Statements {
    pub(super) fn new(schema: &Schema, tenancy: &Tenancy) -> Self {
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
