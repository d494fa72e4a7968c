-- Factum archives, version 22: old events moved to a cold tier of Parquet files
-- (`factum::archive`). Each file is recorded in `archives`; each stream's archived versions in
-- `archived_ranges`, in the transaction that removes the rows from the event table. Readers
-- (loads, stream and feed reads) find archived events through these two tables.
CREATE TABLE {schema}.archives (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The Parquet file, as the archiving process named it (a path every reader can open).
    file            text        NOT NULL UNIQUE,
    events          bigint      NOT NULL CHECK (events > 0),
    bytes           bigint      NOT NULL,
    -- The first and last of its events in feed order: a feed read from a position at or
    -- after `last` has nothing to read in it.
    first_tx        xid8        NOT NULL,
    first_position  bigint      NOT NULL,
    last_tx         xid8        NOT NULL,
    last_position   bigint      NOT NULL,
    before          timestamptz NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX archives_last_idx ON {schema}.archives (last_tx, last_position);

CREATE TABLE {schema}.archived_ranges (
    stream_id       text        NOT NULL,
    from_version    bigint      NOT NULL,
    through_version bigint      NOT NULL CHECK (through_version >= from_version),
    archive_id      bigint      NOT NULL REFERENCES {schema}.archives (id),
    -- The stream's tenant ('' for none), under the events' policy.
    tenant          text        NOT NULL,
    PRIMARY KEY (stream_id, from_version)
);
CREATE INDEX archived_ranges_archive_idx ON {schema}.archived_ranges (archive_id);

ALTER TABLE {schema}.archived_ranges ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.archived_ranges FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {schema}.archived_ranges
    USING (tenant = (SELECT coalesce(current_setting('factum.tenant', true), ''))
           OR (SELECT current_setting('factum.all_tenants', true) = 'on'));

-- The log stays append-only, with one exception: the archiving transaction (which names its
-- archive in `factum.archive`) removes the rows its archive's ranges record, after their file
-- was written and read back. Updates and truncation stay refused, for every role.
CREATE OR REPLACE FUNCTION {schema}.events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM {schema}.archived_ranges r
        WHERE r.archive_id = nullif(current_setting('factum.archive', true), '')::bigint
          AND r.stream_id = OLD.stream_id
          AND OLD.stream_version BETWEEN r.from_version AND r.through_version
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'factum: stored events are append-only; % on %.events is refused', TG_OP, TG_TABLE_SCHEMA
        USING ERRCODE = 'FA001',
              HINT = 'record a compensating event instead';
END
$$;
