-- Factum sagas, version 6: instances, the command outbox and timeouts.

-- One row per saga instance: its state (JSON of the saga type), written in the transaction that
-- handled the event, timeout or rejection, together with the outbox and the timeouts.
CREATE TABLE {schema}.sagas (
    saga            text        NOT NULL,
    saga_id         text        NOT NULL,
    state           json        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('active', 'completed')),
    correlation_id  uuid        NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (saga, saga_id)
);

-- Commands sent by saga handlers, delivered in order after the commit. The command id is
-- derived from what caused it, so a redelivered cause writes the same row, and the aggregate
-- recognises a delivery it has already applied.
CREATE TABLE {schema}.saga_outbox (
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    command_id      uuid        NOT NULL PRIMARY KEY,
    saga            text        NOT NULL,
    saga_id         text        NOT NULL,
    command_type    text        NOT NULL,
    stream_id       text        NOT NULL,
    payload         json        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'dispatched', 'rejected', 'failed')),
    error           text,
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    dispatched_at   timestamptz
);

CREATE INDEX saga_outbox_pending ON {schema}.saga_outbox (saga, seq) WHERE status = 'pending';

-- Deadlines scheduled by saga handlers; fired by the runner when its clock passes them (also
-- after a restart), cancelled when the saga moves on or completes.
CREATE TABLE {schema}.saga_timeouts (
    timeout_id      uuid        NOT NULL PRIMARY KEY,
    saga            text        NOT NULL,
    saga_id         text        NOT NULL,
    timeout_type    text        NOT NULL,
    payload         json        NOT NULL,
    due_at          timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'fired', 'cancelled', 'failed')),
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    fired_at        timestamptz
);

CREATE INDEX saga_timeouts_due ON {schema}.saga_timeouts (saga, due_at) WHERE status = 'pending';
CREATE INDEX saga_timeouts_instance ON {schema}.saga_timeouts (saga, saga_id) WHERE status = 'pending';
