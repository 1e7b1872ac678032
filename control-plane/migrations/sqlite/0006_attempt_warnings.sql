-- A warning on a task attempt (issue #5): something the run should know that did not stop it,
-- such as a cached resource used because S3 could not be reached.
ALTER TABLE task_attempts ADD COLUMN warning TEXT NOT NULL DEFAULT '';
