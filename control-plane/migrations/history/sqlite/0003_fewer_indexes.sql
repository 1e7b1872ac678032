-- Fewer B-trees a run (issue #21, sustained ingest: every node writes every retired run). The
-- same as ../postgres/, and the attempts kept in their key's order alone (WITHOUT ROWID: one
-- B-tree for the rows and their key instead of a table and an index beside it; PostgreSQL
-- has no such choice).
-- Re-runs by the run they re-run: most runs re-run nothing.
DROP INDEX runs_rerun;
CREATE INDEX runs_rerun ON runs (rerun_of) WHERE rerun_of IS NOT NULL;
CREATE TABLE task_attempts_keyed (
    run_id      TEXT NOT NULL,
    task        TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    started_ms  BIGINT,
    finished_ms BIGINT,
    exit_code   BIGINT,
    message     TEXT NOT NULL,
    warning     TEXT NOT NULL,
    PRIMARY KEY (run_id, task, attempt)
) WITHOUT ROWID;
INSERT INTO task_attempts_keyed SELECT * FROM task_attempts;
DROP TABLE task_attempts;
ALTER TABLE task_attempts_keyed RENAME TO task_attempts;
