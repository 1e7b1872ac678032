-- The order runs are listed and windowed in (issue #17: the cross-DC analysis page and the
-- federation overview over millions of runs): fire time, else request time, else last change,
-- then run id — the same expression the queries use, so a page of the newest runs in a window
-- is a walk down this index and never a sort of the whole history. It also carries the
-- columns the pages count and filter by (state, tenant, data center, and fire and start time
-- for lateness), so the counts per state of a window, the overview's hourly counts and its
-- lateness quantiles are read from the index alone.
CREATE INDEX runs_order ON runs
    (COALESCE(fire_ms, requested_ms, updated_ms), run_id, state, tenant, dc, fire_ms, started_ms);
