-- Factum relays, version 11: where each relay (`factum::relay`) stands in the global feed, and
-- the events a broker refused for good.
--
-- A relay publishes the feed to a message broker and moves its checkpoint only after the broker
-- acknowledged every event up to it. The relay holding the lease writes its token into its row;
-- a checkpoint is saved only under that token, so a relay whose lease was taken over moves
-- nothing.
CREATE TABLE {schema}.relay_checkpoints (
    relay        text        PRIMARY KEY,
    tx           bigint      NOT NULL DEFAULT 0,
    position     bigint      NOT NULL DEFAULT 0,
    -- Events the broker acknowledged, counted as checkpoints are saved.
    published    bigint      NOT NULL DEFAULT 0,
    lease_token  text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- An event the broker refused for good (larger than it accepts, say), and the events of the
-- same stream after it, which wait behind it so that the stream's order holds on the broker.
-- Other streams flow on.
CREATE TABLE {schema}.relay_dead_letters (
    relay           text        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    tx              bigint      NOT NULL,
    position        bigint      NOT NULL,
    -- The broker's refusal; NULL for an event parked behind its stream's refused one.
    error           text,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (relay, stream_id, stream_version)
);
