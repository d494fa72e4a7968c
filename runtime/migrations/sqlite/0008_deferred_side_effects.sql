-- Factum projections on SQLite, version 8: side effects run after the batch commits (see
-- PostgreSQL's migration 0008). SQLite cannot change a CHECK constraint: the table is rebuilt.
CREATE TABLE projection_side_effects_v8 (
    projection      TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT    NOT NULL
                    CHECK (status IN ('run', 'skipped', 'pending', 'done', 'failed')),
    decided_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    done_at         TEXT,
    PRIMARY KEY (projection, event_id)
);
INSERT INTO projection_side_effects_v8 (projection, event_id, version, status, decided_at)
    SELECT projection, event_id, version, status, decided_at FROM projection_side_effects;
DROP TABLE projection_side_effects;
ALTER TABLE projection_side_effects_v8 RENAME TO projection_side_effects;
CREATE INDEX projection_side_effects_pending
    ON projection_side_effects (projection) WHERE status = 'pending';
