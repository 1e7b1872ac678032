-- Task logs copied to the federation's S3 bucket (issue #21). The leader's archiver copies
-- each ended attempt's log, gathered from every node's logbook, to one object under the
-- tenant's prefix and records it here; from then on any node reads the attempt's log from
-- the object, so it outlives any plane node.

-- When an attempt's end was applied (the proposal's time): the archiver's order.
ALTER TABLE task_attempts ADD COLUMN ended_at_ms INTEGER;
CREATE INDEX task_attempts_ended ON task_attempts (ended_at_ms) WHERE ended_at_ms IS NOT NULL;

CREATE TABLE log_archive (
    run_id      TEXT NOT NULL,
    task        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    tenant      TEXT NOT NULL,
    -- The object's key under the bucket's root; '' when the attempt wrote nothing.
    key         TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    -- The attempt's `ended_at_ms`: everything ended before the newest one archived, less a
    -- margin, is archived.
    ended_at_ms INTEGER NOT NULL,
    archived_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, task, attempt)
);
CREATE INDEX log_archive_ended ON log_archive (ended_at_ms);
CREATE INDEX log_archive_age ON log_archive (tenant, ended_at_ms);
