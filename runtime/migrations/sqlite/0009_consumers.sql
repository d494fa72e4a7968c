-- Factum consumers on SQLite, version 9: see PostgreSQL's migration 0012.
CREATE TABLE consumer_streams (
    consumer        TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);

CREATE TABLE consumer_positions (
    consumer    TEXT    PRIMARY KEY,
    position    INTEGER,
    applied     INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
