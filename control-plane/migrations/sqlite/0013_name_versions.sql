-- The highest version each workflow and schedule name has had (issue #18, defects 1 and 2).
-- Kept across deleting the thing, and its tenant, so a version never names two definitions:
-- a schedule created again under an old name goes on from the old one's version (an agent
-- that missed the delete sees a new version, not the old calendar under the same number),
-- and a workflow applied in a tenant created again does not reuse its old versions.
CREATE TABLE name_versions (
    kind    TEXT NOT NULL,
    tenant  TEXT NOT NULL,
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (kind, tenant, name)
);
INSERT INTO name_versions (kind, tenant, name, version)
    SELECT 'workflow', tenant, name, MAX(version) FROM workflows GROUP BY tenant, name;
INSERT INTO name_versions (kind, tenant, name, version)
    SELECT 'schedule', tenant, name, version FROM schedules;
