-- The store's runs counted per hour of the listing key, tenant, environment (with the cluster
-- and data center it is on) and state, kept by a trigger as rows are written, replaced and
-- deleted: the analysis page's per-state counts of a long window read the whole hours here
-- rather than every run (issue #21). The hour is floored, also before 1970. The same as
-- ../sqlite/.
CREATE TABLE run_hours (
    hour_ms     BIGINT NOT NULL,
    tenant      TEXT NOT NULL,
    environment TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    dc          TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, tenant, environment, cluster, dc, state)
);

INSERT INTO run_hours (hour_ms, tenant, environment, cluster, dc, state, n)
    SELECT order_ms - ((order_ms % 3600000) + 3600000) % 3600000, tenant, environment, cluster,
           dc, state, COUNT(*)
    FROM runs GROUP BY 1, 2, 3, 4, 5, 6;

CREATE FUNCTION run_hours_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE run_hours SET n = n - 1
        WHERE hour_ms = OLD.order_ms - ((OLD.order_ms % 3600000) + 3600000) % 3600000
          AND tenant = OLD.tenant AND environment = OLD.environment
          AND cluster = OLD.cluster AND dc = OLD.dc AND state = OLD.state;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO run_hours (hour_ms, tenant, environment, cluster, dc, state, n)
        VALUES (NEW.order_ms - ((NEW.order_ms % 3600000) + 3600000) % 3600000, NEW.tenant,
                NEW.environment, NEW.cluster, NEW.dc, NEW.state, 1)
        ON CONFLICT (hour_ms, tenant, environment, cluster, dc, state)
        DO UPDATE SET n = run_hours.n + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_hours_write AFTER INSERT OR DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION run_hours_count();

-- A row written again (a replayed retirement, a gap filled twice) changes nothing counted.
CREATE TRIGGER run_hours_change AFTER UPDATE ON runs
    FOR EACH ROW
    WHEN (OLD.order_ms IS DISTINCT FROM NEW.order_ms OR OLD.tenant IS DISTINCT FROM NEW.tenant
          OR OLD.environment IS DISTINCT FROM NEW.environment
          OR OLD.cluster IS DISTINCT FROM NEW.cluster OR OLD.dc IS DISTINCT FROM NEW.dc
          OR OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION run_hours_count();
