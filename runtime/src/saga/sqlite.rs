//! The saga runner's SQL on SQLite (the contract is in `sql.rs`). Instances change in
//! `BEGIN IMMEDIATE` transactions, whose write lock stands in for PostgreSQL's row locks; the
//! dispatcher of this process is woken when a batch commits, and one dispatcher per saga
//! delivers at a time (a lock on a file beside the database), so no signal crosses processes.

use super::sql::SagaSql;
use crate::store::erasure;
use crate::store::sql::Dialect;

/// Now, as RFC 3339 text in UTC.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

pub(super) fn statements() -> SagaSql {
    let instance = "SELECT state, CASE WHEN erased_at IS NULL THEN status ELSE 'erased' END,
                           correlation_id
                    FROM sagas WHERE saga = $1 AND saga_id = $2";
    SagaSql {
        lock_instance: instance.into(),
        read_instance: instance.into(),
        save_instance: format!(
            "INSERT INTO sagas (saga, saga_id, state, status, correlation_id, completed_at)
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'completed' THEN {NOW} END)
             ON CONFLICT (saga, saga_id) DO UPDATE
                 SET state = excluded.state, status = excluded.status, updated_at = {NOW},
                     completed_at = excluded.completed_at"
        )
        .into(),
        enqueue: "INSERT INTO saga_outbox (command_id, saga, saga_id, command_type, stream_id,
                                      payload, correlation_id, causation_id, traceparent)
             SELECT c.value ->> 'command_id', $1, $2, c.value ->> 'command_type',
                    c.value ->> 'stream_id', c.value ->> 'payload', $3, $4, $6
             FROM json_each($5) AS c WHERE true ORDER BY c.key
             ON CONFLICT (command_id) DO NOTHING"
            .into(),
        signal: None,
        channel: None,
        cancel_timeouts: "UPDATE saga_timeouts SET status = 'cancelled'
             WHERE saga = $1 AND saga_id = $2 AND status = 'pending'
               AND ($4 = 1 OR timeout_type IN (SELECT value FROM json_each($3)))"
            .into(),
        schedule:
            "INSERT INTO saga_timeouts (timeout_id, saga, saga_id, timeout_type, payload, due_at)
             SELECT d.value ->> 'timeout_id', $1, $2, d.value ->> 'timeout_type',
                    d.value ->> 'payload', d.value ->> 'due_at'
             FROM json_each($3) AS d WHERE true
             ON CONFLICT (timeout_id) DO NOTHING"
                .into(),
        pending: "SELECT command_id, saga_id, command_type, stream_id, payload, correlation_id,
                    causation_id, traceparent
             FROM saga_outbox WHERE saga = $1 AND status = 'pending' ORDER BY seq LIMIT $2"
            .into(),
        mark_command: format!(
            "UPDATE saga_outbox
             SET status = $2, error = $3, attempts = attempts + 1,
                 dispatched_at = CASE WHEN $2 = 'pending' THEN NULL ELSE {NOW} END
             WHERE command_id = $1"
        )
        .into(),
        due: "SELECT timeout_id, saga_id FROM saga_timeouts
             WHERE saga = $1 AND status = 'pending' AND due_at <= $2
             ORDER BY due_at, timeout_id LIMIT $3"
            .into(),
        lock_timeout: "SELECT timeout_type, payload, due_at FROM saga_timeouts
             WHERE timeout_id = $1 AND status = 'pending'"
            .into(),
        mark_timeout: format!(
            "UPDATE saga_timeouts SET status = $2, error = $3, fired_at = {NOW}
             WHERE timeout_id = $1"
        )
        .into(),
        counts: "SELECT (SELECT count(*) FROM sagas WHERE saga = $1 AND status = 'active'),
                    (SELECT count(*) FROM sagas WHERE saga = $1 AND status = 'completed'),
                    (SELECT count(*) FROM saga_outbox WHERE saga = $1 AND status = 'pending'),
                    (SELECT count(*) FROM saga_outbox WHERE saga = $1 AND status = 'rejected'),
                    (SELECT count(*) FROM saga_outbox WHERE saga = $1 AND status = 'failed'),
                    (SELECT count(*) FROM saga_timeouts WHERE saga = $1 AND status = 'pending'),
                    (SELECT count(*) FROM sagas WHERE saga = $1 AND erased_at IS NOT NULL)"
            .into(),
        record_data_key:
            "INSERT OR IGNORE INTO saga_data_keys (saga, saga_id, key_id) VALUES ($1, $2, $3)"
                .into(),
        // The transaction holds the write lock: no one deletes the key before it ends.
        data_key_present: "SELECT count(*) FROM data_keys WHERE key_id = $1".into(),
        erase: erasure::statements(&Dialect::Sqlite)
            .into_iter()
            .map(Into::into)
            .collect(),
    }
}
