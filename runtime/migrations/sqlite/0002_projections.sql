-- Factum projections on SQLite, version 2: checkpoints committed with each batch of a
-- projection's writes, and the lease that keeps one runner per projection active.

CREATE TABLE projection_checkpoints (
    projection  TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (projection, version)
);

-- Held by one runner at a time, renewed while it runs; another takes it over once it expires
-- (its holder died). Milliseconds since the Unix epoch.
CREATE TABLE projection_leases (
    projection  TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    holder      TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (projection, version)
);
