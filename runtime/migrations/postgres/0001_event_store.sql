-- Factum event store, version 1.
-- `{schema}` is replaced by the store's schema (a validated identifier) when migrating.

-- The log. One row per event; (stream_id, stream_version) is the primary key, so the database
-- itself guarantees one event per stream version.
CREATE TABLE {schema}.events (
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    -- Global position: unique, increasing in allocation order (not commit order).
    position        bigint      GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction. Readers of the global feed only read rows whose transaction is
    -- below the oldest one still running, and order by (tx, position): a transaction that
    -- commits late is never skipped (see the store's documentation).
    tx              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    aggregate_type  text        NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    -- `json`, not `jsonb`: events are stored byte for byte as written and read back whole, so
    -- the binary form would only cost conversions (both ways).
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid        NOT NULL,
    actor           text,
    recorded_at     timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

CREATE INDEX events_feed_idx ON {schema}.events (tx, position);

-- Append-only: the database refuses to change or remove stored events.
CREATE FUNCTION {schema}.events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'factum: stored events are append-only; % on %.events is refused', TG_OP, TG_TABLE_SCHEMA
        USING ERRCODE = 'FA001',
              HINT = 'record a compensating event instead';
END
$$;

CREATE TRIGGER events_append_only_rows
    BEFORE UPDATE OR DELETE ON {schema}.events
    FOR EACH ROW EXECUTE FUNCTION {schema}.events_are_append_only();

CREATE TRIGGER events_append_only_truncate
    BEFORE TRUNCATE ON {schema}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.events_are_append_only();

-- The latest snapshot of each stream.
CREATE TABLE {schema}.snapshots (
    stream_id       text        PRIMARY KEY,
    aggregate_type  text        NOT NULL,
    stream_version  bigint      NOT NULL,
    state_version   integer     NOT NULL,
    state           json        NOT NULL,
    taken_at        timestamptz NOT NULL
);
