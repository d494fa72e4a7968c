//! A relay's bookkeeping in the store: its checkpoint under its lease token, its dead letters and
//! its status (tables of migration 11).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::Failure;
use super::message::Outbound;
use crate::envelope::RecordedEvent;
use crate::position::FeedPosition;
use crate::store::PostgresStore;
use crate::store::backend::columns;

/// The checkpoint a relay found when it took its lease, and the token it wrote.
#[derive(Debug)]
pub(super) struct Claimed {
    pub position: FeedPosition,
    relay: String,
    token: String,
}

/// An event a relay did not publish: the broker refused it for good, or it waits behind such an
/// event of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayDeadLetter {
    /// The event's stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// The event id.
    pub event_id: Uuid,
    /// The event type.
    pub event_type: String,
    /// Its place in the feed.
    pub feed_position: FeedPosition,
    /// The broker's refusal; `None` for an event parked behind its stream's refused one.
    pub error: Option<String>,
}

impl RelayDeadLetter {
    /// `message`, refused for good with `error`.
    pub(super) fn refused(message: &Outbound, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::behind(&message.event)
        }
    }

    /// `event`, parked behind its stream's refused one.
    pub(super) fn behind(event: &RecordedEvent) -> Self {
        Self {
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            feed_position: event.feed_position(),
            error: None,
        }
    }
}

/// Where a relay stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStatus {
    /// Every event up to here was acknowledged by the broker (or is a dead letter).
    pub checkpoint: FeedPosition,
    /// Events the broker acknowledged, counted as checkpoints are saved: those a relay that
    /// died had published after its last checkpoint are not (its successor resumes after
    /// them), and a batch published again counts again.
    pub published: u64,
    /// Events stored after the checkpoint (all types: the relay's filter is not applied).
    pub behind: u64,
    /// Its dead letters, oldest first.
    pub dead_letters: Vec<RelayDeadLetter>,
    /// When the checkpoint last moved.
    pub updated_at: Option<DateTime<Utc>>,
}

fn table(store: &PostgresStore, name: &str) -> String {
    format!("\"{}\".{name}", store.schema())
}

/// Creates the relay's checkpoint when missing and writes a new lease token into it.
pub(super) async fn claim(store: &PostgresStore, relay: &str) -> Result<Claimed, Failure> {
    let token = Uuid::now_v7().to_string();
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} AS c (relay, lease_token) VALUES ($1, $2)
         ON CONFLICT (tenant, relay) DO UPDATE SET lease_token = excluded.lease_token
         RETURNING c.tx, c.position",
        t = table(store, "relay_checkpoints")
    )))
    .bind(relay)
    .bind(&token)
    .fetch_one(store.pool())
    .await
    .map_err(|error| fail(store, error))?;
    Ok(Claimed {
        position: position(&row, 0).map_err(Failure::Fatal)?,
        relay: relay.to_owned(),
        token,
    })
}

/// Moves the checkpoint to `to` and records `letters`, under the lease, in one statement (one
/// round trip, atomic: without the lease's token nothing is written).
pub(super) async fn save(
    store: &PostgresStore,
    claimed: &Claimed,
    to: FeedPosition,
    published: u64,
    letters: Vec<RelayDeadLetter>,
) -> Result<(), Failure> {
    let letters = letters_json(&letters)?;
    let moved: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH moved AS (
             UPDATE {checkpoints}
             SET tx = $3, position = $4, published = published + $5, updated_at = now()
             WHERE relay = $1 AND lease_token = $2 AND (tx, position) <= ($3, $4)
             RETURNING relay
         ), parked AS (
             INSERT INTO {letters} (relay, stream_id, stream_version, event_id, event_type, tx,
                                    position, error)
             SELECT m.relay, l.stream_id, l.stream_version, l.event_id, l.event_type, l.tx,
                    l.position, l.error
             FROM moved m,
                  json_to_recordset($6::json) AS l(stream_id text, stream_version bigint,
                      event_id uuid, event_type text, tx bigint, position bigint, error text)
             ON CONFLICT DO NOTHING
         )
         SELECT count(*) FROM moved",
        checkpoints = table(store, "relay_checkpoints"),
        letters = table(store, "relay_dead_letters")
    )))
    .bind(&claimed.relay)
    .bind(&claimed.token)
    .bind(signed(to.tx))
    .bind(signed(to.position))
    .bind(signed(published))
    .bind(letters)
    .fetch_one(store.pool())
    .await
    .map_err(|e| fail(store, e))?;
    if moved == 0 {
        return Err(Failure::LeaseLost);
    }
    Ok(())
}

