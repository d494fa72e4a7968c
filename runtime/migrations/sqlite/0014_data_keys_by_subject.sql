-- Factum data keys on SQLite, version 14: finding a data subject's key by its subject (see
-- PostgreSQL's migration 0023). The unique key `(tenant, subject)` of migration 0012 serves no
-- lookup by subject alone: each read the whole table.
CREATE INDEX data_keys_subject_idx ON data_keys (subject);
