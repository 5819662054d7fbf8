-- Token service (SQLite). Timestamps are Unix milliseconds; hashes are SHA-256.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    scopes         TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    disabled_ms    INTEGER,
    totp_sealed    BLOB,
    totp_last_step INTEGER,
    issuer         TEXT,
    subject        TEXT,
    UNIQUE (issuer, subject)
);

CREATE TABLE clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    secret_hash   BLOB,
    redirect_uris TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    removed_ms    INTEGER
);

CREATE TABLE auth_codes (
    hash         BLOB PRIMARY KEY,
    client_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    challenge    TEXT NOT NULL,
    dpop_jkt     TEXT,
    expires_ms   INTEGER NOT NULL,
    used_ms      INTEGER,
    family_id    TEXT
);

CREATE TABLE refresh_families (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    jkt                 TEXT,
    scopes              TEXT NOT NULL,
    created_ms          INTEGER NOT NULL,
    last_used_ms        INTEGER NOT NULL,
    generation          INTEGER NOT NULL,
    previous_generation INTEGER,
    rotated_ms          INTEGER,
    revoked_ms          INTEGER,
    revoke_reason       TEXT
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES refresh_families (id),
    generation INTEGER NOT NULL,
    issued_ms  INTEGER NOT NULL
);

-- Private keys are sealed by the vault, like secret values.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    sealed_private BLOB NOT NULL,
    state          TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    changed_ms     INTEGER NOT NULL
);

CREATE TABLE dpop_replay (
    key        BLOB PRIMARY KEY,
    expires_ms INTEGER NOT NULL
);
