-- Starts the history counts but did not apply (issue #4), one row per run and agent: a
-- `started` from a second agent for a record another agent already took, and a `started`
-- refused because the agent had lost its partition (fenced off). Either way the run did happen
-- on that agent, so the record ran twice and the history must say so; `starts` in the run
-- queries adds these rows.
CREATE TABLE fenced_starts (
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, agent)
);
