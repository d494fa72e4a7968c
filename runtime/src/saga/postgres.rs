//! The saga runner's SQL on PostgreSQL (the contract is in `sql.rs`): instance rows locked
//! `FOR UPDATE`, so an event, a timeout and a refused command of one instance take turns, and
//! `NOTIFY` to wake the dispatchers of other processes when commands are queued.

use super::sql::SagaSql;
use crate::store::erasure;
use crate::store::sql::{Dialect, Schema};

/// A time as RFC 3339 text in UTC.
const RFC3339: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";

pub(super) fn statements(schema: &Schema) -> SagaSql {
    let s = schema.quoted();
    let instance = format!(
        "SELECT state::text, CASE WHEN erased_at IS NULL THEN status ELSE 'erased' END,
                correlation_id::text
         FROM {s}.sagas WHERE saga = $1 AND saga_id = $2"
    );
    let channel = schema.channel("factum_saga");
    SagaSql {
        lock_instance: format!("{instance} FOR UPDATE").into(),
        read_instance: instance.into(),
        save_instance: format!(
            "INSERT INTO {s}.sagas AS i (saga, saga_id, state, status, correlation_id, completed_at)
             VALUES ($1, $2, $3::json, $4, $5::uuid, CASE WHEN $4 = 'completed' THEN now() END)
             ON CONFLICT (tenant, saga, saga_id) DO UPDATE
                 SET state = excluded.state, status = excluded.status, updated_at = now(),
                     completed_at = excluded.completed_at"
        )
        .into(),
        enqueue: format!(
            "INSERT INTO {s}.saga_outbox
                 (command_id, saga, saga_id, command_type, stream_id, payload, correlation_id,
                  causation_id, traceparent)
             SELECT c.command_id, $1, $2, c.command_type, c.stream_id, c.payload::json,
                    $3::uuid, $4::uuid, $6
             FROM json_to_recordset($5::json) AS c (ord int8, command_id uuid,
                  command_type text, stream_id text, payload text)
             ORDER BY c.ord
             ON CONFLICT (tenant, command_id) DO NOTHING"
        )
        .into(),
        signal: Some(format!("SELECT pg_notify('{channel}', $1)").into()),
        channel: Some(channel),
        cancel_timeouts: format!(
            "UPDATE {s}.saga_timeouts SET status = 'cancelled'
             WHERE saga = $1 AND saga_id = $2 AND status = 'pending'
               AND ($4 = 1 OR timeout_type IN (SELECT json_array_elements_text($3::json)))"
        )
        .into(),
        schedule: format!(
            "INSERT INTO {s}.saga_timeouts (timeout_id, saga, saga_id, timeout_type, payload, due_at)
             SELECT d.timeout_id, $1, $2, d.timeout_type, d.payload::json, d.due_at
             FROM json_to_recordset($3::json) AS d (timeout_id uuid, timeout_type text,
                  payload text, due_at timestamptz)
             ON CONFLICT (tenant, timeout_id) DO NOTHING"
        )
        .into(),
        pending: format!(
            "SELECT command_id::text, saga_id, command_type, stream_id, payload::text,
                    correlation_id::text, causation_id::text, traceparent
             FROM {s}.saga_outbox
             WHERE saga = $1 AND status = 'pending' ORDER BY seq LIMIT $2"
        )
        .into(),
        mark_command: format!(
            "UPDATE {s}.saga_outbox
             SET status = $2, error = $3, attempts = attempts + 1,
                 dispatched_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
             WHERE command_id = $1::uuid"
        )
        .into(),
        due: format!(
            "SELECT timeout_id::text, saga_id FROM {s}.saga_timeouts
             WHERE saga = $1 AND status = 'pending' AND due_at <= $2::timestamptz
             ORDER BY due_at, timeout_id LIMIT $3"
        )
        .into(),
        lock_timeout: format!(
            "SELECT timeout_type, payload::text, to_char(due_at AT TIME ZONE 'UTC', {RFC3339})
             FROM {s}.saga_timeouts
             WHERE timeout_id = $1::uuid AND status = 'pending' FOR UPDATE"
        )
        .into(),
        mark_timeout: format!(
            "UPDATE {s}.saga_timeouts SET status = $2, error = $3, fired_at = now()
             WHERE timeout_id = $1::uuid"
        )
        .into(),
        counts: format!(
            "SELECT (SELECT count(*) FROM {s}.sagas WHERE saga = $1 AND status = 'active'),
                    (SELECT count(*) FROM {s}.sagas WHERE saga = $1 AND status = 'completed'),
                    (SELECT count(*) FROM {s}.saga_outbox WHERE saga = $1 AND status = 'pending'),
                    (SELECT count(*) FROM {s}.saga_outbox WHERE saga = $1 AND status = 'rejected'),
                    (SELECT count(*) FROM {s}.saga_outbox WHERE saga = $1 AND status = 'failed'),
                    (SELECT count(*) FROM {s}.saga_timeouts WHERE saga = $1 AND status = 'pending'),
                    (SELECT count(*) FROM {s}.sagas WHERE saga = $1 AND erased_at IS NOT NULL)"
        )
        .into(),
        record_data_key: format!(
            "INSERT INTO {s}.saga_data_keys (saga, saga_id, key_id) VALUES ($1, $2, $3::uuid)
             ON CONFLICT DO NOTHING"
        )
        .into(),
        data_key_present: format!(
            "SELECT count(*) FROM (
                 SELECT 1 FROM {s}.data_keys WHERE key_id = $1::uuid FOR SHARE
             ) AS present"
        )
        .into(),
        erase: erasure::statements(&Dialect::Postgres(schema.clone()))
            .into_iter()
            .map(Into::into)
            .collect(),
    }
}
