-- Who may do what (issue #16): users with their password hashes and role bindings, sign-in
-- sessions, and an audit trail that also records refused writes and can be read per tenant.

-- People. `password` is an Argon2id PHC string, never sent back by the API; `doc` is the
-- user's public record (name, role bindings, who created it and when).
CREATE TABLE users (
    name     TEXT PRIMARY KEY,
    password TEXT NOT NULL,
    doc      TEXT NOT NULL
);

-- Sign-in sessions of the web UI. Only a SHA-256 of each session's secret (the cookie) is
-- kept. A session dies with its expiry, a sign-out, a password change or its user's deletion.
CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users (name),
    expires_ms INTEGER NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user);
CREATE INDEX sessions_expires ON sessions (expires_ms);

-- The audit trail now records refusals too (`outcome` = 'refused', with the reason in
-- `message`), and the tenant a command concerns, so a tenant's members can read theirs.
-- Entries from before this migration concern no tenant: only admins and operators see them.
ALTER TABLE audit ADD COLUMN tenant TEXT;
ALTER TABLE audit ADD COLUMN outcome TEXT NOT NULL DEFAULT 'applied';
ALTER TABLE audit ADD COLUMN message TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_tenant ON audit (tenant, log_index);
CREATE INDEX audit_actor ON audit (actor, log_index);

-- Tokens made before roles that named a tenant read as `owner` of it. One whose tenant was
-- deleted before this migration would become the owner of a tenant re-created under that name
-- (deleting a tenant now takes its roles away; it did not then): such tokens go.
DELETE FROM tokens
WHERE json_extract(doc, '$.v') IS NULL
  AND json_extract(doc, '$.tenant') IS NOT NULL
  AND json_extract(doc, '$.tenant') NOT IN (SELECT name FROM tenants);
