-- The replicated model. Every row is written only by the command processor, in the order of
-- the Raft log, so every plane node holds the same rows. `doc` is the entity as JSON (what the
-- API returns); the other columns are the keys and references the processor checks.

CREATE TABLE data_centers (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);

CREATE TABLE clusters (
    name   TEXT PRIMARY KEY,
    dc     TEXT NOT NULL REFERENCES data_centers (name),
    backup TEXT REFERENCES clusters (name),
    doc    TEXT NOT NULL
);
CREATE INDEX clusters_dc ON clusters (dc);

CREATE TABLE environments (
    name    TEXT PRIMARY KEY,
    cluster TEXT NOT NULL REFERENCES clusters (name),
    doc     TEXT NOT NULL
);
CREATE INDEX environments_cluster ON environments (cluster);

CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);

CREATE TABLE grants (
    tenant      TEXT NOT NULL REFERENCES tenants (name),
    environment TEXT NOT NULL REFERENCES environments (name),
    doc         TEXT NOT NULL,
    PRIMARY KEY (tenant, environment)
);
CREATE INDEX grants_environment ON grants (environment);

-- Every applied version is kept; the newest is the one new runs use.
CREATE TABLE workflows (
    tenant      TEXT NOT NULL REFERENCES tenants (name),
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    environment TEXT,
    deleted     INTEGER NOT NULL DEFAULT 0,
    doc         TEXT NOT NULL,
    PRIMARY KEY (tenant, name, version)
);
CREATE INDEX workflows_environment ON workflows (environment);

CREATE TABLE schedules (
    tenant      TEXT NOT NULL REFERENCES tenants (name),
    name        TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    environment TEXT NOT NULL REFERENCES environments (name),
    version     INTEGER NOT NULL,
    doc         TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX schedules_environment ON schedules (environment);
CREATE INDEX schedules_workflow ON schedules (tenant, workflow);

-- Who changed what, when: one row per applied (not refused) command.
CREATE TABLE audit (
    log_index INTEGER PRIMARY KEY,
    actor     TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    op        TEXT NOT NULL,
    subject   TEXT NOT NULL,
    command   TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at_ms);
