-- Factum projections, version 7: the lease is held, not assumed. A runner that takes the lease
-- of a projection version writes a token of its own into the version's checkpoint row (waiting
-- for a batch in flight to commit); every batch locks that row and checks the token, so a
-- runner whose lease was taken over (its lease connection died, say) applies nothing more.
ALTER TABLE {schema}.projection_checkpoints ADD COLUMN lease_token text;
