-- When the plane last heard any agent of a cluster (or of its backup) and when it started
-- hearing them again after a silence longer than a lease: for one lease after that, expired
-- leases go back only to their holders (`lease::plan_reserving`).
CREATE TABLE cluster_activity (
    cluster       TEXT PRIMARY KEY,
    last_heard_ms INTEGER NOT NULL,
    resumed_ms    INTEGER NOT NULL
);
