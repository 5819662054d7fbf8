-- keygate foundation schema (PostgreSQL). Timestamps are Unix milliseconds.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE admin_credentials (
    id         TEXT PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    label      TEXT NOT NULL
);

CREATE TABLE secrets (
    name            TEXT PRIMARY KEY,
    current_version BIGINT NOT NULL,
    max_versions    BIGINT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    deleted_ms      BIGINT
);

-- wrapped_key and ciphertext are NULL once a version is destroyed.
CREATE TABLE secret_versions (
    name         TEXT NOT NULL REFERENCES secrets (name),
    version      BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    wrapped_key  BYTEA,
    ciphertext   BYTEA,
    destroyed_ms BIGINT,
    PRIMARY KEY (name, version)
);

CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    ts_ms     BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    outcome   TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);

-- One row: the chain's head. Write transactions lock it (FOR UPDATE) to serialise appends
-- across replicas.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
