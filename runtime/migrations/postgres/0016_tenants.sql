-- Factum tenants, version 16: conjoined tenancy enforced by the database. Each event and
-- snapshot belongs to a tenant ('' for none: a store used without tenants keeps working as it
-- did). A session sees and writes the rows of the tenant named by its setting `factum.tenant`
-- (none when it is unset), or every tenant's rows when `factum.all_tenants` is 'on'.
-- `PostgresStore::for_tenant` and `::across_tenants` connect with these settings; a session of
-- the application role without them sees no tenant's rows, whatever SQL it runs. Row-level
-- security is forced, so it binds the tables' owner too.
--
-- Stream ids stay unique across tenants: a stream belongs to the tenant of its first event.
--
-- The policies read the settings in sub-selects, which PostgreSQL evaluates once per statement
-- rather than once per row.

ALTER TABLE {schema}.events
    ADD COLUMN tenant text NOT NULL DEFAULT coalesce(current_setting('factum.tenant', true), '');
ALTER TABLE {schema}.snapshots
    ADD COLUMN tenant text NOT NULL DEFAULT coalesce(current_setting('factum.tenant', true), '');

ALTER TABLE {schema}.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {schema}.events
    USING (tenant = (SELECT coalesce(current_setting('factum.tenant', true), ''))
           OR (SELECT current_setting('factum.all_tenants', true) = 'on'))
    WITH CHECK (tenant = (SELECT coalesce(current_setting('factum.tenant', true), '')));

ALTER TABLE {schema}.snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {schema}.snapshots
    USING (tenant = (SELECT coalesce(current_setting('factum.tenant', true), ''))
           OR (SELECT current_setting('factum.all_tenants', true) = 'on'))
    WITH CHECK (tenant = (SELECT coalesce(current_setting('factum.tenant', true), '')));
