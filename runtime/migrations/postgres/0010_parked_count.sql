-- Factum projections, version 10: each checkpoint row counts its version's parked events. A
-- batch locks that row before it handles anything; one that waited for another batch's lock
-- reads the row again once the lock is granted, while the subqueries of its statement still
-- read the snapshot of the statement's start, before the other batch parked a stream. So
-- whether anything is parked is read from the locked row, and which streams in a statement of
-- its own (run after the lock, with a snapshot of its own).
ALTER TABLE {schema}.projection_checkpoints ADD COLUMN parked_events bigint NOT NULL DEFAULT 0;

UPDATE {schema}.projection_checkpoints c
SET parked_events = (SELECT count(*) FROM {schema}.projection_dead_letters d
                     WHERE d.projection = c.projection AND d.version = c.version
                       AND d.status = 'parked');
