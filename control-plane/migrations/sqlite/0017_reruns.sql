-- Re-runs and recoveries (issue #20): a run run again is a new run of the same record (or of
-- the same run-now), one generation further: `<first run's id>~<generation>`. `rerun_of` names
-- the first generation's run, `request_index` the log entry that asked (its audit row says who),
-- `kept` the tasks (JSON array) a recovery kept from earlier generations instead of running.
ALTER TABLE runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN rerun_of TEXT;
ALTER TABLE runs ADD COLUMN request_index INTEGER;
ALTER TABLE runs ADD COLUMN kept TEXT;
CREATE INDEX runs_rerun_of ON runs (rerun_of);
