-- Fewer index entries a run (issue #21, sustained ingest): every run is written into the
-- model and, once retired, out of it, on every plane node, and each index is one more B-tree
-- insert and delete each time. The model now holds only the open and recent runs (the rest
-- are in the history store), and its listings and counts walk `runs_order`, which carries
-- tenant and state itself (`query::runs`: `+tenant`, `+state`).
-- Unused since the listings walk `runs_order`: by fire time alone, by tenant and workflow.
DROP INDEX runs_fire;
DROP INDEX runs_tenant;
-- By state: only the runs not final are ever looked up by state (`alerts::raise`'s late runs;
-- the runs going are `runs_going`), and most of the model's runs are final.
DROP INDEX runs_state;
CREATE INDEX runs_open ON runs (state) WHERE state IN ('requested', 'queued', 'started', 'returned');
-- Re-runs by the run they re-run: most runs re-run nothing.
DROP INDEX runs_rerun_of;
CREATE INDEX runs_rerun_of ON runs (rerun_of) WHERE rerun_of IS NOT NULL;
-- A run's attempts kept in their key's order alone (WITHOUT ROWID): one B-tree for the rows
-- and their key instead of a table and an index beside it. Same columns, same order (a
-- snapshot's rows are copied in by position).
CREATE TABLE task_attempts_keyed (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    task        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    started_ms  INTEGER,
    finished_ms INTEGER,
    exit_code   INTEGER,
    message     TEXT NOT NULL DEFAULT '',
    warning     TEXT NOT NULL DEFAULT '',
    ended_index INTEGER,
    PRIMARY KEY (run_id, task, attempt)
) WITHOUT ROWID;
INSERT INTO task_attempts_keyed SELECT * FROM task_attempts;
DROP TABLE task_attempts;
ALTER TABLE task_attempts_keyed RENAME TO task_attempts;
CREATE INDEX task_attempts_ended ON task_attempts (ended_index) WHERE ended_index IS NOT NULL;
