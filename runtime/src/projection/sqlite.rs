//! The projection runner's SQL on SQLite (the contract is in `sql.rs`). The runner's write
//! transactions are `BEGIN IMMEDIATE`: SQLite's one writer stands in for the row locks and
//! advisory locks PostgreSQL takes, so the "locking" reads are plain reads inside them.
//! Positions are in commit order: the checkpoint's `tx` is its position.

use super::sql::ProjectionSql;

/// Now, as RFC 3339 text in UTC with milliseconds (ordered as text).
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The parked dead letters of the projection version.
const PARKED: &str = "projection_dead_letters d
     WHERE d.projection = $1 AND d.version = $2 AND d.status = 'parked'";

pub(super) fn statements() -> ProjectionSql {
    ProjectionSql {
        ensure_checkpoint: "INSERT INTO projection_checkpoints (projection, version, position)
             VALUES ($1, $2, 0) ON CONFLICT DO NOTHING"
            .into(),
        lock_checkpoint: format!(
            "SELECT c.position, c.position, EXISTS (SELECT 1 FROM {PARKED}), c.lease_token
             FROM projection_checkpoints c WHERE c.projection = $1 AND c.version = $2"
        )
        .into(),
        advance_checkpoint: None,
        parked_among: format!(
            "SELECT json_group_array(DISTINCT d.stream_id) FROM {PARKED}
               AND d.stream_id IN (SELECT value FROM json_each($3))"
        )
        .into(),
        claim_lease: "UPDATE projection_checkpoints SET lease_token = $3
             WHERE projection = $1 AND version = $2"
            .into(),
        save_checkpoint: format!(
            "UPDATE projection_checkpoints SET position = $4, updated_at = {NOW}
             WHERE projection = $1 AND version = $2"
        )
        .into(),
        read_checkpoint: "SELECT position, position FROM projection_checkpoints
             WHERE projection = $1 AND version = $2"
            .into(),
        status: format!(
            "SELECT (SELECT coalesce(max(position), 0) FROM events),
                    (SELECT coalesce(max(position), 0) FROM events),
                    count(*), min(e.recorded_at),
                    (SELECT count(DISTINCT d.stream_id) FROM {PARKED}),
                    (SELECT count(*) FROM {PARKED})
             FROM events e
             WHERE e.position > $4 AND e.event_type IN (SELECT value FROM json_each($5))
               AND ($6 IS NULL OR e.tenant = $6)"
        )
        .into(),
        park: format!(
            "INSERT INTO projection_dead_letters
                 (projection, version, stream_id, stream_version, event_id, event_type, position,
                  error, attempts, parked_at)
             SELECT $1, $2, l.value ->> 'stream_id',
                    coalesce(l.value ->> 'stream_version', e.stream_version),
                    coalesce(l.value ->> 'event_id', e.event_id), l.value ->> 'event_type',
                    l.value ->> 'position', l.value ->> 'error', l.value ->> 'attempts', {NOW}
             FROM json_each($3) AS l
             -- A letter of an event read lean takes its id and version from the stored event.
             LEFT JOIN events e
                    ON l.value ->> 'stream_version' IS NULL
                       AND e.position = l.value ->> 'position'
             WHERE true
             ON CONFLICT DO NOTHING"
        )
        .into(),
        list_parked: format!(
            "SELECT d.stream_id, d.stream_version,
                    (SELECT count(*) FROM projection_dead_letters c
                     WHERE c.projection = d.projection AND c.version = d.version
                       AND c.stream_id = d.stream_id AND c.status = 'parked'),
                    d.error, d.attempts, d.parked_at
             FROM {PARKED}
               AND d.stream_version = (
                   SELECT min(f.stream_version) FROM projection_dead_letters f
                   WHERE f.projection = d.projection AND f.version = d.version
                     AND f.stream_id = d.stream_id AND f.status = 'parked')
             ORDER BY d.parked_at, d.stream_id"
        )
        .into(),
        first_parked: format!(
            "SELECT d.stream_version FROM {PARKED} AND d.stream_id = $3
             ORDER BY d.stream_version LIMIT 1"
        )
        .into(),
        unpark: "DELETE FROM projection_dead_letters
             WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4"
            .into(),
        record_failure: format!(
            "UPDATE projection_dead_letters
             SET error = $5, attempts = attempts + 1, updated_at = {NOW}
             WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4"
        )
        .into(),
        skip: format!(
            "UPDATE projection_dead_letters SET status = 'skipped', updated_at = {NOW}
             WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4"
        )
        .into(),
        claim_side_effects: format!(
            "INSERT INTO projection_side_effects AS c (projection, event_id, version, status)
             SELECT $1, ids.value, $2, 'pending' FROM json_each($3) AS ids WHERE true
             ON CONFLICT (projection, event_id) DO UPDATE
                 SET version = excluded.version, status = 'pending', decided_at = {NOW}
                 WHERE c.status = 'skipped' AND c.version <> excluded.version
             RETURNING event_id"
        )
        .into(),
        skip_side_effects:
            "INSERT INTO projection_side_effects (projection, event_id, version, status)
             SELECT $1, ids.value, $2, 'skipped' FROM json_each($3) AS ids WHERE true
             ON CONFLICT (projection, event_id) DO NOTHING"
                .into(),
        pending_effects: "SELECT c.event_id FROM projection_side_effects c
             WHERE c.projection = $1 AND c.status = 'pending' AND c.version = $2"
            .into(),
        retired_effects: "SELECT DISTINCT c.version FROM projection_side_effects c
             JOIN projection_versions v ON v.projection = c.projection AND v.version = c.version
             WHERE c.projection = $1 AND c.status = 'pending' AND c.version <> $2
               AND v.state = 'retired'"
            .into(),
        adopt_effects: "UPDATE projection_side_effects SET version = $2
             WHERE projection = $1 AND status = 'pending' AND version = $3"
            .into(),
        effect_done: format!(
            "UPDATE projection_side_effects
             SET status = CASE WHEN $4 = 1 THEN 'failed' ELSE 'done' END, done_at = {NOW},
                 error = $5
             WHERE projection = $1 AND event_id = $3 AND version = $2"
        )
        .into(),
        effect_failed: "UPDATE projection_side_effects SET attempts = attempts + 1, error = $4
             WHERE projection = $1 AND event_id = $3 AND version = $2"
            .into(),
        inline_marks: "SELECT stream_id, applied_version FROM projection_inline_streams
             WHERE projection = $1 AND version = $2
               AND stream_id IN (SELECT value FROM json_each($3))"
            .into(),
        inline_standing: format!(
            "SELECT c.position, c.position,
                    (SELECT i.applied_version FROM projection_inline_streams i
                     WHERE i.projection = $1 AND i.version = $2 AND i.stream_id = $3),
                    EXISTS (SELECT 1 FROM {PARKED})
             FROM projection_checkpoints c WHERE c.projection = $1 AND c.version = $2"
        )
        .into(),
        inline_mark: format!(
            "INSERT INTO projection_inline_streams AS i
                 (projection, version, stream_id, applied_version)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (projection, version, stream_id) DO UPDATE
                 SET applied_version = excluded.applied_version, updated_at = {NOW}
                 WHERE i.applied_version < excluded.applied_version"
        )
        .into(),
        // The write transaction already serializes every change.
        lock_versions: "SELECT 1".into(),
        versions: "SELECT version, state FROM projection_versions WHERE projection = $1".into(),
        register_version: format!(
            "INSERT INTO projection_versions (projection, version, state, registered_at,
                                              activated_at)
             VALUES ($1, $2, $3, {NOW}, CASE WHEN $4 = 1 THEN {NOW} END)"
        )
        .into(),
        version_state:
            "SELECT state FROM projection_versions WHERE projection = $1 AND version = $2".into(),
        retire_active: format!(
            "UPDATE projection_versions SET state = 'retired', retired_at = {NOW}
             WHERE projection = $1 AND state = 'active'
               AND EXISTS (SELECT 1 FROM projection_versions
                           WHERE projection = $1 AND version = $2 AND state = 'building')"
        )
        .into(),
        activate: format!(
            "UPDATE projection_versions SET state = 'active', activated_at = {NOW}
             WHERE projection = $1 AND version = $2 AND state = 'building'"
        )
        .into(),
        active_version: "SELECT version FROM projection_versions
             WHERE projection = $1 AND state = 'active'"
            .into(),
        clear: [
            "projection_checkpoints",
            "projection_dead_letters",
            "projection_inline_streams",
        ]
        .map(|table| format!("DELETE FROM {table} WHERE projection = $1 AND version = $2").into()),
    }
}
