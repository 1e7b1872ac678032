-- Agents, partition leases and run history (issue #4). Written only by the command processor,
-- in log order, like everything else in the model.

-- Where each schedule lives: its environment's cluster and the partition its id hashes to
-- (`meridian_proto::run::partition_of`). `created_ms` is the first instant records are made
-- after when nothing has fired yet. Rows from before this migration get partition 0.
ALTER TABLE schedules ADD COLUMN cluster TEXT;
ALTER TABLE schedules ADD COLUMN partition INTEGER NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
UPDATE schedules SET cluster = (SELECT cluster FROM environments e WHERE e.name = schedules.environment);
CREATE INDEX schedules_partition ON schedules (cluster, partition);

-- Agents the plane has heard from. An agent counts as connected while its last heartbeat is
-- younger than its cluster's lease duration.
CREATE TABLE agents (
    hostname     TEXT PRIMARY KEY,
    cluster      TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    free_slots   INTEGER NOT NULL DEFAULT 0,
    -- Set by a graceful shutdown: not connected until it heartbeats again.
    gone         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX agents_cluster ON agents (cluster);

-- One row per partition of each cluster that has had an agent. `holder` is cleared by a
-- release; an expired lease keeps its holder until another agent is granted the partition.
-- The tenure is the run of epochs one agent held without anyone else in between: fire records
-- reported under any epoch of the current tenure are accepted, older ones are fenced off.
CREATE TABLE leases (
    cluster       TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    holder        TEXT,
    epoch         INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    tenure_holder TEXT,
    tenure_epoch  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (cluster, partition)
);
CREATE INDEX leases_holder ON leases (holder);

-- The last fire time the plane has acknowledged per schedule (a record queued, started or
-- skipped): whoever holds the partition next generates records after it.
CREATE TABLE schedule_cursors (
    schedule_id TEXT PRIMARY KEY,
    fire_ms     INTEGER NOT NULL
);

-- Run history. `starts` counts the distinct agents that reported starting the same run: more
-- than one means a fire record ran twice, which the fencing exists to prevent and the fault
-- tests' checker looks for.
CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    workflow         TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    schedule         TEXT,
    fire_ms          INTEGER,
    environment      TEXT NOT NULL,
    cluster          TEXT NOT NULL,
    dc               TEXT NOT NULL,
    state            TEXT NOT NULL,
    agent            TEXT,
    epoch            INTEGER NOT NULL DEFAULT 0,
    requested_ms     INTEGER,
    queued_ms        INTEGER,
    started_ms       INTEGER,
    finished_ms      INTEGER,
    message          TEXT NOT NULL DEFAULT '',
    starts           INTEGER NOT NULL DEFAULT 0,
    updated_ms       INTEGER NOT NULL
);
CREATE INDEX runs_fire ON runs (fire_ms);
CREATE INDEX runs_schedule ON runs (schedule, fire_ms);
CREATE INDEX runs_tenant ON runs (tenant, workflow);
CREATE INDEX runs_state ON runs (state);
CREATE INDEX runs_updated ON runs (updated_ms);

CREATE TABLE task_attempts (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    task        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    started_ms  INTEGER,
    finished_ms INTEGER,
    exit_code   INTEGER,
    message     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, task, attempt)
);

CREATE TABLE run_logs (
    run_id  TEXT NOT NULL REFERENCES runs (run_id),
    task    TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    offset  INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, task, attempt, offset)
);

-- What the plane wants agents to do: run a requested run, kill a run. A run-now command is
-- taken by the first connected agent of the environment's cluster that heartbeats (`agent`
-- set then); a command stays listed in that agent's heartbeats until its run reports.
CREATE TABLE agent_commands (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    cluster    TEXT NOT NULL,
    agent      TEXT,
    job        TEXT,
    created_ms INTEGER NOT NULL,
    UNIQUE (kind, run_id)
);
CREATE INDEX agent_commands_agent ON agent_commands (agent);

-- Counters: `definitions` is the log index of the last change to what agents run (schedules,
-- workflows, environments, grants, clusters); agents re-fetch when it moves.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
