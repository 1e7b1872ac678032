-- The fire-record buffer and the runs this agent has taken.
--
-- `assignments`: the schedules of the partitions this agent holds, as the plane gave them
-- (`meridian_proto::run::Assignment` as JSON).
-- `records`: the next fire records per schedule (up to 50), pre-generated so firing does not
-- depend on the plane being reachable.
-- `cursors`: the last fire time this agent took (queued, started or skipped) per schedule;
-- taking a record deletes it from `records`, moves the cursor and writes the outbox entry in
-- one transaction, so after a crash a record is either still waiting or taken and reported.
-- `runs`: runs taken and not yet finished, so a restart knows what it was doing.

CREATE TABLE assignments (
    schedule_id TEXT PRIMARY KEY,
    cluster     TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    doc         TEXT NOT NULL
);

CREATE TABLE records (
    schedule_id TEXT NOT NULL,
    fire_ms     INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, fire_ms)
);
CREATE INDEX records_fire ON records (fire_ms);

CREATE TABLE cursors (
    schedule_id TEXT PRIMARY KEY,
    fired_ms    INTEGER NOT NULL
);

CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    schedule_id TEXT,
    fire_ms     INTEGER,
    cluster     TEXT NOT NULL,
    partition   INTEGER,
    epoch       INTEGER NOT NULL,
    state       TEXT NOT NULL,
    job         TEXT NOT NULL
);
