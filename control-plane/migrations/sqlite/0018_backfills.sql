-- Backfills (issue #20): a range of a schedule's fire times to run, handed to the schedule's
-- holder at most `parallel` at a time. `doc` is the request as made; `state` is running,
-- paused, cancelled or done. `left_out` (JSON) says what of the range it does not run.
CREATE TABLE backfills (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    schedule      TEXT NOT NULL,
    schedule_id   TEXT NOT NULL,
    doc           TEXT NOT NULL,
    state         TEXT NOT NULL,
    total         INTEGER NOT NULL,
    left_out      TEXT NOT NULL,
    request_index INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    finished_ms   INTEGER
);
CREATE INDEX backfills_schedule ON backfills (schedule_id, state);

-- Its records, in the order they are handed (`seq`). `run_id` is the run that fills it (the
-- record's own id, or a later generation's when it had run already); `state` is pending,
-- handed (its run not ended yet), ended, or dropped (cancelled before it was handed, or
-- refused when it was: `note` says why).
CREATE TABLE backfill_records (
    backfill_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    fire_ms     INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    state       TEXT NOT NULL,
    note        TEXT,
    PRIMARY KEY (backfill_id, seq)
);
CREATE INDEX backfill_records_state ON backfill_records (backfill_id, state, seq);
CREATE INDEX backfill_records_run ON backfill_records (run_id, state);

-- A record handed for a backfill runs whatever the catch-up policy says (the assignment lists
-- it in `backfill`, not `returned`).
ALTER TABLE handed ADD COLUMN backfill INTEGER NOT NULL DEFAULT 0;
