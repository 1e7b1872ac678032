-- Taking fire records costs one durable row per firing pass, not one per record.
--
-- `takes`: what a firing pass took — per record its schedule, fire time, lease epoch and how it
-- was taken (started, queued, skipped, ...) — with the time it was taken. The row is written
-- before any of its runs start. Its rows in `records`, `cursors`, `runs` and `outbox` are
-- written from it afterwards, a chunk at a time; `expanded` counts the items already written
-- (in the same transaction as them), and the row goes once every item is. After a crash the
-- agent writes what is left before it does anything else.
--
-- `records` becomes a table without rowid (two B-trees instead of three), and the index the
-- firing pass reads covers it: due records come from the index alone, in order.

CREATE TABLE takes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    items    TEXT NOT NULL,
    expanded INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE records_new (
    schedule_id TEXT NOT NULL,
    fire_ms     INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, fire_ms)
) WITHOUT ROWID;
INSERT INTO records_new (schedule_id, fire_ms) SELECT schedule_id, fire_ms FROM records;
DROP TABLE records;
ALTER TABLE records_new RENAME TO records;
CREATE INDEX records_due ON records (fire_ms, schedule_id);
