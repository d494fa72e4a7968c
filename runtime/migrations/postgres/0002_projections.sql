-- Factum projections, version 1: checkpoints committed with each batch of a projection's writes.

CREATE TABLE {schema}.projection_checkpoints (
    projection  text        NOT NULL,
    version     integer     NOT NULL,
    tx          bigint      NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version)
);
