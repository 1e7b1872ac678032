-- The store's runs counted per hour of the listing key, tenant, environment (with the cluster
-- and data center it is on) and state, kept by triggers as rows are written, replaced and
-- deleted: the analysis page's per-state counts of a long window read the whole hours here
-- rather than every run (issue #21: a 30-day window over 10,000,000 runs counted 3.4 million
-- index entries). The hour is floored, also before 1970. The same in ../postgres/.
CREATE TABLE run_hours (
    hour_ms     BIGINT NOT NULL,
    tenant      TEXT NOT NULL,
    environment TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    dc          TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, tenant, environment, cluster, dc, state)
) WITHOUT ROWID;

INSERT INTO run_hours (hour_ms, tenant, environment, cluster, dc, state, n)
    SELECT order_ms - ((order_ms % 3600000) + 3600000) % 3600000, tenant, environment, cluster,
           dc, state, COUNT(*)
    FROM runs GROUP BY 1, 2, 3, 4, 5, 6;

CREATE TRIGGER run_hours_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO run_hours (hour_ms, tenant, environment, cluster, dc, state, n)
    VALUES (NEW.order_ms - ((NEW.order_ms % 3600000) + 3600000) % 3600000, NEW.tenant,
            NEW.environment, NEW.cluster, NEW.dc, NEW.state, 1)
    ON CONFLICT (hour_ms, tenant, environment, cluster, dc, state) DO UPDATE SET n = n + 1;
END;

-- A row written again (a replayed retirement, a gap filled twice) changes nothing counted.
CREATE TRIGGER run_hours_update
AFTER UPDATE OF order_ms, tenant, environment, cluster, dc, state ON runs
WHEN OLD.order_ms IS NOT NEW.order_ms OR OLD.tenant IS NOT NEW.tenant
    OR OLD.environment IS NOT NEW.environment OR OLD.cluster IS NOT NEW.cluster
    OR OLD.dc IS NOT NEW.dc OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE run_hours SET n = n - 1
    WHERE hour_ms = OLD.order_ms - ((OLD.order_ms % 3600000) + 3600000) % 3600000
      AND tenant = OLD.tenant AND environment = OLD.environment AND cluster = OLD.cluster
      AND dc = OLD.dc AND state = OLD.state;
    INSERT INTO run_hours (hour_ms, tenant, environment, cluster, dc, state, n)
    VALUES (NEW.order_ms - ((NEW.order_ms % 3600000) + 3600000) % 3600000, NEW.tenant,
            NEW.environment, NEW.cluster, NEW.dc, NEW.state, 1)
    ON CONFLICT (hour_ms, tenant, environment, cluster, dc, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER run_hours_delete AFTER DELETE ON runs
BEGIN
    UPDATE run_hours SET n = n - 1
    WHERE hour_ms = OLD.order_ms - ((OLD.order_ms % 3600000) + 3600000) % 3600000
      AND tenant = OLD.tenant AND environment = OLD.environment AND cluster = OLD.cluster
      AND dc = OLD.dc AND state = OLD.state;
END;
