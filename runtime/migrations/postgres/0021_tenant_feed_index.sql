-- Factum tenants, version 21: a tenant's feed reads walk its own rows. The feed index
-- (tx, position) holds every tenant's events, so a tenant's runner reading the feed passes over
-- every other tenant's rows in between its own (row-level security filtering them one by one).
-- A tenant's store names its tenant in its feed reads, and this index serves them in feed
-- order. It holds tenants' rows only: a store without tenants (tenant '') pays nothing for it;
-- a tenant's append pays one more index entry per event (see the README's figures).
--
-- On a large existing table with tenants this builds the index while holding off appends; to
-- avoid that, create it beforehand with CREATE INDEX CONCURRENTLY under this name and with this
-- definition, and this migration keeps it.

CREATE INDEX IF NOT EXISTS events_tenant_feed_idx ON {schema}.events (tenant, tx, position)
    WHERE tenant <> '';
