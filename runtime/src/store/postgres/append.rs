//! Appends: one `INSERT … SELECT` that checks the expected version and the aggregate type against
//! the stream's last event and inserts the events at the following versions, in one round trip.
//!
//! The primary key `(stream_id, stream_version)` is the arbiter of concurrency: two appends that
//! read the same head race for the same version, and the loser gets a unique violation. Only when
//! the insert stores nothing, or hits such a violation, does a second query look at the stream
//! to say why (conflict, other aggregate type, idempotent retry, duplicate id), or find that a
//! retry will now succeed. After a head the caller saw ([`KnownHead`]) or the store wrote itself
//! (`heads.rs`), the insert reads no head: the primary key alone arbitrates.
//!
//! Per-stream feed order needs no lock: an append writes version n + 1 only after seeing
//! version n committed, so its transaction id, assigned at its first write, is newer than n's.
//! The one exception is a transaction that wrote (took its id) before appending; the insert
//! refuses it when the stream's last event has a newer transaction id
//! ([`Error::StaleTransaction`]).
//!
//! Every transaction id written or compared is in stored terms: this cluster's id plus the
//! store's offset, read in the same statement (see the `identity` module), which also refuses
//! the append when the store was moved to another cluster ([`Error::ClusterChanged`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::postgres::{PgExecutor, PgRow};
use sqlx::{AssertSqlSafe, Row as _};
use uuid::Uuid;

use super::{PostgresStore, Schema, identity};
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::store::backend::{
    StoredId, check_append, classify_retry, columns, expected_code, to_i64,
};
use crate::store::group::{Committer, Queued, Request};
use crate::store::keys::{OfferAnswer, Offers};
use crate::store::{ExpectedVersion, KnownHead};

/// Attempts before giving up on an append that keeps racing (each race means another append to
/// the same stream committed in between).
const MAX_ATTEMPTS: usize = 100;

/// The stream's head (`h`: its last event, if any) joined to an insert's rows, and the
/// conditions the append needs of it: `$3` the expected version (`-1` any, `-2` no stream, `-3`
/// the stream exists, else the exact version), `$2` the aggregate type, and a head written by
/// a transaction no newer than this one (when this one has written already).
fn head_check(schema: &Schema) -> String {
    let s = schema.quoted();
    let own = identity::stored_xid(schema, "pg_current_xact_id_if_assigned()");
    format!(
        "LEFT JOIN (
             SELECT h.stream_version, h.aggregate_type, h.tx FROM {s}.events h
             WHERE h.stream_id = $1 ORDER BY h.stream_version DESC LIMIT 1
         ) h ON true
         WHERE ($3 = -1
                OR ($3 = -2 AND h.stream_version IS NULL)
                OR ($3 = -3 AND h.stream_version IS NOT NULL)
                OR $3 = coalesce(h.stream_version, 0))
           AND (h.aggregate_type IS NULL OR h.aggregate_type = $2)
           AND (h.tx IS NULL
                OR pg_current_xact_id_if_assigned() IS NULL
                OR h.tx <= {own})"
    )
}

/// The insert statements of a lone append: parameters `$1` to `$12` (`$12` the sealed data of
/// personal data, see [`crate::pii::Placement::Column`]), and in the statements that offer
/// data keys, `$13` to `$15` (see [`offering`]).
#[derive(Debug)]
pub(super) struct Inserts {
    /// Any number of events, the head read and checked.
    checked: Arc<str>,
    /// One event, the head read and checked.
    checked_one: Arc<str>,
    /// Any number of events after a [`KnownHead`].
    after_head: Arc<str>,
    /// One event after a [`KnownHead`].
    one_after_head: Arc<str>,
}

impl Inserts {
    /// The statements; when `offer`, each storing the data keys the append offers (see
    /// [`offering`]).
    pub(super) fn new(schema: &Schema, offer: bool) -> Self {
        let statement = |insert: fn(&Schema, &str) -> String| -> Arc<str> {
            if offer {
                offering(schema, &insert(schema, OFFERS_TAKEN)).into()
            } else {
                insert(schema, "").into()
            }
        };
        Self {
            checked: statement(insert_sql),
            checked_one: statement(insert_one_sql),
            after_head: statement(insert_after_head_sql),
            one_after_head: statement(insert_one_after_head_sql),
        }
    }
}

/// The condition an insert that offers data keys adds to its own: every offered key taken.
const OFFERS_TAKEN: &str = "
           AND (SELECT count(*) FROM offered) = cardinality($13::uuid[])";

