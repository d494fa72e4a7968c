-- Factum projections, version 8: side effects run after the batch commits. A batch records
-- the decision to perform an event's side effect ('pending') with its checkpoint; the runner
-- performs it after the commit, outside any transaction, and marks it 'done' (or counts the
-- failed attempts, with the last error, while it retries). 'run' is a side effect performed in
-- its batch's transaction before this version; 'failed', one whose event no longer decodes.
ALTER TABLE {schema}.projection_side_effects
    DROP CONSTRAINT IF EXISTS projection_side_effects_status_check;
ALTER TABLE {schema}.projection_side_effects
    ADD CONSTRAINT projection_side_effects_status_check
        CHECK (status IN ('run', 'skipped', 'pending', 'done', 'failed')),
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN error text,
    ADD COLUMN done_at timestamptz;
CREATE INDEX projection_side_effects_pending
    ON {schema}.projection_side_effects (projection) WHERE status = 'pending';
