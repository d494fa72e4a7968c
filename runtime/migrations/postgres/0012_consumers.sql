-- Factum consumers, version 12: what a service's consumer (`factum::consumer`) applied of the
-- events a relay published, committed in the same transaction as its read model's writes.
--
-- The newest stream version applied of each stream: an event at or below it was applied
-- before (the broker delivered it again) and is skipped.
CREATE TABLE {schema}.consumer_streams (
    consumer        text   NOT NULL,
    stream_id       text   NOT NULL,
    stream_version  bigint NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);

-- Where each consumer stands in its source (JetStream: the stream sequence), to resume after.
CREATE TABLE {schema}.consumer_positions (
    consumer    text        PRIMARY KEY,
    position    bigint,
    -- Events applied, counted as batches commit.
    applied     bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
