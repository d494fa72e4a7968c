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
    -- commits late is never skipped (see `read_feed`).
    tx              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    aggregate_type  text        NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
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

-- One append, atomically, in one round trip.
--
-- Outcomes: 0 appended (one row per event), 1 conflict (out_stream_version = the stream's
-- version), 2 aggregate type mismatch (out_detail = the stream's type), 3 some event ids are
-- stored already (one row per stored id: out_event_id, out_detail = its stream,
-- out_stream_version = its version; the caller decides between idempotent retry and duplicate).
--
-- p_expected: -1 any, -2 no stream, -3 stream exists, n >= 0 exactly n.
CREATE FUNCTION {schema}.append_events(
    p_stream_id       text,
    p_aggregate_type  text,
    p_expected        bigint,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_metadata        jsonb[],
    p_correlation_ids uuid[],
    p_causation_ids   uuid[],
    p_actors          text[]
) RETURNS TABLE (
    out_outcome        integer,
    out_stream_version bigint,
    out_position       bigint,
    out_tx             bigint,
    out_recorded_at    timestamptz,
    out_event_id       uuid,
    out_detail         text
)
LANGUAGE plpgsql AS $$
DECLARE
    v_current bigint;
    v_type    text;
    v_now     timestamptz;
BEGIN
    -- Serialise the appends of one stream before anything is written: the transaction id is
    -- assigned at the first write, after this lock, so it follows the stream's version order and
    -- the feed's (tx, position) order never puts version n + 1 before version n. An advisory lock
    -- assigns no transaction id itself; other streams are not blocked (hash collisions aside).
    PERFORM pg_advisory_xact_lock(hashtext('factum.{schema}'), hashtext(p_stream_id));

    -- Each statement below sees every append committed before the lock was granted.
    RETURN QUERY
        SELECT 3, e.stream_version, NULL::bigint, NULL::bigint, NULL::timestamptz, e.event_id, e.stream_id
        FROM {schema}.events e
        WHERE e.event_id = ANY (p_event_ids);
    IF FOUND THEN
        RETURN;
    END IF;

    SELECT e.stream_version, e.aggregate_type INTO v_current, v_type
    FROM {schema}.events e
    WHERE e.stream_id = p_stream_id
    ORDER BY e.stream_version DESC
    LIMIT 1;
    v_current := coalesce(v_current, 0);

    IF NOT (p_expected = -1
            OR (p_expected = -2 AND v_current = 0)
            OR (p_expected = -3 AND v_current > 0)
            OR p_expected = v_current) THEN
        RETURN QUERY SELECT 1, v_current, NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    IF v_type IS NOT NULL AND v_type <> p_aggregate_type THEN
        RETURN QUERY SELECT 2, v_current, NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::uuid, v_type;
        RETURN;
    END IF;

    -- Taken after the lock, so recorded_at grows with the stream version.
    v_now := clock_timestamp();
    RETURN QUERY
        WITH appended AS (
            INSERT INTO {schema}.events AS e (
                stream_id, stream_version, aggregate_type, event_id, event_type, schema_version,
                payload, metadata, correlation_id, causation_id, actor, recorded_at)
            SELECT p_stream_id, v_current + u.ord, p_aggregate_type, u.event_id, u.event_type,
                   u.schema_version, u.payload, u.metadata, u.correlation_id, u.causation_id,
                   u.actor, v_now
            FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads, p_metadata,
                        p_correlation_ids, p_causation_ids, p_actors)
                 WITH ORDINALITY AS u(event_id, event_type, schema_version, payload, metadata,
                                      correlation_id, causation_id, actor, ord)
            ORDER BY u.ord
            RETURNING e.stream_version, e.position, e.tx, e.recorded_at, e.event_id
        )
        SELECT 0, a.stream_version, a.position, a.tx::text::bigint, a.recorded_at, a.event_id, NULL::text
        FROM appended a
        ORDER BY a.stream_version;
END
$$;

-- The latest snapshot of each stream.
CREATE TABLE {schema}.snapshots (
    stream_id       text        PRIMARY KEY,
    aggregate_type  text        NOT NULL,
    stream_version  bigint      NOT NULL,
    state_version   integer     NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL
);
