-- Factum projections on SQLite, version 6: blue/green rebuilds, side-effect records and inline
-- projections, as on PostgreSQL (see its migrations 0004 and 0005 for what each table is for).

CREATE TABLE projection_versions (
    projection      TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    registered_at   TEXT    NOT NULL,
    activated_at    TEXT,
    retired_at      TEXT,
    PRIMARY KEY (projection, version)
);

CREATE UNIQUE INDEX projection_versions_one_active
    ON projection_versions (projection) WHERE state = 'active';

CREATE TABLE projection_side_effects (
    projection      TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('run', 'skipped')),
    decided_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (projection, event_id)
);

CREATE TABLE projection_inline_streams (
    projection      TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    stream_id       TEXT    NOT NULL,
    applied_version INTEGER NOT NULL,
    updated_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (projection, version, stream_id)
);
