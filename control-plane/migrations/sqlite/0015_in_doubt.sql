-- Takeover without double runs (issue #19).
--
-- `doubts`: per schedule, a range of fire records `(after_ms, through_ms]` that its previous
-- holder may have fired — due before that holder's lease ran out, after the last fire the
-- plane acknowledged — when another agent took the partition over (schedules with takeover
-- policy `wait`). The new holder generates records only after `through_ms` and runs none in
-- the range. A range goes when the old holder says it has reported everything of its tenure
-- (`relinquished` in a heartbeat: what it never reported it never ran, and is handed to the
-- holder), or when an operator resolves it ("run": handed to the holder; "mark done": recorded
-- skipped).
CREATE TABLE doubts (
    schedule_id TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    holder      TEXT NOT NULL,
    first_epoch INTEGER NOT NULL,
    last_epoch  INTEGER NOT NULL,
    after_ms    INTEGER NOT NULL,
    through_ms  INTEGER NOT NULL,
    since_ms    INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, holder, first_epoch)
);
CREATE INDEX doubts_partition ON doubts (cluster, partition, holder);

-- `handed`: fire records the partition's holder is to fire though they are at or before the
-- acknowledged fire (`Assignment::returned`): given back unstarted by the agent that took them,
-- or settled as never run out of a doubt. A row goes when an agent takes the record.
CREATE TABLE handed (
    schedule_id TEXT NOT NULL,
    fire_ms     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, fire_ms)
);