/// The streams with dead letters: their events wait.
pub(super) async fn parked_streams(
    store: &PostgresStore,
    relay: &str,
) -> Result<HashSet<String>, Failure> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT DISTINCT stream_id FROM {t} WHERE relay = $1",
        t = table(store, "relay_dead_letters")
    )))
    .bind(relay)
    .fetch_all(store.pool())
    .await
    .map(|streams| streams.into_iter().collect())
    .map_err(|e| fail(store, e))
}

/// The status of the relay `relay` of `store`, also recorded as metrics
/// (`factum.relay.lag.events`, `factum.relay.dead_letters` by state).
///
/// # Errors
/// A database error, or [`crate::Error::Corrupt`] for a stored position out of range.
pub async fn status(store: &PostgresStore, relay: &str) -> crate::Result<RelayStatus> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT c.tx, c.position, c.published, c.updated_at,
                (SELECT count(*) FROM {events} e
                 WHERE (e.tx, e.position) > (c.tx::text::xid8, c.position))
         -- A relay that never ran stands at the start.
         FROM (SELECT coalesce(max(r.tx), 0) AS tx, coalesce(max(r.position), 0) AS position,
                      coalesce(max(r.published), 0) AS published, max(r.updated_at) AS updated_at
               FROM {t} r WHERE r.relay = $1) c",
        t = table(store, "relay_checkpoints"),
        events = table(store, "events")
    )))
    .bind(relay)
    .fetch_one(store.pool())
    .await
    .map_err(|e| store.fail(e))?;
    let letters = sqlx::query(AssertSqlSafe(format!(
        "SELECT stream_id, stream_version, event_id, event_type, tx, position, error
         FROM {t} WHERE relay = $1 ORDER BY tx, position",
        t = table(store, "relay_dead_letters")
    )))
    .bind(relay)
    .fetch_all(store.pool())
    .await
    .map_err(|e| store.fail(e))?;
    let dead_letters = letters
        .iter()
        .map(letter)
        .collect::<crate::Result<Vec<_>>>()?;
    let status = RelayStatus {
        checkpoint: position(&row, 0)?,
        published: columns::unsigned::<_, i64, u64>(&row, 2)?,
        behind: columns::unsigned::<_, i64, u64>(&row, 4)?,
        dead_letters,
        updated_at: columns::get(&row, 3)?,
    };
    let refused = status
        .dead_letters
        .iter()
        .filter(|letter| letter.error.is_some())
        .count() as u64;
    let waiting = status.dead_letters.len() as u64 - refused;
    crate::metrics::relay_status(relay, status.behind, refused, waiting);
    Ok(status)
}

/// Dead letters as the statements take them: a JSON array of records.
fn letters_json(letters: &[RelayDeadLetter]) -> Result<String, Failure> {
    serde_json::to_string(
        &letters
            .iter()
            .map(|letter| {
                serde_json::json!({
                    "stream_id": letter.stream_id,
                    "stream_version": letter.stream_version,
                    "event_id": letter.event_id,
                    "event_type": letter.event_type,
                    "tx": letter.feed_position.tx,
                    "position": letter.feed_position.position,
                    "error": letter.error,
                })
            })
            .collect::<Vec<_>>(),
    )
    .map_err(|e| Failure::Fatal(crate::Error::Backend(e.into())))
}

/// A dead letter read back: `stream_id, stream_version, event_id, event_type, tx, position,
/// error`.
fn letter(row: &sqlx::postgres::PgRow) -> crate::Result<RelayDeadLetter> {
    Ok(RelayDeadLetter {
        stream_id: columns::get(row, 0)?,
        stream_version: columns::unsigned::<_, i64, u64>(row, 1)?,
        event_id: columns::get(row, 2)?,
        event_type: columns::get(row, 3)?,
        feed_position: position(row, 4)?,
        error: columns::get(row, 6)?,
    })
}

