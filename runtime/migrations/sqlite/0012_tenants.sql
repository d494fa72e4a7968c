-- Factum tenants on SQLite, version 12: see PostgreSQL's migrations 0016 to 0018. SQLite has
-- no row-level security: a tenant's store (`SqliteStore::for_tenant`) scopes its own
-- statements by this column. `''` is no tenant's.
ALTER TABLE events ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE snapshots ADD COLUMN tenant TEXT NOT NULL DEFAULT '';

-- A data subject is a tenant's: two tenants' subjects of one id are two people.
CREATE TABLE data_keys_by_tenant (
    key_id      TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL DEFAULT '',
    subject     TEXT    NOT NULL,
    wrapped_key BLOB    NOT NULL,
    created_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (tenant, subject)
);
INSERT INTO data_keys_by_tenant (key_id, subject, wrapped_key, created_at)
    SELECT key_id, subject, wrapped_key, created_at FROM data_keys;
DROP TABLE data_keys;
ALTER TABLE data_keys_by_tenant RENAME TO data_keys;
