-- Factum tenants, version 17: the runners' bookkeeping is kept per tenant, under forced
-- row-level security like the events (migration 0016). A projection, saga or relay of one name
-- run by two tenants' stores keeps two checkpoints, two sets of dead letters and instances,
-- each visible to its own tenant only. The scope of a session is its tenant ('' for none), or
-- '*' for a store across tenants, whose runners keep their own bookkeeping apart from every
-- tenant's.
CREATE FUNCTION {schema}.bookkeeping_scope() RETURNS text
    LANGUAGE sql STABLE
    AS $$
        SELECT CASE WHEN current_setting('factum.all_tenants', true) = 'on' THEN '*'
                    ELSE coalesce(current_setting('factum.tenant', true), '') END
    $$;

DO $migration$
DECLARE
    bookkeeping text[][] := ARRAY[
        ['projection_checkpoints', 'projection, version'],
        ['projection_dead_letters', 'projection, version, stream_id, stream_version'],
        ['projection_versions', 'projection, version'],
        ['projection_side_effects', 'projection, event_id'],
        ['projection_inline_streams', 'projection, version, stream_id'],
        ['sagas', 'saga, saga_id'],
        ['saga_outbox', 'command_id'],
        ['saga_timeouts', 'timeout_id'],
        ['saga_data_keys', 'saga, saga_id, key_id'],
        ['relay_checkpoints', 'relay'],
        ['relay_dead_letters', 'relay, stream_id, stream_version']
    ];
    entry text[];
BEGIN
    FOREACH entry SLICE 1 IN ARRAY bookkeeping LOOP
        EXECUTE format(
            'ALTER TABLE {schema}.%1$I
                 ADD COLUMN tenant text NOT NULL DEFAULT {schema}.bookkeeping_scope(),
                 DROP CONSTRAINT %2$I,
                 ADD PRIMARY KEY (tenant, %3$s);
             ALTER TABLE {schema}.%1$I ENABLE ROW LEVEL SECURITY;
             ALTER TABLE {schema}.%1$I FORCE ROW LEVEL SECURITY;
             CREATE POLICY tenant_rows ON {schema}.%1$I
                 USING (tenant = (SELECT {schema}.bookkeeping_scope()))
                 WITH CHECK (tenant = (SELECT {schema}.bookkeeping_scope()));',
            entry[1], entry[1] || '_pkey', entry[2]);
    END LOOP;
END
$migration$;

DROP INDEX {schema}.projection_versions_one_active;
CREATE UNIQUE INDEX projection_versions_one_active
    ON {schema}.projection_versions (tenant, projection) WHERE state = 'active';
