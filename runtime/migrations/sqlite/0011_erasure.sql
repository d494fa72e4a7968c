-- Factum erasure on SQLite, version 11: see PostgreSQL's migration 0015.
CREATE TABLE saga_data_keys (
    saga        TEXT    NOT NULL,
    saga_id     TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    PRIMARY KEY (saga, saga_id, key_id)
);
CREATE INDEX saga_data_keys_key ON saga_data_keys (key_id);

ALTER TABLE sagas ADD COLUMN erased_at TEXT;
