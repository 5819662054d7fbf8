-- Token service (PostgreSQL). Timestamps are Unix milliseconds; hashes are SHA-256.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    scopes         TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    disabled_ms    BIGINT,
    totp_sealed    BYTEA,
    totp_last_step BIGINT,
    issuer         TEXT,
    subject        TEXT,
    UNIQUE (issuer, subject)
);

CREATE TABLE clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    secret_hash   BYTEA,
    redirect_uris TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    removed_ms    BIGINT
);

CREATE TABLE auth_codes (
    hash         BYTEA PRIMARY KEY,
    client_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    challenge    TEXT NOT NULL,
    dpop_jkt     TEXT,
    expires_ms   BIGINT NOT NULL,
    used_ms      BIGINT,
    family_id    TEXT
);

CREATE TABLE refresh_families (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    jkt                 TEXT,
    scopes              TEXT NOT NULL,
    created_ms          BIGINT NOT NULL,
    last_used_ms        BIGINT NOT NULL,
    generation          BIGINT NOT NULL,
    previous_generation BIGINT,
    rotated_ms          BIGINT,
    revoked_ms          BIGINT,
    revoke_reason       TEXT
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    hash       BYTEA PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES refresh_families (id),
    generation BIGINT NOT NULL,
    issued_ms  BIGINT NOT NULL
);

-- Private keys are sealed by the vault, like secret values.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    sealed_private BYTEA NOT NULL,
    state          TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    changed_ms     BIGINT NOT NULL
);

CREATE TABLE dpop_replay (
    key        BYTEA PRIMARY KEY,
    expires_ms BIGINT NOT NULL
);