/// `insert` (its events stored only when every offered key was taken: [`OFFERS_TAKEN`]) with
/// the data keys the append offers to its new subjects (`$13` their ids, `$14` the subjects,
/// `$15` the wrapped keys, in the subjects' order; see [`crate::store::keys::Offers`]): the
/// keys and the events sealed under them in one statement, one commit. Its rows: the stored
/// events' (as the insert returns them); or, when it stored none, a row per key it stored
/// (its id), and a row per subject that has a key this statement sees (id, subject, wrapped
/// key; of the tenant the keys' insert names, as `insert_subject_key` reads them; each found
/// by its own index probe, never by a scan of the tenant's keys). A subject in neither got
/// its key from a writer that committed after the statement began.
fn offering(schema: &Schema, insert: &str) -> String {
    let s = schema.quoted();
    format!(
        "WITH offered AS (
             INSERT INTO {s}.data_keys (key_id, subject, wrapped_key)
             SELECT * FROM unnest($13::uuid[], $14::text[], $15::bytea[])
             ON CONFLICT (tenant, subject) DO NOTHING
             RETURNING key_id
         ),
         appended AS ({insert})
         SELECT a.stream_version, a.position, a.tx, a.recorded_at,
                NULL::uuid AS key_id, NULL::text AS subject, NULL::bytea AS wrapped_key
         FROM appended a
         UNION ALL
         SELECT NULL, NULL, NULL, NULL, o.key_id, NULL, NULL
         FROM offered o WHERE NOT EXISTS (SELECT 1 FROM appended)
         UNION ALL
         SELECT NULL, NULL, NULL, NULL, k.key_id, k.subject, k.wrapped_key
         FROM unnest($14::text[]) AS w(subject)
         JOIN {s}.data_keys k
           ON k.tenant = coalesce(current_setting('factum.tenant', true), '')
          AND k.subject = w.subject
         WHERE NOT EXISTS (SELECT 1 FROM appended)"
    )
}

fn insert_sql(schema: &Schema, taken: &str) -> String {
    let s = schema.quoted();
    let head_check = head_check(schema);
    let tx = identity::stored_xid(schema, "pg_current_xact_id()");
    format!(
        "INSERT INTO {s}.events AS e (stream_id, stream_version, aggregate_type, event_id, event_type,
             schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at, tx,
             sealed)
         SELECT $1, coalesce(h.stream_version, 0) + u.ord, $2, u.event_id, u.event_type,
                u.schema_version, u.payload::json, u.metadata::json, u.correlation_id,
                u.causation_id, u.actor, clock_timestamp(), {tx}, u.sealed
         FROM unnest($4::uuid[], $5::text[], $6::int4[], $7::text[], $8::text[], $9::uuid[],
                     $10::uuid[], $11::text[], $12::bytea[])
              WITH ORDINALITY AS u(event_id, event_type, schema_version, payload, metadata,
                                   correlation_id, causation_id, actor, sealed, ord)
         {head_check}{taken}
         ORDER BY u.ord
         RETURNING e.stream_version, e.position, e.tx, e.recorded_at"
    )
}

/// Whether the versions after `after` of stream `stream` are free of archived events (see
/// [`crate::archive`]): the table no longer holds archived versions, so the primary key alone
/// cannot refuse an insert after a stale head among them; the stream's archived ranges can.
/// One index probe of an empty table for a store that never archived.
fn not_archived_after(schema: &Schema, stream: &str, after: &str) -> String {
    let s = schema.quoted();
    format!(
        "NOT EXISTS (SELECT 1 FROM {s}.archived_ranges r
                     WHERE r.stream_id = {stream} AND r.through_version > {after})"
    )
}

/// [`insert_sql`] for one event, with scalar parameters (no arrays to encode and unnest): the
/// common append. `$4`… are the event's fields, as in [`insert_one_after_head_sql`].
fn insert_one_sql(schema: &Schema, taken: &str) -> String {
    let s = schema.quoted();
    let head_check = head_check(schema);
    let tx = identity::stored_xid(schema, "pg_current_xact_id()");
    format!(
        "INSERT INTO {s}.events AS e (stream_id, stream_version, aggregate_type, event_id, event_type,
             schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at, tx,
             sealed)
         SELECT $1, coalesce(h.stream_version, 0) + 1, $2, $4, $5, $6, $7::json, $8::json, $9,
                $10, $11, clock_timestamp(), {tx}, $12::bytea
         FROM (SELECT 1) AS one
         {head_check}{taken}
         RETURNING e.stream_version, e.position, e.tx, e.recorded_at"
    )
}

/// The append after a [`KnownHead`]: the versions before it exist, so the primary key alone
/// arbitrates, and the statement is a plain insert.
fn insert_after_head_sql(schema: &Schema, taken: &str) -> String {
    let s = schema.quoted();
    let tx = identity::stored_xid(schema, "pg_current_xact_id()");
    let not_archived = not_archived_after(schema, "$1", "$3");
    format!(
        "INSERT INTO {s}.events AS e (stream_id, stream_version, aggregate_type, event_id, event_type,
             schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at, tx,
             sealed)
         SELECT $1, $3 + u.ord, $2, u.event_id, u.event_type, u.schema_version, u.payload::json,
                u.metadata::json, u.correlation_id, u.causation_id, u.actor, clock_timestamp(), {tx},
                u.sealed
         FROM unnest($4::uuid[], $5::text[], $6::int4[], $7::text[], $8::text[], $9::uuid[],
                     $10::uuid[], $11::text[], $12::bytea[])
              WITH ORDINALITY AS u(event_id, event_type, schema_version, payload, metadata,
                                   correlation_id, causation_id, actor, sealed, ord)
         WHERE {not_archived}{taken}
         ORDER BY u.ord
         RETURNING e.stream_version, e.position, e.tx, e.recorded_at"
    )
}

