//! What forgetting a data subject erases around the log (crypto-shredding, see [`crate::pii`]).
//!
//! Deleting the subject's key makes the personal data in the log unreadable, but copies of it
//! outside the log are in plain: aggregate snapshots of the streams holding it, the saga
//! instances that handled it (their state, the commands they queued, their timeouts), and the
//! error texts the runners recorded for its events (dead letters, side effects, relay refusals).
//! These statements erase them, given the key's id: in the transaction that deletes the key, and
//! in a saga's transaction that finds the key deleted after it read an event in plain (another
//! process may hold the key for a few seconds longer).
//!
//! Saga instances that handled an event in plain are listed by key in `saga_data_keys`; an
//! erased instance ends (`completed`, its state JSON `null`, `erased_at` set): its queued
//! commands are never sent (marked failed, their payload erased) and its timeouts cancelled.
//! The other copies are found by scanning the log for the key's id (as the sealed data names
//! it: in the first bytes of PostgreSQL's `sealed` column, or in the payload), which has no
//! index: forgetting is rare.

use crate::store::sql::Dialect;

/// What an erased error text reads (a constant of ours, written into the statements).
const ERASED: &str = "[erased: the data subject was forgotten]";

/// The statements erasing the copies of the personal data sealed under a key: each takes `$1`,
/// the key's id as text, and `$2`, the mark payloads sealed under it hold
/// ([`crate::pii::key_mark`]; [`binds`] gives both); run in order, in one transaction. They run on the store's own driver
/// and on the `Any` driver alike.
pub(crate) fn statements(dialect: &Dialect) -> Vec<String> {
    match dialect {
        #[cfg(feature = "postgres")]
        Dialect::Postgres(schema) => vec![postgres(schema.quoted())],
        #[cfg(feature = "sqlite")]
        Dialect::Sqlite => sqlite(),
    }
}

/// The statements' parameters for the key `key_id`.
pub(crate) fn binds(key_id: uuid::Uuid) -> [String; 2] {
    [key_id.to_string(), crate::pii::key_mark(key_id)]
}

#[cfg(feature = "postgres")]
fn postgres(s: &str) -> String {
    format!(
        "WITH sealed AS MATERIALIZED (
             SELECT stream_id, stream_version, event_id FROM {s}.events
             WHERE substring(sealed FROM 1 FOR 16) = uuid_send($1::uuid)
                OR strpos(payload::text, $1) > 0 OR strpos(payload::text, $2) > 0
         ), snapshots AS (
             DELETE FROM {s}.snapshots WHERE stream_id IN (SELECT stream_id FROM sealed)
         ), instances AS (
             DELETE FROM {s}.saga_data_keys WHERE key_id = $1::uuid RETURNING saga, saga_id
         ), sagas AS (
             UPDATE {s}.sagas i
             SET state = 'null', status = 'completed', erased_at = now(), updated_at = now(),
                 completed_at = coalesce(i.completed_at, now())
             FROM instances e WHERE i.saga = e.saga AND i.saga_id = e.saga_id
         ), outbox AS (
             UPDATE {s}.saga_outbox o
             SET payload = 'null',
                 status = CASE WHEN o.status = 'pending' THEN 'failed' ELSE o.status END,
                 error = CASE WHEN o.status = 'pending' OR o.error IS NOT NULL THEN '{ERASED}' END
             FROM instances e WHERE o.saga = e.saga AND o.saga_id = e.saga_id
         ), timeouts AS (
             UPDATE {s}.saga_timeouts t
             SET payload = 'null',
                 status = CASE WHEN t.status = 'pending' THEN 'cancelled' ELSE t.status END,
                 error = CASE WHEN t.error IS NOT NULL THEN '{ERASED}' END
             FROM instances e WHERE t.saga = e.saga AND t.saga_id = e.saga_id
         ), dead_letters AS (
             UPDATE {s}.projection_dead_letters d SET error = '{ERASED}'
             FROM sealed e
             WHERE d.stream_id = e.stream_id AND d.stream_version = e.stream_version
               AND d.error IS NOT NULL
         ), relay_dead_letters AS (
             UPDATE {s}.relay_dead_letters d SET error = '{ERASED}'
             FROM sealed e
             WHERE d.stream_id = e.stream_id AND d.stream_version = e.stream_version
               AND d.error IS NOT NULL
         ), side_effects AS (
             UPDATE {s}.projection_side_effects x SET error = '{ERASED}'
             FROM sealed e WHERE x.event_id = e.event_id AND x.error IS NOT NULL
         )
         SELECT count(*) FROM instances"
    )
}

#[cfg(feature = "sqlite")]
fn sqlite() -> Vec<String> {
    const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
    const SEALED: &str = "SELECT stream_id, stream_version FROM events WHERE instr(payload, $1) > 0 OR instr(payload, $2) > 0";
    const INSTANCES: &str = "SELECT saga, saga_id FROM saga_data_keys WHERE key_id = $1";
    vec![
        format!("DELETE FROM snapshots WHERE stream_id IN (SELECT stream_id FROM ({SEALED}))"),
        format!(
            "UPDATE sagas
             SET state = 'null', status = 'completed', erased_at = {NOW}, updated_at = {NOW},
                 completed_at = coalesce(completed_at, {NOW})
             WHERE (saga, saga_id) IN ({INSTANCES})"
        ),
        format!(
            "UPDATE saga_outbox
             SET payload = 'null',
                 error = CASE WHEN status = 'pending' OR error IS NOT NULL THEN '{ERASED}' END,
                 status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END
             WHERE (saga, saga_id) IN ({INSTANCES})"
        ),
        format!(
            "UPDATE saga_timeouts
             SET payload = 'null',
                 error = CASE WHEN error IS NOT NULL THEN '{ERASED}' END,
                 status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END
             WHERE (saga, saga_id) IN ({INSTANCES})"
        ),
        format!(
            "UPDATE projection_dead_letters SET error = '{ERASED}'
             WHERE error IS NOT NULL AND (stream_id, stream_version) IN ({SEALED})"
        ),
        format!(
            "UPDATE projection_side_effects SET error = '{ERASED}'
             WHERE error IS NOT NULL
               AND event_id IN (SELECT event_id FROM events
                                WHERE instr(payload, $1) > 0 OR instr(payload, $2) > 0)"
        ),
        "DELETE FROM saga_data_keys WHERE key_id = $1".to_owned(),
    ]
}
