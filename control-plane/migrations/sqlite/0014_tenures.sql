-- Exactly once through a takeover (issue #19).
--
-- `tenures`: a partition's tenures that have ended (another agent was granted it), with the
-- holder, its first and last epoch and when its lease ran out (plane time; 0 when it gave the
-- partition back). A `started` reported under an epoch of an ended tenure is accepted only
-- for a run that holder took, stamped before its lease ran out: a start within the lease
-- whose report arrived late. Any other is refused (kept in `fenced_starts`). Only the last
-- few tenures of each partition are kept.
CREATE TABLE tenures (
    cluster     TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    holder      TEXT NOT NULL,
    first_epoch INTEGER NOT NULL,
    last_epoch  INTEGER NOT NULL,
    ended_ms    INTEGER NOT NULL,
    PRIMARY KEY (cluster, partition, first_epoch)
);

-- How often each agent says it heartbeats (ms; 0 before it said): partitions are granted
-- only to an agent heard within two of these.
ALTER TABLE agents ADD COLUMN heartbeat_ms INTEGER NOT NULL DEFAULT 0;
