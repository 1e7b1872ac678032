-- The federation overview within its budget over a million runs (issue #17). 0010's index
-- did not carry what the listing key is computed from when a run has no fire time, so
-- SQLite read every run of the window from the table to compute its hour (it does not take
-- an indexed expression's value from the index): it now carries request time and last
-- change as well, and the hourly counts are read from the index alone.
DROP INDEX runs_order;
CREATE INDEX runs_order ON runs
    (COALESCE(fire_ms, requested_ms, updated_ms), run_id, state, tenant, dc, fire_ms, started_ms,
     requested_ms, updated_ms);
-- The runs going, by agent (the overview's "running" per agent): a small index of just those.
CREATE INDEX runs_going ON runs (agent) WHERE state = 'started';
