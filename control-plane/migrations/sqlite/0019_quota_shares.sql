-- Quotas (issue #20): a grant's max_concurrent_runs split among the agents that run the
-- environment's runs. Per (tenant, environment, agent): the share the plane granted it, the
-- share it last said it enforces (acked), and its runs going and waiting as it last said.
-- Counted against the grant as the most of the three until the agent is silent for two leases.
CREATE TABLE quota_shares (
    tenant      TEXT NOT NULL,
    environment TEXT NOT NULL,
    agent       TEXT NOT NULL,
    granted     INTEGER NOT NULL DEFAULT 0,
    acked       INTEGER NOT NULL DEFAULT 0,
    going       INTEGER NOT NULL DEFAULT 0,
    waiting     INTEGER NOT NULL DEFAULT 0,
    heard_ms    INTEGER NOT NULL,
    PRIMARY KEY (tenant, environment, agent)
);
