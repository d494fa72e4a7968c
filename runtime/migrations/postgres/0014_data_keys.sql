-- Factum data keys, version 14: crypto-shredding of personal data (`factum::pii`). Each data
-- subject's key, wrapped by the application's key provider (its key-encryption key never
-- reaches the database). Outside the append-only log: forgetting a subject deletes its row,
-- after which the `#[pii]` fields sealed under it read as their replacements.
CREATE TABLE {schema}.data_keys (
    key_id      uuid        PRIMARY KEY,
    subject     text        NOT NULL UNIQUE,
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
