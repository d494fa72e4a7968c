-- Factum data keys on SQLite, version 10: see PostgreSQL's migration 0014.
CREATE TABLE data_keys (
    key_id      TEXT    PRIMARY KEY,
    subject     TEXT    NOT NULL UNIQUE,
    wrapped_key BLOB    NOT NULL,
    created_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
