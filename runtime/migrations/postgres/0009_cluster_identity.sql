-- Factum event store, version 9: the cluster the store lives on, and the offset its feed
-- positions carry.
--
-- Feed positions are transaction ids (`events.tx`), which only grow within one cluster. A dump
-- restored into another cluster (or a logical-replication move) brings the events with the old
-- cluster's ids, and the new cluster hands out smaller ones: new events would sort before the
-- old ones and readers checkpointed at an old id would skip them. So the store records the
-- cluster's `system_identifier`; this row travels with a dump, and then names the old cluster.
-- Every append and feed read goes through `feed_tx_offset()`, which refuses (SQLSTATE FA002)
-- when the store is on another cluster. `PostgresStore::adopt_cluster()` records the new
-- cluster and an offset added to its transaction ids from then on, so that every new event
-- sorts after every old one and every checkpoint.
CREATE TABLE {schema}.cluster_identity (
    singleton          boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    system_identifier  bigint      NOT NULL,
    -- Added to this cluster's transaction ids to make `events.tx`; never decreases.
    tx_offset          bigint      NOT NULL DEFAULT 0 CHECK (tx_offset >= 0),
    recorded_at        timestamptz NOT NULL DEFAULT now()
);

INSERT INTO {schema}.cluster_identity (system_identifier)
SELECT system_identifier FROM pg_control_system();

-- The offset of this cluster's transaction ids, or an error (FA002) when the store's events were
-- written on another cluster: its recorded identity is another cluster's, or it holds an event
-- newer than any transaction of this cluster (a copy that left the identity row behind).
-- `SECURITY DEFINER`: a role that may read and append events needs no grant on the identity.
-- Once it has answered in a session, the answer is kept in the session's setting
-- `factum.tx_offset_<schema>`, which statements read first: a session stays on its cluster, and
-- the checks (a read of the control file, of the identity, of the newest event) then cost
-- nothing per append.
CREATE FUNCTION {schema}.feed_tx_offset() RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    recorded bigint;
    tx_offset bigint;
    current_cluster bigint;
    newest bigint;
BEGIN
    SELECT i.system_identifier, i.tx_offset INTO recorded, tx_offset FROM {schema}.cluster_identity i;
    SELECT c.system_identifier INTO current_cluster FROM pg_control_system() c;
    IF recorded IS DISTINCT FROM current_cluster THEN
        RAISE EXCEPTION 'factum: the event store {schema} was recorded on another PostgreSQL cluster'
            USING ERRCODE = 'FA002',
                  DETAIL = format('recorded %s current %s', recorded, current_cluster),
                  HINT = 'run `factum adopt-cluster` (PostgresStore::adopt_cluster) once';
    END IF;
    -- Every stored event of this cluster was written by a transaction below the next id.
    SELECT max(e.tx)::text::bigint INTO newest FROM {schema}.events e;
    IF newest >= pg_snapshot_xmax(pg_current_snapshot())::text::bigint + tx_offset
       AND newest IS DISTINCT FROM pg_current_xact_id_if_assigned()::text::bigint + tx_offset THEN
        RAISE EXCEPTION 'factum: the event store {schema} holds events written on another PostgreSQL cluster'
            USING ERRCODE = 'FA002',
                  DETAIL = format('recorded %s current %s', recorded, current_cluster),
                  HINT = 'run `factum adopt-cluster` (PostgresStore::adopt_cluster) once';
    END IF;
    PERFORM set_config('factum.tx_offset_{schema_name}', tx_offset::text, false);
    RETURN tx_offset;
END
$$;

-- Appends name their transaction explicitly; the default serves anyone inserting otherwise.
ALTER TABLE {schema}.events
    ALTER COLUMN tx SET DEFAULT ((pg_current_xact_id()::text::bigint
        + coalesce(nullif(current_setting('factum.tx_offset_{schema_name}', true), '')::bigint,
                   {schema}.feed_tx_offset()))::text::xid8);