/// [`insert_after_head_sql`] for the common single-event append: the same insert with scalar
/// parameters, as cheap as an insert gets.
fn insert_one_after_head_sql(schema: &Schema, taken: &str) -> String {
    let s = schema.quoted();
    let tx = identity::stored_xid(schema, "pg_current_xact_id()");
    let not_archived = not_archived_after(schema, "$1", "$3");
    format!(
        "INSERT INTO {s}.events AS e (stream_id, stream_version, aggregate_type, event_id, event_type,
             schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at, tx,
             sealed)
         SELECT $1, $3 + 1, $2, $4, $5, $6, $7::json, $8::json, $9, $10, $11, clock_timestamp(),
                {tx}, $12::bytea
         WHERE {not_archived}{taken}
         RETURNING e.stream_version, e.position, e.tx, e.recorded_at"
    )
}

/// A group of appends (group commit) in one statement: each append's rows carry its stream,
/// aggregate type and expected version (`expected`, coded as in [`head_check`]) or the head its
/// caller saw (`after`: the versions follow it, and the primary key alone arbitrates). An
/// append whose head check fails inserts nothing and the others are stored; the statement runs
/// on its own (autocommit), so nothing was written before it in its transaction. A group holds
/// one append per stream.
pub(super) fn insert_group_sql(schema: &Schema) -> String {
    let s = schema.quoted();
    let tx = identity::stored_xid(schema, "pg_current_xact_id()");
    let not_archived = not_archived_after(schema, "u.stream_id", "u.after");
    format!(
        "INSERT INTO {s}.events AS e (stream_id, stream_version, aggregate_type, event_id, event_type,
             schema_version, payload, metadata, correlation_id, causation_id, actor, recorded_at, tx,
             sealed)
         SELECT u.stream_id, coalesce(u.after, h.stream_version, 0) + u.ord, u.aggregate_type,
                u.event_id, u.event_type, u.schema_version, u.payload::json, u.metadata::json,
                u.correlation_id, u.causation_id, u.actor, clock_timestamp(), {tx}, u.sealed
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::uuid[],
                     $7::text[], $8::int4[], $9::text[], $10::text[], $11::uuid[], $12::uuid[],
                     $13::text[], $14::bytea[])
              WITH ORDINALITY AS u(stream_id, aggregate_type, expected, after, ord, event_id,
                                   event_type, schema_version, payload, metadata, correlation_id,
                                   causation_id, actor, sealed, n)
         LEFT JOIN LATERAL (
             SELECT h.stream_version, h.aggregate_type FROM {s}.events h
             WHERE u.after IS NULL AND h.stream_id = u.stream_id
             ORDER BY h.stream_version DESC LIMIT 1
         ) h ON true
         WHERE (u.after IS NOT NULL AND {not_archived})
            OR ((u.expected = -1
                 OR (u.expected = -2 AND h.stream_version IS NULL)
                 OR (u.expected = -3 AND h.stream_version IS NOT NULL)
                 OR u.expected = coalesce(h.stream_version, 0))
                AND (h.aggregate_type IS NULL OR h.aggregate_type = u.aggregate_type))
         ORDER BY u.n
         RETURNING e.stream_version, e.position, e.tx, e.recorded_at, e.stream_id"
    )
}

pub(super) fn diagnose_sql(schema: &Schema) -> String {
    let s = schema.quoted();
    let own = identity::stored_xid(schema, "pg_current_xact_id_if_assigned()");
    format!(
        "SELECT 0, h.stream_version, h.aggregate_type, h.tx::text::bigint,
                {own}::text::bigint, NULL::uuid, NULL::text
         FROM (SELECT 1) AS one
         LEFT JOIN LATERAL (
             SELECT e.stream_version, e.aggregate_type, e.tx FROM {s}.events e
             WHERE e.stream_id = $1 ORDER BY e.stream_version DESC LIMIT 1
         ) h ON true
         UNION ALL
         SELECT 1, e.stream_version, NULL, NULL, NULL, e.event_id, e.stream_id
         FROM {s}.events e WHERE e.event_id = ANY ($2)"
    )
}

/// Why an append stored nothing, as the stream looks now.
struct Diagnosis {
    head_version: u64,
    head_type: Option<String>,
    head_tx: Option<i64>,
    own_tx: Option<i64>,
    stored: Vec<StoredId>,
}

/// What to do after a diagnosis.
enum Verdict {
    /// The append is an idempotent retry of these stored versions.
    Stored(std::ops::RangeInclusive<u64>),
    /// The append can only fail.
    Refused(Error),
    /// The stream now accepts the append: the failed attempt lost a race.
    Retry,
}

/// What became of an append that offered data keys ([`PostgresStore::append_offering`]).
pub(super) enum Offered {
    /// Stored, with its keys.
    Stored(Vec<RecordedEvent>),
    /// Nothing stored: the events, to append without offers, and what the statement found of
    /// the subjects' keys.
    NotStored(Vec<NewEvent>, OfferAnswer),
}

