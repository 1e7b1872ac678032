-- Alerts (issue #20): the reads every raise and every attempt make, indexed. A delivery's id
-- counts the deliveries of its log entry; finished deliveries and old marks are forgotten a
-- few at a time, oldest first.
CREATE INDEX alert_deliveries_entry ON alert_deliveries (log_index);
CREATE INDEX alert_deliveries_done ON alert_deliveries (created_ms, id) WHERE state != 'pending';
CREATE INDEX alert_marks_at ON alert_marks (at_ms);
