-- Fire records the plane handed back to this agent (an assignment's `returned`: a holder took
-- them and gave them back unstarted). Each is put into `records` once: the plane lists it
-- until it has the report of its taking, and that report may still be on its way. A row goes
-- when the plane stops listing it, or when this agent gives the record back itself.

CREATE TABLE handed (
    schedule_id TEXT NOT NULL,
    fire_ms     INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    PRIMARY KEY (schedule_id, fire_ms)
) WITHOUT ROWID;
CREATE INDEX handed_run ON handed (run_id);
