-- Factum erasure, version 15: what forgetting a data subject erases beside its key
-- (`factum::pii`). A saga instance that handled an event's personal data in plain keeps it in
-- its state, its commands and its timeouts; this table lists such instances by the data key the
-- data was sealed under, so that forgetting the subject erases them (their state becomes JSON
-- `null` and `erased_at` is set; they end).
CREATE TABLE {schema}.saga_data_keys (
    saga        text    NOT NULL,
    saga_id     text    NOT NULL,
    key_id      uuid    NOT NULL,
    PRIMARY KEY (saga, saga_id, key_id)
);
CREATE INDEX saga_data_keys_key ON {schema}.saga_data_keys (key_id);

ALTER TABLE {schema}.sagas ADD COLUMN erased_at timestamptz;
