-- Starts an agent reported after it had lost its partition (issue #4). The report is refused
-- (the agent was fenced off), but the run did happen on that agent: when another agent runs the
-- same fire record too, the history must show the record ran twice, not once.
CREATE TABLE fenced_starts (
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, agent)
);
