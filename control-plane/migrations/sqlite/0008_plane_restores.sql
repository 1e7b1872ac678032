-- Every time this plane was seeded from a snapshot file (`meridian plane restore`). For one
-- lease after a restore, no cluster's leases are granted or renewed: an agent may still hold a
-- lease from the timeline the restore rolled back, and it must have run out before anyone is
-- given the partition again (`model::leasing::plan_cluster`).
CREATE TABLE plane_restores (
    restored_ms INTEGER NOT NULL,
    from_index  INTEGER NOT NULL,
    node        TEXT NOT NULL
);
