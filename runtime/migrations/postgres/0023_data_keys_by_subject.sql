-- Factum data keys, version 23: finding a data subject's key by its subject. Migration 0018
-- made the unique key `(tenant, subject)`, which a lookup by subject alone (a store across
-- tenants, or row-level security's `tenant = … OR …`) cannot use: every new subject's first
-- event, every read of a key missing from the cache, and every `forget` read the whole table.
CREATE INDEX data_keys_subject_idx ON {schema}.data_keys (subject);
