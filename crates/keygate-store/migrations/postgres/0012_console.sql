-- The operator console (PostgreSQL): its admin accounts (password + TOTP, a role) and their
-- browser sessions. A password is kept as its Argon2id PHC string, a TOTP seed sealed by
-- the vault, a session as the SHA-256 of its cookie value: nothing here signs anyone in.
CREATE TABLE console_admins (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    totp_sealed     BYTEA NOT NULL,
    totp_last_step  BIGINT,
    role            TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    disabled_ms     BIGINT
);

CREATE TABLE console_sessions (
    id_hash       BYTEA PRIMARY KEY,
    admin_id      TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL
);
CREATE INDEX console_sessions_admin ON console_sessions (admin_id);
CREATE INDEX console_sessions_expires ON console_sessions (expires_ms);
