-- Machine identities for CI/CD and servers (SQLite): the policies that say which secrets
-- an identity may read, static machine credentials, and the short-lived machine tokens.
-- Credentials and tokens are kept as SHA-256 hashes only; policies hold names and globs.
CREATE TABLE machine_policies (
    name            TEXT PRIMARY KEY,
    secrets         TEXT NOT NULL,
    token_ttl_secs  INTEGER NOT NULL,
    any_version     INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);

CREATE TABLE machines (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    policy             TEXT NOT NULL,
    secret_hash        BLOB NOT NULL,
    previous_hash      BLOB,
    previous_until_ms  INTEGER,
    created_ms         INTEGER NOT NULL,
    rotated_ms         INTEGER
);

CREATE TABLE machine_tokens (
    hash        BLOB PRIMARY KEY,
    identity    TEXT NOT NULL,
    policy      TEXT NOT NULL,
    claims      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX machine_tokens_expires ON machine_tokens (expires_ms);
CREATE INDEX machine_tokens_identity ON machine_tokens (identity);
