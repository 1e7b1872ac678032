-- How much of each attempt's log is in the outbox (bytes from the start of the attempt's
-- output file): written in the transaction that records the chunk, so an agent restarted while
-- a task went on under the supervisor sends the rest of its log from exactly there. A run's
-- rows go when the run leaves the agent.

CREATE TABLE log_marks (
    run_id  TEXT NOT NULL,
    task    TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    upto    INTEGER NOT NULL,
    PRIMARY KEY (run_id, task, attempt)
) WITHOUT ROWID;
