-- Fewer index entries a run (issue #21, sustained ingest): re-runs by the run they re-run,
-- and most runs re-run nothing. The same as ../sqlite/ (which also keeps the attempts
-- WITHOUT ROWID, a choice PostgreSQL does not have).
DROP INDEX runs_rerun;
CREATE INDEX runs_rerun ON runs (rerun_of) WHERE rerun_of IS NOT NULL;