fn position(row: &sqlx::postgres::PgRow, at: usize) -> crate::Result<FeedPosition> {
    Ok(FeedPosition {
        tx: columns::unsigned::<_, i64, u64>(row, at)?,
        position: columns::unsigned::<_, i64, u64>(row, at + 1)?,
    })
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A database failure, as the store reports it (tables missing: [`crate::Error::NotMigrated`]).
fn fail(store: &PostgresStore, error: sqlx::Error) -> Failure {
    Failure::store(store.fail(error))
}

/// Asks the relay `relay` to publish the parked stream `stream_id` again, from its refused
/// event (after the broker was changed to take it, say): the relay holding the lease publishes
/// the stream's dead letters in stream order within a second, then the stream flows again. An
/// event refused again parks it again. Returns how many dead letters were marked (0: the stream
/// is not parked).
///
/// # Errors
/// A database error; [`crate::Error::NotMigrated`] when the relay tables are missing.
pub async fn retry(store: &PostgresStore, relay: &str, stream_id: &str) -> crate::Result<u64> {
    let marked = sqlx::query(AssertSqlSafe(format!(
        "UPDATE {t} SET retry_requested = true WHERE relay = $1 AND stream_id = $2",
        t = table(store, "relay_dead_letters")
    )))
    .bind(relay)
    .bind(stream_id)
    .execute(store.pool())
    .await
    .map_err(|e| store.fail(e))?;
    Ok(marked.rows_affected())
}

/// Asks the relay `relay` to skip the refused event of the parked stream `stream_id` (it is
/// never published) and publish the events parked behind it: returns the skipped event's dead
/// letter (`None`: the stream is not parked).
///
/// # Errors
/// As [`retry`].
pub async fn skip(
    store: &PostgresStore,
    relay: &str,
    stream_id: &str,
) -> crate::Result<Option<RelayDeadLetter>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "WITH skipped AS (
             DELETE FROM {t}
             WHERE (relay, stream_id, stream_version) = (
                 SELECT relay, stream_id, min(stream_version) FROM {t}
                 WHERE relay = $1 AND stream_id = $2 GROUP BY relay, stream_id)
             RETURNING stream_id, stream_version, event_id, event_type, tx, position, error
         ), marked AS (
             UPDATE {t} SET retry_requested = true
             WHERE relay = $1 AND stream_id = $2
               AND stream_version > (SELECT stream_version FROM skipped)
         )
         SELECT stream_id, stream_version, event_id, event_type, tx, position, error FROM skipped",
        t = table(store, "relay_dead_letters")
    )))
    .bind(relay)
    .bind(stream_id)
    .fetch_optional(store.pool())
    .await
    .map_err(|e| store.fail(e))?;
    row.map(|row| letter(&row)).transpose()
}

/// The streams whose retry an operator asked for, each with its dead letters' event ids in
/// stream order.
pub(super) async fn retries(
    store: &PostgresStore,
    relay: &str,
) -> Result<Vec<(String, Vec<String>)>, Failure> {
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT stream_id, array_agg(event_id::text ORDER BY stream_version)
         FROM {t} WHERE relay = $1
         GROUP BY stream_id HAVING bool_or(retry_requested)
         ORDER BY min(tx), min(position)",
        t = table(store, "relay_dead_letters")
    )))
    .bind(relay)
    .fetch_all(store.pool())
    .await
    .map_err(|e| fail(store, e))?;
    Ok(rows)
}

/// After a retry of `stream_id`: its dead letters replaced by `letters` (what was refused or
/// parked again), `published` added to the count, under the lease's token.
pub(super) async fn resolve(
    store: &PostgresStore,
    claimed: &Claimed,
    stream_id: &str,
    published: u64,
    letters: Vec<RelayDeadLetter>,
) -> Result<(), Failure> {
    let letters = letters_json(&letters)?;
    let mut tx = store.pool().begin().await.map_err(|e| fail(store, e))?;
    let held = sqlx::query(AssertSqlSafe(format!(
        "UPDATE {t} SET published = published + $3, updated_at = now()
         WHERE relay = $1 AND lease_token = $2",
        t = table(store, "relay_checkpoints")
    )))
    .bind(&claimed.relay)
    .bind(&claimed.token)
    .bind(signed(published))
    .execute(&mut *tx)
    .await
    .map_err(|e| fail(store, e))?
    .rows_affected();
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {t} WHERE relay = $1 AND stream_id = $2",
        t = table(store, "relay_dead_letters")
    )))
    .bind(&claimed.relay)
    .bind(stream_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| fail(store, e))?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} (relay, stream_id, stream_version, event_id, event_type, tx, position,
                          error)
         SELECT $1, l.stream_id, l.stream_version, l.event_id, l.event_type, l.tx, l.position,
                l.error
         FROM json_to_recordset($2::json) AS l(stream_id text, stream_version bigint,
              event_id uuid, event_type text, tx bigint, position bigint, error text)",
        t = table(store, "relay_dead_letters")
    )))
    .bind(&claimed.relay)
    .bind(letters)
    .execute(&mut *tx)
    .await
    .map_err(|e| fail(store, e))?;
    if held == 0 {
        // Another relay holds the lease: it retries the stream.
        return Err(Failure::LeaseLost);
    }
    tx.commit().await.map_err(|e| fail(store, e))?;
    Ok(())
}
