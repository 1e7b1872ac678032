-- Runs counted per hour, data center and state, kept by triggers as runs are written (issue
-- #17: the federation overview within 100 ms over millions of runs). The hour is the hour of
-- the listing key (fire time, else request time, else last change: `runs_order`'s). The
-- triggers run inside each replica's own apply of a command, so every node's counts follow
-- its runs exactly, a snapshot carries them with the runs, and nothing else writes them.
CREATE TABLE run_hours (
    hour_ms INTEGER NOT NULL,
    dc      TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (hour_ms, dc, state)
) WITHOUT ROWID;

INSERT INTO run_hours (hour_ms, dc, state, n)
    SELECT (COALESCE(fire_ms, requested_ms, updated_ms) / 3600000) * 3600000, dc, state, COUNT(*)
    FROM runs GROUP BY 1, 2, 3;

CREATE TRIGGER run_hours_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO run_hours (hour_ms, dc, state, n)
    VALUES ((COALESCE(NEW.fire_ms, NEW.requested_ms, NEW.updated_ms) / 3600000) * 3600000,
            NEW.dc, NEW.state, 1)
    ON CONFLICT (hour_ms, dc, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER run_hours_update AFTER UPDATE OF state, dc, fire_ms, requested_ms, updated_ms ON runs
WHEN OLD.state IS NOT NEW.state OR OLD.dc IS NOT NEW.dc
    OR COALESCE(OLD.fire_ms, OLD.requested_ms, OLD.updated_ms) / 3600000
       IS NOT COALESCE(NEW.fire_ms, NEW.requested_ms, NEW.updated_ms) / 3600000
BEGIN
    UPDATE run_hours SET n = n - 1
    WHERE hour_ms = (COALESCE(OLD.fire_ms, OLD.requested_ms, OLD.updated_ms) / 3600000) * 3600000
      AND dc = OLD.dc AND state = OLD.state;
    INSERT INTO run_hours (hour_ms, dc, state, n)
    VALUES ((COALESCE(NEW.fire_ms, NEW.requested_ms, NEW.updated_ms) / 3600000) * 3600000,
            NEW.dc, NEW.state, 1)
    ON CONFLICT (hour_ms, dc, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER run_hours_delete AFTER DELETE ON runs
BEGIN
    UPDATE run_hours SET n = n - 1
    WHERE hour_ms = (COALESCE(OLD.fire_ms, OLD.requested_ms, OLD.updated_ms) / 3600000) * 3600000
      AND dc = OLD.dc AND state = OLD.state;
END;