/// One append, as sent to the database.
pub(super) struct Append<'a> {
    pub stream_id: &'a str,
    pub aggregate_type: &'a str,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// The data keys offered with the events, stored by the same statement.
    pub offers: Option<&'a Offers>,
}

impl<'a> From<Request<'a>> for Append<'a> {
    fn from(request: Request<'a>) -> Self {
        Self {
            stream_id: request.stream_id,
            aggregate_type: request.aggregate_type,
            expected: request.expected,
            events: request.events,
            offers: None,
        }
    }
}

impl<'a> Append<'a> {
    /// Binds the offered keys' columns (`$13` to `$15`), when the append offers keys.
    fn bind_offers<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        match self.offers {
            Some(offers) => {
                let (ids, subjects, wrapped) = offers.columns();
                query.bind(ids).bind(subjects).bind(wrapped)
            }
            None => query,
        }
    }
}

impl Append<'_> {
    /// The statements of this append: storing its offered keys, when it has some.
    fn inserts<'s>(&self, store: &'s PostgresStore) -> &'s Inserts {
        match self.offers {
            Some(_) => &store.inner.sql.append_offering,
            None => &store.inner.sql.append,
        }
    }

    async fn insert<'c>(
        &self,
        store: &PostgresStore,
        executor: impl PgExecutor<'c>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        match self.events.as_slice() {
            [event] => {
                self.insert_scalar(
                    &self.inserts(store).checked_one,
                    expected_code(self.expected),
                    event,
                    executor,
                )
                .await
            }
            _ => {
                self.insert_with(
                    &self.inserts(store).checked,
                    expected_code(self.expected),
                    executor,
                )
                .await
            }
        }
    }

    /// [`Append::insert`], or the insert after `head` when there is one.
    async fn insert_at<'c>(
        &self,
        store: &PostgresStore,
        head: Option<KnownHead>,
        executor: impl PgExecutor<'c>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        match (head, self.events.as_slice()) {
            (Some(head), [event]) => self.insert_one(store, event, head, executor).await,
            (Some(head), _) => {
                self.insert_with(
                    &self.inserts(store).after_head,
                    to_i64(head.version()),
                    executor,
                )
                .await
            }
            (None, _) => self.insert(store, executor).await,
        }
    }

    /// Binds a single-event append to [`insert_one_after_head_sql`].
    async fn insert_one<'c>(
        &self,
        store: &PostgresStore,
        event: &NewEvent,
        head: KnownHead,
        executor: impl PgExecutor<'c>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        self.insert_scalar(
            &self.inserts(store).one_after_head,
            to_i64(head.version()),
            event,
            executor,
        )
        .await
    }

    /// Binds a single-event append to `sql` (scalar parameters), `$3` being `third`.
    async fn insert_scalar<'c>(
        &self,
        sql: &Arc<str>,
        third: i64,
        event: &NewEvent,
        executor: impl PgExecutor<'c>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        let metadata = serde_json::to_string(&event.metadata).unwrap_or_else(|_| "{}".to_owned());
        let query = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(self.stream_id)
            .bind(self.aggregate_type)
            .bind(third)
            .bind(event.event_id)
            .bind(event.event_type.as_ref())
            // Never clamped: `check_append` refused versions above `i32::MAX` before.
            .bind(i32::try_from(event.schema_version).unwrap_or(i32::MAX))
            .bind(event.payload.as_str())
            .bind(metadata)
            .bind(event.correlation_id)
            .bind(event.causation_id)
            .bind(event.actor.as_deref())
            .bind(event.sealed.as_deref());
        self.bind_offers(query).fetch_all(executor).await
    }

    /// Binds the append to `sql` (one of the insert statements), `$3` being `third`.
    async fn insert_with<'c>(
        &self,
        sql: &Arc<str>,
        third: i64,
        executor: impl PgExecutor<'c>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        let query = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(self.stream_id)
            .bind(self.aggregate_type)
            .bind(third);
        self.bind_offers(EventColumns::of(&self.events).bind(query))
            .fetch_all(executor)
            .await
    }

    async fn diagnose<'c>(
        &self,
        store: &PostgresStore,
        executor: impl PgExecutor<'c>,
    ) -> Result<Diagnosis> {
        let ids: Vec<Uuid> = self.events.iter().map(|e| e.event_id).collect();
        let rows = sqlx::query(AssertSqlSafe(store.inner.sql.diagnose_append.clone()))
            .bind(self.stream_id)
            .bind(ids)
            .fetch_all(executor)
            .await
            .map_err(|e| store.fail(e))?;
        let mut diagnosis = Diagnosis {
            head_version: 0,
            head_type: None,
            head_tx: None,
            own_tx: None,
            stored: Vec::new(),
        };
        for row in &rows {
            if columns::get::<_, i32>(row, 0)? == 0 {
                diagnosis.head_version =
                    columns::unsigned_opt::<_, i64, _>(row, 1)?.unwrap_or_default();
                diagnosis.head_type = columns::get(row, 2)?;
                diagnosis.head_tx = columns::get(row, 3)?;
                diagnosis.own_tx = columns::get(row, 4)?;
            } else {
                diagnosis.stored.push(StoredId {
                    stream_version: columns::unsigned::<_, i64, _>(row, 1)?,
                    event_id: columns::get(row, 5)?,
                    stream_id: columns::get(row, 6)?,
                });
            }
        }
        Ok(diagnosis)
    }

    fn verdict(&self, diagnosis: Diagnosis) -> Verdict {
        if !diagnosis.stored.is_empty() {
            return match classify_retry(
                self.stream_id,
                self.expected,
                &self.events,
                &diagnosis.stored,
            ) {
                Ok(versions) => Verdict::Stored(versions),
                Err(error) => Verdict::Refused(error),
            };
        }
        if let Some(existing) = diagnosis.head_type
            && existing != self.aggregate_type
        {
            return Verdict::Refused(Error::AggregateTypeMismatch {
                stream_id: self.stream_id.to_owned(),
                existing,
                requested: self.aggregate_type.to_owned(),
            });
        }
        if !self.expected.accepts(diagnosis.head_version) {
            return Verdict::Refused(self.conflict(diagnosis.head_version));
        }
        // The stream's last event of this very transaction (an earlier append in it) is fine:
        // the two are delivered together, in position order.
        if let (Some(head), Some(own)) = (diagnosis.head_tx, diagnosis.own_tx)
            && head > own
        {
            return Verdict::Refused(Error::StaleTransaction {
                stream_id: self.stream_id.to_owned(),
            });
        }
        Verdict::Retry
    }

    /// [`Append::verdict`] after an insert that `collided` with stored events of the stream:
    /// when this session sees none of them, they belong to another tenant (row-level security
    /// hides them; events are never deleted).
    fn verdict_after(&self, diagnosis: Diagnosis, collided: bool) -> Verdict {
        if collided && diagnosis.head_version == 0 && diagnosis.stored.is_empty() {
            return Verdict::Refused(Error::StreamOfAnotherTenant {
                stream_id: self.stream_id.to_owned(),
            });
        }
        self.verdict(diagnosis)
    }

    fn conflict(&self, actual: u64) -> Error {
        Error::Conflict {
            stream_id: self.stream_id.to_owned(),
            expected: self.expected,
            actual,
        }
    }

    /// The stored envelopes, from the rows the insert returned.
    fn recorded(self, rows: Vec<PgRow>) -> Result<Vec<RecordedEvent>> {
        let mut returned = rows
            .into_iter()
            .map(|row| Ok((columns::unsigned::<_, i64, u64>(&row, 0)?, row)))
            .collect::<Result<Vec<_>>>()?;
        // RETURNING follows insertion order in practice; sort rather than rely on it.
        returned.sort_by_key(|(version, _)| *version);
        let mut recorded = Vec::with_capacity(returned.len());
        for (event, (stream_version, row)) in self.events.into_iter().zip(returned) {
            recorded.push(event.into_recorded(
                (self.stream_id, self.aggregate_type),
                stream_version,
                (
                    // The `xid8` column as it is sent: eight bytes, read as an `int8`.
                    columns::unsigned_unchecked(&row, 2)?,
                    columns::unsigned::<_, i64, _>(&row, 1)?,
                ),
                columns::get(&row, 3)?,
            ));
        }
        Ok(recorded)
    }
}

