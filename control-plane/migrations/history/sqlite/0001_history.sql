-- The history store (issue #21): finished runs retired from the model, so Raft snapshots stay
-- the size of the definitions and the open work. Written only by the state machine's apply of
-- a retirement (`retired_index` is that command's log index), read by the API beside the
-- model's recent runs. The same schema, in PostgreSQL's words, is in ../postgres/.
CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    workflow         TEXT NOT NULL,
    workflow_version BIGINT NOT NULL,
    schedule         TEXT,
    fire_ms          BIGINT,
    environment      TEXT NOT NULL,
    cluster          TEXT NOT NULL,
    dc               TEXT NOT NULL,
    state            TEXT NOT NULL,
    agent            TEXT,
    epoch            BIGINT NOT NULL,
    requested_ms     BIGINT,
    queued_ms        BIGINT,
    started_ms       BIGINT,
    finished_ms      BIGINT,
    message          TEXT NOT NULL,
    starts           BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    -- The listing key: fire time, else request time, else last change.
    order_ms         BIGINT NOT NULL,
    generation       BIGINT NOT NULL,
    rerun_of         TEXT,
    kept             TEXT,
    requested_by     TEXT,
    retired_index    BIGINT NOT NULL
);
-- The listing's walk, newest first from a cursor, carrying what every read filters on (the
-- retirement index each read is bounded by) and what the analysis page counts and filters by
-- most, so a window's page and per-state counts are read from the index alone (rows never
-- change once written).
CREATE INDEX runs_order ON runs (order_ms, run_id, retired_index, state, tenant, dc, cluster,
    fire_ms, started_ms);
-- A schedule's runs, newest first (sparse among many schedules: the walk above would not find
-- them fast).
CREATE INDEX runs_schedule ON runs (schedule, order_ms);
CREATE INDEX runs_rerun ON runs (rerun_of);
-- In retirement order: what a node fills a gap with, page by page.
CREATE INDEX runs_retired ON runs (retired_index, run_id);

CREATE TABLE task_attempts (
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
);

-- `applied_through`: the newest retirement (log index) this store was written by or knows
-- of. When the node's model has retired further (a snapshot installed, a plane restored, the
-- file lost), the runs in between are a gap, filled from another member's store
-- (`retirement::Filler`): copied in (retired_index, run_id) order after `after_*`.
CREATE TABLE progress (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE gaps (
    through_index BIGINT PRIMARY KEY,
    after_index   BIGINT NOT NULL,
    after_run     TEXT NOT NULL
);
