-- API tokens. Only a SHA-256 of each secret is kept (secrets are 256 random bits, so a plain
-- hash cannot be brute-forced); `name` is the token's public handle and the actor recorded
-- in the audit trail for everything done with it.

CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    doc  TEXT NOT NULL
);