/// The event columns of an insert's rows, as the arrays its `unnest` reads.
struct EventColumns<'a> {
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    versions: Vec<i32>,
    payloads: Vec<&'a str>,
    metadata: Vec<String>,
    correlations: Vec<Uuid>,
    causations: Vec<Uuid>,
    actors: Vec<Option<&'a str>>,
    sealed: Vec<Option<&'a [u8]>>,
}

impl<'a> EventColumns<'a> {
    fn with_capacity(rows: usize) -> Self {
        Self {
            ids: Vec::with_capacity(rows),
            types: Vec::with_capacity(rows),
            versions: Vec::with_capacity(rows),
            payloads: Vec::with_capacity(rows),
            metadata: Vec::with_capacity(rows),
            correlations: Vec::with_capacity(rows),
            causations: Vec::with_capacity(rows),
            actors: Vec::with_capacity(rows),
            sealed: Vec::with_capacity(rows),
        }
    }

    fn of(events: &'a [NewEvent]) -> Self {
        let mut columns = Self::with_capacity(events.len());
        for event in events {
            columns.push(event);
        }
        columns
    }

    fn push(&mut self, event: &'a NewEvent) {
        self.ids.push(event.event_id);
        self.types.push(event.event_type.as_ref());
        // Never clamped: `check_append` refused versions above `i32::MAX` before.
        self.versions
            .push(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
        self.payloads.push(event.payload.as_str());
        self.metadata
            .push(serde_json::to_string(&event.metadata).unwrap_or_else(|_| "{}".to_owned()));
        self.correlations.push(event.correlation_id);
        self.causations.push(event.causation_id);
        self.actors.push(event.actor.as_deref());
        self.sealed.push(event.sealed.as_deref());
    }

    /// Binds the nine arrays, in this order, as the query's next parameters.
    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.ids)
            .bind(self.types)
            .bind(self.versions)
            .bind(self.payloads)
            .bind(self.metadata)
            .bind(self.correlations)
            .bind(self.causations)
            .bind(self.actors)
            .bind(self.sealed)
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("23505"))
}

