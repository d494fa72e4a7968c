//! The projection runner's SQL on PostgreSQL (the contract is in `sql.rs`). Concurrent runners
//! of one projection (a lease lost to a network partition, say) take turns on the checkpoint
//! row (`FOR UPDATE`); an inline application share-locks it, so appends do not wait for each
//! other; versions change under a transaction-scoped advisory lock.

use super::sql::ProjectionSql;
use crate::store::sql::Schema;

/// The oldest time of a set, as RFC 3339 text in UTC.
const RFC3339: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";

pub(super) fn statements(schema: &Schema) -> ProjectionSql {
    let s = schema.quoted();
    let parked = format!(
        "{s}.projection_dead_letters d
         WHERE d.projection = $1 AND d.version = $2 AND d.status = 'parked'"
    );
    let lock_checkpoint = format!(
        "SELECT c.tx, c.position, (c.parked_events > 0)::int4, c.lease_token
         FROM {s}.projection_checkpoints c,
              -- The transaction's limits, set for the rest of it.
              (SELECT set_config('statement_timeout', $3, true),
                      set_config('idle_in_transaction_session_timeout', $4, true)) AS limits
         WHERE c.projection = $1 AND c.version = $2 FOR UPDATE OF c"
    );
    ProjectionSql {
        ensure_checkpoint: format!(
            "INSERT INTO {s}.projection_checkpoints (projection, version, tx, position)
             VALUES ($1, $2, 0, 0) ON CONFLICT DO NOTHING"
        )
        .into(),
        advance_checkpoint: Some(
            format!(
                "WITH c AS ({lock_checkpoint}),
                 moved AS (
                     UPDATE {s}.projection_checkpoints m
                     SET tx = $5, position = $6, updated_at = now()
                     FROM c
                     WHERE m.projection = $1 AND m.version = $2
                       AND (c.tx, c.position) < ($5::int8, $6::int8)
                 )
                 SELECT * FROM c"
            )
            .into(),
        ),
        lock_checkpoint: lock_checkpoint.into(),
        parked_among: format!(
            "SELECT coalesce(json_agg(DISTINCT d.stream_id), '[]')::text FROM {parked}
               AND d.stream_id IN (SELECT json_array_elements_text($3::json))"
        )
        .into(),
        claim_lease: format!(
            "UPDATE {s}.projection_checkpoints SET lease_token = $3
             WHERE projection = $1 AND version = $2"
        )
        .into(),
        save_checkpoint: format!(
            "UPDATE {s}.projection_checkpoints SET tx = $3, position = $4, updated_at = now()
             WHERE projection = $1 AND version = $2"
        )
        .into(),
        read_checkpoint: format!(
            "SELECT tx, position FROM {s}.projection_checkpoints
             WHERE projection = $1 AND version = $2"
        )
        .into(),
        status: format!(
            "SELECT coalesce((SELECT max(tx)::text::bigint FROM {s}.events), 0),
                    coalesce((SELECT max(position) FROM {s}.events), 0),
                    count(*), to_char(min(e.recorded_at) AT TIME ZONE 'UTC', {RFC3339}),
                    (SELECT count(DISTINCT d.stream_id) FROM {parked}),
                    (SELECT count(*) FROM {parked})
             FROM {s}.events e
             WHERE (e.tx, e.position) > ($3::text::xid8, $4)
               AND e.event_type IN (SELECT json_array_elements_text($5::json))"
        )
        .into(),
        park: format!(
            "WITH parked AS (
             INSERT INTO {s}.projection_dead_letters
                 (projection, version, stream_id, stream_version, event_id, event_type, tx,
                  position, error, attempts)
             SELECT $1, $2, l.stream_id, coalesce(l.stream_version, e.stream_version),
                    coalesce(l.event_id, e.event_id), l.event_type, l.tx, l.position, l.error,
                    l.attempts
             FROM json_to_recordset($3::json) AS l (stream_id text, stream_version bigint,
                  event_id uuid, event_type text, tx bigint, position bigint, error text,
                  attempts integer)
             -- A letter of an event read lean takes its id and version from the stored event.
             LEFT JOIN {s}.events e
                    ON l.stream_version IS NULL AND e.tx = l.tx::text::xid8
                       AND e.position = l.position
             ON CONFLICT DO NOTHING
             RETURNING 1
             )
             UPDATE {s}.projection_checkpoints
             SET parked_events = parked_events + (SELECT count(*) FROM parked)
             WHERE projection = $1 AND version = $2"
        )
        .into(),
        list_parked: format!(
            "SELECT d.stream_id, min(d.stream_version), count(*),
                    (array_agg(d.error ORDER BY d.stream_version))[1],
                    (array_agg(d.attempts ORDER BY d.stream_version))[1]::bigint,
                    to_char(min(d.parked_at) AT TIME ZONE 'UTC', {RFC3339})
             FROM {parked}
             GROUP BY d.stream_id ORDER BY min(d.parked_at), d.stream_id"
        )
        .into(),
        first_parked: format!(
            "SELECT d.stream_version FROM {parked} AND d.stream_id = $3
             ORDER BY d.stream_version LIMIT 1"
        )
        .into(),
        unpark: format!(
            "WITH gone AS (
                 DELETE FROM {s}.projection_dead_letters
                 WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4
                 RETURNING status
             )
             UPDATE {s}.projection_checkpoints
             SET parked_events = parked_events
                 - (SELECT count(*) FROM gone WHERE status = 'parked')
             WHERE projection = $1 AND version = $2"
        )
        .into(),
        record_failure: format!(
            "UPDATE {s}.projection_dead_letters
             SET error = $5, attempts = attempts + 1, updated_at = now()
             WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4"
        )
        .into(),
        skip: format!(
            "WITH skipped AS (
                 UPDATE {s}.projection_dead_letters SET status = 'skipped', updated_at = now()
                 WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4
                   AND status = 'parked'
                 RETURNING 1
             )
             UPDATE {s}.projection_checkpoints
             SET parked_events = parked_events - (SELECT count(*) FROM skipped)
             WHERE projection = $1 AND version = $2"
        )
        .into(),
        claim_side_effects: format!(
            "INSERT INTO {s}.projection_side_effects AS c (projection, event_id, version, status)
             SELECT $1, ids.id::uuid, $2, 'pending'
             FROM json_array_elements_text($3::json) AS ids (id)
             ON CONFLICT (tenant, projection, event_id) DO UPDATE
                 SET version = excluded.version, status = 'pending', decided_at = now()
                 WHERE c.status = 'skipped' AND c.version <> excluded.version
             RETURNING event_id::text"
        )
        .into(),
        skip_side_effects: format!(
            "INSERT INTO {s}.projection_side_effects (projection, event_id, version, status)
             SELECT $1, ids.id::uuid, $2, 'skipped'
             FROM json_array_elements_text($3::json) AS ids (id)
             ON CONFLICT (tenant, projection, event_id) DO NOTHING"
        )
        .into(),
        pending_effects: format!(
            "SELECT c.event_id::text FROM {s}.projection_side_effects c
             WHERE c.projection = $1 AND c.status = 'pending' AND c.version = $2"
        )
        .into(),
        retired_effects: format!(
            "SELECT DISTINCT c.version FROM {s}.projection_side_effects c
             JOIN {s}.projection_versions v ON v.projection = c.projection AND v.version = c.version
             WHERE c.projection = $1 AND c.status = 'pending' AND c.version <> $2
               AND v.state = 'retired'"
        )
        .into(),
        adopt_effects: format!(
            "UPDATE {s}.projection_side_effects SET version = $2
             WHERE projection = $1 AND status = 'pending' AND version = $3"
        )
        .into(),
        effect_done: format!(
            "UPDATE {s}.projection_side_effects
             SET status = CASE WHEN $4 = 1 THEN 'failed' ELSE 'done' END, done_at = now(),
                 error = $5
             WHERE projection = $1 AND event_id = $3::uuid AND version = $2"
        )
        .into(),
        effect_failed: format!(
            "UPDATE {s}.projection_side_effects SET attempts = attempts + 1, error = $4
             WHERE projection = $1 AND event_id = $3::uuid AND version = $2"
        )
        .into(),
        inline_marks: format!(
            "SELECT stream_id, applied_version FROM {s}.projection_inline_streams
             WHERE projection = $1 AND version = $2
               AND stream_id IN (SELECT json_array_elements_text($3::json))"
        )
        .into(),
        inline_standing: format!(
            "SELECT c.tx, c.position,
                    (SELECT i.applied_version FROM {s}.projection_inline_streams i
                     WHERE i.projection = $1 AND i.version = $2 AND i.stream_id = $3),
                    (c.parked_events > 0)::int4
             FROM {s}.projection_checkpoints c
             WHERE c.projection = $1 AND c.version = $2 FOR SHARE OF c"
        )
        .into(),
        inline_mark: format!(
            "INSERT INTO {s}.projection_inline_streams AS i
                 (projection, version, stream_id, applied_version)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, projection, version, stream_id) DO UPDATE
                 SET applied_version = excluded.applied_version, updated_at = now()
                 WHERE i.applied_version < excluded.applied_version"
        )
        .into(),
        // The schema and the tenant are in the key: stores in other schemas of the server,
        // and other tenants' runners, do not wait on it.
        lock_versions: format!(
            "SELECT pg_advisory_xact_lock(hashtext('factum.projection_versions'),
                hashtext('{}:' || {s}.bookkeeping_scope() || ':' || $1))",
            schema.name()
        )
        .into(),
        versions: format!(
            "SELECT version, state FROM {s}.projection_versions WHERE projection = $1"
        )
        .into(),
        register_version: format!(
            "INSERT INTO {s}.projection_versions (projection, version, state, activated_at)
             VALUES ($1, $2, $3, CASE WHEN $4 = 1 THEN now() END)"
        )
        .into(),
        version_state: format!(
            "SELECT state FROM {s}.projection_versions WHERE projection = $1 AND version = $2"
        )
        .into(),
        retire_active: format!(
            "UPDATE {s}.projection_versions SET state = 'retired', retired_at = now()
             WHERE projection = $1 AND state = 'active'
               AND EXISTS (SELECT 1 FROM {s}.projection_versions
                           WHERE projection = $1 AND version = $2 AND state = 'building')"
        )
        .into(),
        activate: format!(
            "UPDATE {s}.projection_versions SET state = 'active', activated_at = now()
             WHERE projection = $1 AND version = $2 AND state = 'building'"
        )
        .into(),
        active_version: format!(
            "SELECT version FROM {s}.projection_versions WHERE projection = $1 AND state = 'active'"
        )
        .into(),
        clear: [
            "projection_checkpoints",
            "projection_dead_letters",
            "projection_inline_streams",
        ]
        .map(|table| {
            format!("DELETE FROM {s}.{table} WHERE projection = $1 AND version = $2").into()
        }),
    }
}
