-- The store's runs counted per hour of the listing key, tenant, environment (with the cluster
-- and data center it is on) and state, kept by triggers as rows are written, replaced and
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

-- Statement-level triggers over the statement's transition tables: one grouped upsert per
-- statement (a retirement writes 200 runs a statement), where a row-level PL/pgSQL trigger
-- cost more than the row's own write.
CREATE FUNCTION run_hours_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_hours (hour_ms, tenant, environment, cluster, dc, state, n)
    SELECT order_ms - ((order_ms % 3600000) + 3600000) % 3600000 AS hour_ms, tenant,
           environment, cluster, dc, state, COUNT(*)
    FROM added GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (hour_ms, tenant, environment, cluster, dc, state)
    DO UPDATE SET n = run_hours.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE FUNCTION run_hours_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE run_hours h SET n = h.n - r.n
    FROM (SELECT order_ms - ((order_ms % 3600000) + 3600000) % 3600000 AS hour_ms, tenant,
                 environment, cluster, dc, state, COUNT(*) AS n
          FROM removed GROUP BY 1, 2, 3, 4, 5, 6) r
    WHERE h.hour_ms = r.hour_ms AND h.tenant = r.tenant AND h.environment = r.environment
      AND h.cluster = r.cluster AND h.dc = r.dc AND h.state = r.state;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_hours_insert AFTER INSERT ON runs
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION run_hours_add();

CREATE TRIGGER run_hours_delete AFTER DELETE ON runs
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION run_hours_remove();

-- A row written again (a replayed retirement, a gap filled twice; `ON CONFLICT DO UPDATE`
-- fires the update triggers with the rows it updated) is taken off as it was and added as it
-- is: the same row changes nothing counted.
CREATE TRIGGER run_hours_update_old AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION run_hours_remove();

CREATE TRIGGER run_hours_update_new AFTER UPDATE ON runs
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION run_hours_add();