/// Whether a statement failed as a whole, rolled back with nothing of it stored, for a reason
/// another attempt may not meet: a unique violation, a deadlock, a serialization failure.
fn rolled_back(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| matches!(e.code().as_deref(), Some("23505" | "40P01" | "40001")))
}

/// Whether an insert collided with stored events of its stream (the primary key refused it).
fn collided(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| {
        e.code().as_deref() == Some("23505") && e.constraint() == Some("events_pkey")
    })
}

impl PostgresStore {
    /// An autocommit append on the pool, retried while it loses races it can still win.
    pub(super) async fn append_autocommit(&self, append: Append<'_>) -> Result<Vec<RecordedEvent>> {
        let pool = &self.inner.pool;
        if !self.hooks.is_empty() && !append.events.is_empty() {
            return self.append_hooked(append, None).await;
        }
        if append.events.is_empty() {
            return match append.verdict(append.diagnose(self, pool).await?) {
                Verdict::Refused(error) => Err(error),
                Verdict::Stored(_) | Verdict::Retry => Ok(Vec::new()),
            };
        }
        for _ in 0..MAX_ATTEMPTS {
            let collision = match append.insert(self, pool).await {
                Ok(rows) if !rows.is_empty() => return append.recorded(rows),
                Ok(_) => false,
                Err(error) if is_unique_violation(&error) => collided(&error),
                Err(error) => return Err(self.fail(error)),
            };
            match append.verdict_after(append.diagnose(self, pool).await?, collision) {
                Verdict::Stored(versions) => {
                    return self.read_versions(append.stream_id, versions).await;
                }
                Verdict::Refused(error) => return Err(error),
                Verdict::Retry => {}
            }
        }
        let actual = append.diagnose(self, pool).await?.head_version;
        Err(append.conflict(actual))
    }

    /// An autocommit append after a head this process has seen (see [`KnownHead`]): a plain
    /// insert, which the primary key refuses when another append got there first.
    pub(super) async fn append_after_head(
        &self,
        append: Append<'_>,
        head: KnownHead,
    ) -> Result<Vec<RecordedEvent>> {
        if append.events.is_empty() {
            return Ok(Vec::new());
        }
        if !self.hooks.is_empty() {
            return self.append_hooked(append, Some(head)).await;
        }
        let pool = &self.inner.pool;
        let inserted = match append.events.as_slice() {
            [event] => append.insert_one(self, event, head, pool).await,
            _ => {
                append
                    .insert_with(
                        &append.inserts(self).after_head,
                        to_i64(head.version()),
                        pool,
                    )
                    .await
            }
        };
        let collision = match inserted {
            Ok(rows) if !rows.is_empty() => return append.recorded(rows),
            // The versions after the head were archived: the head is stale.
            Ok(_) => false,
            Err(error) if is_unique_violation(&error) => collided(&error),
            Err(error) => return Err(self.fail(error)),
        };
        match append.verdict_after(append.diagnose(self, pool).await?, collision) {
            Verdict::Stored(versions) => self.read_versions(append.stream_id, versions).await,
            Verdict::Refused(error) => Err(error),
            // Another writer moved a head this store wrote (`heads.rs`), or an expectation of
            // any head meets a newer one: the checked append reads the head itself.
            Verdict::Retry => {
                self.inner.heads.moved(append.stream_id);
                self.append_autocommit(append).await
            }
        }
    }

    /// An append in its own transaction with the append hooks (inline projections), which run
    /// on the inserted events before the commit; retried while it loses races it can still win.
    /// An idempotent retry of a stored append runs no hook: they ran when it was stored.
    async fn append_hooked(
        &self,
        append: Append<'_>,
        mut head: Option<KnownHead>,
    ) -> Result<Vec<RecordedEvent>> {
        let pool = &self.inner.pool;
        for _ in 0..MAX_ATTEMPTS {
            let mut transaction = pool.begin().await.map_err(|e| self.fail(e))?;
            let inserted = append.insert_at(self, head, &mut *transaction).await;
            let collision = match inserted {
                Ok(rows) if !rows.is_empty() => {
                    let recorded = append.recorded(rows)?;
                    self.run_hooks(&mut transaction, &recorded).await?;
                    transaction.commit().await.map_err(|e| self.fail(e))?;
                    return Ok(recorded);
                }
                Ok(_) => false,
                Err(error) if is_unique_violation(&error) => collided(&error),
                Err(error) => return Err(self.fail(error)),
            };
            drop(transaction); // rolled back
            match append.verdict_after(append.diagnose(self, pool).await?, collision) {
                Verdict::Stored(versions) => {
                    return self.read_versions(append.stream_id, versions).await;
                }
                Verdict::Refused(error) => return Err(error),
                Verdict::Retry => {
                    if head.take().is_some() {
                        self.inner.heads.moved(append.stream_id);
                    }
                }
            }
        }
        let actual = append.diagnose(self, pool).await?.head_version;
        Err(append.conflict(actual))
    }

