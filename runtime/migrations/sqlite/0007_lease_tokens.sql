-- Factum projections on SQLite, version 7: the lease token of the runner holding a projection
-- version's lease (see PostgreSQL's migration 0007).
ALTER TABLE projection_checkpoints ADD COLUMN lease_token TEXT;
