-- Factum tenants, version 18: data keys are each tenant's. Two tenants' data subjects of one id
-- are two people: each has a key of its own, and forgetting one through its tenant's store
-- leaves the other's. A store across tenants reads every tenant's keys (to open every tenant's
-- events); writing one needs a tenant, as appending does.
ALTER TABLE {schema}.data_keys
    ADD COLUMN tenant text NOT NULL DEFAULT coalesce(current_setting('factum.tenant', true), ''),
    DROP CONSTRAINT data_keys_subject_key,
    ADD CONSTRAINT data_keys_subject_key UNIQUE (tenant, subject);

ALTER TABLE {schema}.data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {schema}.data_keys
    USING (tenant = (SELECT coalesce(current_setting('factum.tenant', true), ''))
           OR (SELECT current_setting('factum.all_tenants', true) = 'on'))
    WITH CHECK (tenant = (SELECT coalesce(current_setting('factum.tenant', true), '')));
