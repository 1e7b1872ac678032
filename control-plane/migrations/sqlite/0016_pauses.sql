-- Pauses (issue #20): a schedule, a workflow (every schedule running it), a tenant or an
-- environment held still. While any pause covers a schedule, its holder records its due
-- records skipped ("paused") and runs nothing. `tenant` is '' for an environment, `name` is
-- '' for a tenant.
CREATE TABLE pauses (
    scope    TEXT NOT NULL,
    tenant   TEXT NOT NULL,
    name     TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (scope, tenant, name)
);
