-- Alerts and task callbacks (issue #20).
--
-- `alert_channels` and `alert_rules`: where alerts go and what raises them, per tenant
-- (`tenant` = '' for the federation's own, which admins keep: agent lost, data center
-- unheard, and run events of every tenant). `doc` is the versioned document.
CREATE TABLE alert_channels (
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    doc    TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE alert_rules (
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    doc    TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Task callbacks of each workflow version: (task, attempt outcome) → a channel of the
-- tenant. Written when the version is applied, so a report's attempt finds its callbacks
-- with one indexed read instead of parsing the workflow.
CREATE TABLE task_callbacks (
    tenant   TEXT NOT NULL,
    workflow TEXT NOT NULL,
    version  INTEGER NOT NULL,
    task     TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    channel  TEXT NOT NULL,
    PRIMARY KEY (tenant, workflow, version, task, outcome, channel)
);
CREATE INDEX task_callbacks_channel ON task_callbacks (tenant, channel);

-- The durable delivery outbox: written in the same log entry as the event that raised it,
-- sent by the leader, each attempt's outcome replicated back (`alert_attempts`). `events`
-- is a JSON array of the grouped events (at most 20; `count` counts them all); a delivery
-- waiting for its group window (`next_ms` ahead, no attempt yet) takes repeats in.
-- `state`: pending, delivered, failed (given up after a day).
CREATE TABLE alert_deliveries (
    id           TEXT PRIMARY KEY,
    log_index    INTEGER NOT NULL,
    tenant       TEXT NOT NULL,
    rule         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    event        TEXT NOT NULL,
    group_key    TEXT NOT NULL,
    events       TEXT NOT NULL,
    count        INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    next_ms      INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    delivered_ms INTEGER
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_ms);
CREATE INDEX alert_deliveries_group ON alert_deliveries (group_key, created_ms);
CREATE INDEX alert_deliveries_tenant ON alert_deliveries (tenant, created_ms);

CREATE TABLE alert_attempts (
    delivery_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    message     TEXT NOT NULL,
    took_ms     INTEGER NOT NULL,
    node        TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- What each rule has raised already (`key`: the event, e.g. `<run id>:failed`, an agent
-- and the heartbeat it was last seen at): the same event reported again, or a timed check
-- seen twice, raises nothing new.
CREATE TABLE alert_marks (
    tenant TEXT NOT NULL,
    rule   TEXT NOT NULL,
    key    TEXT NOT NULL,
    at_ms  INTEGER NOT NULL,
    PRIMARY KEY (tenant, rule, key)
);
