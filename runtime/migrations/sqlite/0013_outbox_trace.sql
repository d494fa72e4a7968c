-- Factum trace context on SQLite, version 13: see PostgreSQL's migration 0020.
ALTER TABLE saga_outbox ADD COLUMN traceparent TEXT;
