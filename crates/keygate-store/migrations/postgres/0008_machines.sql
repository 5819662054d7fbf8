-- Machine identities for CI/CD and servers (PostgreSQL): the policies that say which secrets
-- an identity may read, static machine credentials, and the short-lived machine tokens.
-- Credentials and tokens are kept as SHA-256 hashes only; policies hold names and globs.
CREATE TABLE machine_policies (
    name            TEXT PRIMARY KEY,
    secrets         TEXT NOT NULL,
    token_ttl_secs  BIGINT NOT NULL,
    any_version     BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);

CREATE TABLE machines (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    policy             TEXT NOT NULL,
    secret_hash        BYTEA NOT NULL,
    previous_hash      BYTEA,
    previous_until_ms  BIGINT,
    created_ms         BIGINT NOT NULL,
    rotated_ms         BIGINT
);

CREATE TABLE machine_tokens (
    hash        BYTEA PRIMARY KEY,
    identity    TEXT NOT NULL,
    policy      TEXT NOT NULL,
    claims      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX machine_tokens_expires ON machine_tokens (expires_ms);
CREATE INDEX machine_tokens_identity ON machine_tokens (identity);
