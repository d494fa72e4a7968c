-- Factum projections, version 3: the sequence dead-letter queue. When a handler keeps failing on
-- an event, that event's stream is parked: the event and every later event of the stream that
-- the projection handles are kept here, in order, while other streams flow on. Retrying handles
-- them in order and removes them; skipping keeps the row, marked, for the audit trail.

CREATE TABLE {schema}.projection_dead_letters (
    projection      text        NOT NULL,
    version         integer     NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    tx              bigint      NOT NULL,
    position        bigint      NOT NULL,
    status          text        NOT NULL DEFAULT 'parked' CHECK (status IN ('parked', 'skipped')),
    error           text,
    attempts        integer     NOT NULL DEFAULT 0,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version, stream_id, stream_version)
);
