-- Factum projections, version 4: blue/green rebuilds and side-effect records.

-- The versions of each projection: one is active (serving reads); a newer one is building
-- beside it (from the start, into its own tables, side effects off) until it has caught up and
-- switches over, retiring the old one.
CREATE TABLE {schema}.projection_versions (
    projection      text        NOT NULL,
    version         integer     NOT NULL,
    state           text        NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    registered_at   timestamptz NOT NULL DEFAULT now(),
    activated_at    timestamptz,
    retired_at      timestamptz,
    PRIMARY KEY (projection, version)
);

CREATE UNIQUE INDEX projection_versions_one_active
    ON {schema}.projection_versions (projection) WHERE state = 'active';

-- Events whose side effects (`#[handle(side_effects)]`) a projection has decided, whatever its
-- version: claimed in the batch's transaction, so a redelivered event, or one that two versions
-- handle around a switch-over, triggers its side effect at most once. A version replaying the
-- history records `skipped`; a live run by another version may still take such an event over
-- (the active version running it while a newer one builds), the skipping version never does.
CREATE TABLE {schema}.projection_side_effects (
    projection      text        NOT NULL,
    event_id        uuid        NOT NULL,
    version         integer     NOT NULL,
    status          text        NOT NULL CHECK (status IN ('run', 'skipped')),
    decided_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, event_id)
);