    /// An append inside the caller's transaction. With append hooks, in a savepoint: an inline
    /// projection that fails leaves nothing of the append in the transaction.
    pub(super) async fn append_in_transaction(
        &self,
        connection: &mut sqlx::PgConnection,
        append: Append<'_>,
    ) -> Result<Vec<RecordedEvent>> {
        if self.hooks.is_empty() {
            return self.insert_in_transaction(connection, append).await;
        }
        let mut savepoint = sqlx::Connection::begin(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        match self.insert_in_transaction(&mut savepoint, append).await {
            Ok(appended) => {
                savepoint.commit().await.map_err(|e| self.fail(e))?;
                Ok(appended)
            }
            Err(error) => {
                savepoint.rollback().await.map_err(|e| self.fail(e))?;
                Err(error)
            }
        }
    }

    /// The append of [`PostgresStore::append_in_transaction`]. A unique violation aborts the
    /// transaction, so a lost race is reported as a conflict rather than retried.
    async fn insert_in_transaction(
        &self,
        connection: &mut sqlx::PgConnection,
        append: Append<'_>,
    ) -> Result<Vec<RecordedEvent>> {
        check_append(append.stream_id, &append.events, &self.limits)?;
        self.inner.tenancy.check_append(append.stream_id)?;
        for _ in 0..MAX_ATTEMPTS {
            let inserted = if append.events.is_empty() {
                Ok(Vec::new())
            } else {
                append.insert(self, &mut *connection).await
            };
            match inserted {
                Ok(rows) if !rows.is_empty() => {
                    let recorded = append.recorded(rows)?;
                    self.run_hooks(&mut *connection, &recorded).await?;
                    return Ok(recorded);
                }
                Ok(_) => match append.verdict(append.diagnose(self, &mut *connection).await?) {
                    Verdict::Stored(versions) => {
                        return self.read_versions(append.stream_id, versions).await;
                    }
                    Verdict::Refused(error) => return Err(error),
                    Verdict::Retry if append.events.is_empty() => return Ok(Vec::new()),
                    Verdict::Retry => {}
                },
                Err(error) if is_unique_violation(&error) => {
                    let diagnosis = append.diagnose(self, &self.inner.pool).await?;
                    return Err(match append.verdict_after(diagnosis, collided(&error)) {
                        Verdict::Refused(error) => error,
                        // Stored by another transaction, or a race this one lost: either way
                        // this transaction is aborted and must be retried as a whole.
                        Verdict::Stored(_) | Verdict::Retry => {
                            let actual =
                                append.diagnose(self, &self.inner.pool).await?.head_version;
                            append.conflict(actual)
                        }
                    });
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
        let actual = append.diagnose(self, &mut *connection).await?.head_version;
        Err(append.conflict(actual))
    }
}

/// Group commit: the appends of a group in one statement, each with its own outcome.
impl Committer for PostgresStore {
    /// Two appends to one stream in one statement would read the same head.
    const SAME_STREAM: bool = false;

    fn alone(
        &self,
        request: Request<'_>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send {
        self.append_alone(request)
    }

    fn commit(&self, group: Vec<Queued>) -> impl Future<Output = ()> + Send {
        self.commit_group(group)
    }
}

/// A copy of an error that says the same to every append of a group: the connection or the
/// pool failed, and the statement may or may not have been applied (as for a lone append).
/// `None` for an answer about the statement (a unique violation, a refused value...), which a
/// smaller group may not get.
fn for_every_append(error: &sqlx::Error) -> Option<sqlx::Error> {
    match error {
        sqlx::Error::Io(io) => Some(sqlx::Error::Io(std::io::Error::new(
            io.kind(),
            io.to_string(),
        ))),
        sqlx::Error::PoolTimedOut => Some(sqlx::Error::PoolTimedOut),
        sqlx::Error::PoolClosed => Some(sqlx::Error::PoolClosed),
        sqlx::Error::WorkerCrashed => Some(sqlx::Error::WorkerCrashed),
        sqlx::Error::Protocol(message) => Some(sqlx::Error::Protocol(message.clone())),
        _ => None,
    }
}

impl PostgresStore {
    /// An append (checked) without group commit.
    pub(super) async fn append_alone(&self, request: Request<'_>) -> Result<Vec<RecordedEvent>> {
        let head = request.head;
        let append = Append::from(request);
        match head {
            Some(head) => self.append_after_head(append, head).await,
            None => self.append_autocommit(append).await,
        }
    }

    /// An autocommit append that stores the data keys it offers (see [`Offers`]) in the same
    /// statement as its events: one commit. When the statement stored no event (a subject had
    /// a key already, or a conflict, a race, an idempotent retry, which the append without
    /// offers finds out), the events back, with the offered keys it stored and the subjects'
    /// keys it found; nothing of it when it failed, rolled back as a whole.
    pub(super) async fn append_offering(
        &self,
        request: &Request<'_>,
        events: Vec<NewEvent>,
        offers: &Offers,
    ) -> Result<Offered> {
        let append = Append {
            stream_id: request.stream_id,
            aggregate_type: request.aggregate_type,
            expected: request.expected,
            events,
            offers: Some(offers),
        };
        let rows = match append.insert_at(self, request.head, &self.inner.pool).await {
            Ok(rows) => rows,
            Err(error) if rolled_back(&error) => {
                return Ok(Offered::NotStored(append.events, OfferAnswer::default()));
            }
            Err(error) => return Err(self.fail(error)),
        };
        let stored = match rows.first() {
            Some(row) => columns::unsigned_opt::<_, i64, u64>(row, 0)?.is_some(),
            None => false,
        };
        if stored {
            return append.recorded(rows).map(Offered::Stored);
        }
        let mut answer = OfferAnswer::default();
        for row in &rows {
            let key_id: Uuid = columns::get(row, 4)?;
            match columns::get::<_, Option<String>>(row, 5)? {
                Some(subject) => answer
                    .existing
                    .push((key_id, subject, columns::get(row, 6)?)),
                None => answer.taken.push(key_id),
            }
        }
        Ok(Offered::NotStored(append.events, answer))
    }

    /// Commits a group in one statement. When the statement fails as a whole (a unique
    /// violation: a race with another writer, or the retry of a stored append; a refused
    /// value), the group is split in two and each half committed the same way, down to lone
    /// appends, which find out why on their own: the appends that could commit do, and each
    /// failure reaches only its append.
    fn commit_group(
        &self,
        mut group: Vec<Queued>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if group.len() == 1 {
                if let Some(mut queued) = group.pop() {
                    let outcome = self.append_alone(queued.append.request()).await;
                    queued.reply.send(outcome);
                }
                return;
            }
            match self.insert_group(&group).await {
                Ok(rows) => self.settle_group(group, rows).await,
                Err(error) => {
                    let copies: Option<Vec<sqlx::Error>> =
                        group.iter().map(|_| for_every_append(&error)).collect();
                    if let Some(copies) = copies {
                        for (queued, copy) in group.into_iter().zip(copies) {
                            queued.reply.send(Err(self.fail(copy)));
                        }
                        return;
                    }
                    tracing::debug!(appends = group.len(), %error, "group commit: splitting the group");
                    let second = group.split_off(group.len() / 2);
                    futures_util::future::join(self.commit_group(group), self.commit_group(second))
                        .await;
                }
            }
        })
    }

    /// Runs [`insert_group_sql`] for `group`.
    async fn insert_group(&self, group: &[Queued]) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        let rows: usize = group.iter().map(|q| q.append.events.len()).sum();
        let mut streams = Vec::with_capacity(rows);
        let mut aggregate_types = Vec::with_capacity(rows);
        let mut expected = Vec::with_capacity(rows);
        let mut after = Vec::with_capacity(rows);
        let mut ords = Vec::with_capacity(rows);
        let mut events = EventColumns::with_capacity(rows);
        for queued in group {
            let append = &queued.append;
            for (ord, event) in (1_i64..).zip(&append.events) {
                streams.push(append.stream_id.as_str());
                aggregate_types.push(append.aggregate_type.as_str());
                expected.push(expected_code(append.expected));
                after.push(append.head.map(|head| to_i64(head.version())));
                ords.push(ord);
                events.push(event);
            }
        }
        let query = sqlx::query(AssertSqlSafe(self.inner.sql.append_group.clone()))
            .bind(streams)
            .bind(aggregate_types)
            .bind(expected)
            .bind(after)
            .bind(ords);
        events.bind(query).fetch_all(&self.inner.pool).await
    }

    /// Answers each append of a committed group: with its stored events, or, when its head
    /// check refused it, with why (as the stream looks now) or the outcome of trying again.
    async fn settle_group(&self, group: Vec<Queued>, rows: Vec<PgRow>) {
        let mut by_stream: HashMap<String, Vec<PgRow>> = HashMap::with_capacity(group.len());
        for row in rows {
            // A row whose stream does not read leaves its append to be settled by looking.
            if let Ok(stream_id) = row.try_get::<String, _>(4) {
                by_stream.entry(stream_id).or_default().push(row);
            }
        }
        let mut unsettled = Vec::new();
        for mut queued in group {
            let rows = by_stream
                .remove(&queued.append.stream_id)
                .unwrap_or_default();
            if !rows.is_empty() && rows.len() == queued.append.events.len() {
                let append = Append::from(queued.append.request());
                queued.reply.send(append.recorded(rows));
            } else {
                unsettled.push(queued);
            }
        }
        futures_util::future::join_all(unsettled.into_iter().map(|mut queued| async move {
            let outcome = self.settle(queued.append.request()).await;
            queued.reply.send(outcome);
        }))
        .await;
    }

    /// An append of a group that stored nothing: why, as the stream looks now (a conflict,
    /// another aggregate type, an idempotent retry), or its outcome on its own when the stream
    /// now accepts it.
    async fn settle(&self, request: Request<'_>) -> Result<Vec<RecordedEvent>> {
        let append = Append::from(request);
        match append.verdict(append.diagnose(self, &self.inner.pool).await?) {
            Verdict::Stored(versions) => self.read_versions(append.stream_id, versions).await,
            Verdict::Refused(error) => Err(error),
            Verdict::Retry => self.append_autocommit(append).await,
        }
    }
}
