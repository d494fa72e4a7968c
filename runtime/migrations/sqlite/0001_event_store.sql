-- Factum event store on SQLite, version 1.

-- The log. One row per event; (stream_id, stream_version) is unique, so the database itself
-- guarantees one event per stream version. SQLite runs one writing transaction at a time, so
-- positions are given in commit order: the feed is read by position alone.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    aggregate_type  TEXT    NOT NULL,
    event_id        TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT    NOT NULL,
    actor           TEXT,
    recorded_at     TEXT    NOT NULL,
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_type_idx ON events (event_type, position);

-- Append-only: the database refuses to change or remove stored events.
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'factum: stored events are append-only; UPDATE of events is refused (record a compensating event instead)');
END;

CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'factum: stored events are append-only; DELETE of events is refused (record a compensating event instead)');
END;

-- The latest snapshot of each stream.
CREATE TABLE snapshots (
    stream_id       TEXT    PRIMARY KEY,
    aggregate_type  TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    state_version   INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    taken_at        TEXT    NOT NULL
);
