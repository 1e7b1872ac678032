-- Finished runs leave the model for the history store (issue #21). A retirement moves runs
-- into `retiring` inside its apply; the state machine writes those rows to the node's history
-- store and empties `retiring` before the apply's transaction commits, so the table is empty
-- between transactions and a crash in between replays the retirement (the history store's
-- writes are idempotent). `doc` is {"v":1,"doc":{"run":…,"attempts":[…]}}.
CREATE TABLE retiring (
    run_id        TEXT PRIMARY KEY,
    retired_index INTEGER NOT NULL,
    doc           TEXT NOT NULL
);

-- The newest fire time retired per schedule: a report of a run the model does not know for a
-- fire at or before it is a late copy of a retired run, not a new one.
CREATE TABLE retired_fires (
    schedule TEXT PRIMARY KEY,
    fire_ms  INTEGER NOT NULL
);

-- `retired_through` (in `counters`): the log index of the last retirement. History rows
-- retired at or before it are gone from the model; readers of both take only those.
INSERT INTO counters (name, value) VALUES ('retired_through', 0) ON CONFLICT (name) DO NOTHING;

-- A retirement deletes a batch of runs' commands, and each run's delete checks its commands'
-- foreign key: by run, not by a scan of every command ever given.
CREATE INDEX agent_commands_run ON agent_commands (run_id);
