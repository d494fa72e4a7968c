-- Factum tenants, version 19: a service's consumer tables (migration 0012) are kept per tenant
-- like the runners' bookkeeping (migration 0017): a consumer of one name fed into two tenants'
-- stores keeps two sets of applied stream versions and two positions, each visible to its own
-- tenant only.
DO $migration$
DECLARE
    bookkeeping text[][] := ARRAY[
        ['consumer_streams', 'consumer, stream_id'],
        ['consumer_positions', 'consumer']
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
