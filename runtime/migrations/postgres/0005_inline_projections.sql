-- Factum projections, version 5: inline projections.

-- How far each stream has been applied, in append transactions, by each inline projection: every
-- event of the stream up to `applied_version` that the projection handles has been applied. The
-- projection's runner skips those (it applies the rest, in feed order), and an inline
-- application first applies the stream's events that neither has applied yet, so each event is
-- applied once and each stream in order, whichever path gets there first.
CREATE TABLE {schema}.projection_inline_streams (
    projection      text        NOT NULL,
    version         integer     NOT NULL,
    stream_id       text        NOT NULL,
    applied_version bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version, stream_id)
);
