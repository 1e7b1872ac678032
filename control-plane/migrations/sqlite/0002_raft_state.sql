-- What the Raft state machine has applied, written in the same transaction as the model
-- changes of those entries, so after a crash the database says exactly where replay resumes.
-- Keys: `last_applied` (a LogId as JSON) and `membership` (a StoredMembership as JSON).
CREATE TABLE raft_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
