-- Factum sagas on SQLite, version 3: instances, the command outbox and timeouts.

CREATE TABLE sagas (
    saga            TEXT    NOT NULL,
    saga_id         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('active', 'completed')),
    correlation_id  TEXT    NOT NULL,
    started_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at    TEXT,
    PRIMARY KEY (saga, saga_id)
);

-- Commands sent by saga handlers, delivered in order after the commit; the command id derives
-- from its cause, so a redelivered cause writes the same row.
CREATE TABLE saga_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id      TEXT    NOT NULL UNIQUE,
    saga            TEXT    NOT NULL,
    saga_id         TEXT    NOT NULL,
    command_type    TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'dispatched', 'rejected', 'failed')),
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    dispatched_at   TEXT
);

CREATE INDEX saga_outbox_pending ON saga_outbox (saga, seq) WHERE status = 'pending';

CREATE TABLE saga_timeouts (
    timeout_id      TEXT    NOT NULL PRIMARY KEY,
    saga            TEXT    NOT NULL,
    saga_id         TEXT    NOT NULL,
    timeout_type    TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    due_at          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'fired', 'cancelled', 'failed')),
    error           TEXT,
    created_at      TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    fired_at        TEXT
);

CREATE INDEX saga_timeouts_due ON saga_timeouts (saga, due_at) WHERE status = 'pending';
CREATE INDEX saga_timeouts_instance ON saga_timeouts (saga, saga_id) WHERE status = 'pending';
