-- The agent's local state. The outbox holds every run event and log chunk from the moment it
-- happens until the plane has committed it; `key` makes a re-sent entry recognisable, so the
-- plane applies each exactly once however often the link drops.

CREATE TABLE outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT NOT NULL UNIQUE,
    at_ms   INTEGER NOT NULL,
    payload TEXT NOT NULL
);
