-- Factum projections on SQLite, version 4: the sequence dead-letter queue. When a handler keeps
-- failing on an event, that event's stream is parked: the event and every later event of the
-- stream that the projection handles are kept here, in order, while other streams flow on.
-- Retrying handles them in order and removes them; skipping keeps the row, marked, for the
-- audit trail.

CREATE TABLE projection_dead_letters (
    projection      TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'parked' CHECK (status IN ('parked', 'skipped')),
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    parked_at       TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (projection, version, stream_id, stream_version)
);
