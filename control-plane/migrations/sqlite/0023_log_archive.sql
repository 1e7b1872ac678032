-- Task logs copied to the federation's S3 bucket (issue #21). The leader's archiver copies
-- each ended attempt's log, gathered from every node's logbook, to one object under the
-- tenant's prefix and records it here; from then on any node reads the attempt's log from
-- the object, so it outlives any plane node.

-- The Raft log index at which an attempt's end was applied (and applied again when the end
-- changed): the archiver's order, the same on every node and only ever growing.
ALTER TABLE task_attempts ADD COLUMN ended_index INTEGER;
CREATE INDEX task_attempts_ended ON task_attempts (ended_index) WHERE ended_index IS NOT NULL;

-- A row stays when retention deletes the object (its key emptied): the archiver's mark never
-- goes back, so nothing is copied twice.
CREATE TABLE log_archive (
    run_id      TEXT NOT NULL,
    task        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    tenant      TEXT NOT NULL,
    -- The object's key under the bucket's root; '' when the attempt wrote nothing, or once
    -- retention deleted the object.
    key         TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    -- The attempt's `ended_index` when copied: everything ended at or before the newest one
    -- archived is archived.
    ended_index INTEGER NOT NULL,
    -- When the copy was recorded (the proposal's time): retention counts from it.
    archived_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, task, attempt)
);
CREATE INDEX log_archive_ended ON log_archive (ended_index);
CREATE INDEX log_archive_age ON log_archive (tenant, archived_ms) WHERE key != '';
