-- The task attempts' logs agents sent to this plane node (`logbook.db`, beside `model.db`).
-- Never replicated and never in a Raft snapshot: each node keeps what the agents connected to
-- it sent, and any node reads the others' over the plane's peer links (`Ask::LogPieces`).

-- One row per attempt this node holds any of.
CREATE TABLE log_attempts (
    run_id     TEXT NOT NULL,
    task       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    -- The run's tenant (its id's first part): retention is per tenant.
    tenant     TEXT NOT NULL,
    -- The agent that sent it.
    agent      TEXT NOT NULL,
    -- Where the furthest piece held here ends, in the attempt's output (the agent's count).
    end_offset INTEGER NOT NULL,
    -- Bytes of text held here.
    bytes      INTEGER NOT NULL,
    -- 1 once the attempt's output passed the cap: later pieces are not kept.
    cut        INTEGER NOT NULL DEFAULT 0,
    first_ms   INTEGER NOT NULL,
    last_ms    INTEGER NOT NULL,
    PRIMARY KEY (run_id, task, attempt)
);
CREATE INDEX log_attempts_age ON log_attempts (tenant, last_ms);

-- The pieces, each where it starts in the attempt's output; a piece sent again (an agent
-- re-sending after a lost acknowledgement) lands on the same key.
CREATE TABLE log_pieces (
    run_id  TEXT NOT NULL,
    task    TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    offset  INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, task, attempt, offset)
);
