-- keygate foundation schema (SQLite). Timestamps are Unix milliseconds.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE admin_credentials (
    id         TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    label      TEXT NOT NULL
);

CREATE TABLE secrets (
    name            TEXT PRIMARY KEY,
    current_version INTEGER NOT NULL,
    max_versions    INTEGER,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    deleted_ms      INTEGER
);

-- wrapped_key and ciphertext are NULL once a version is destroyed.
CREATE TABLE secret_versions (
    name         TEXT NOT NULL REFERENCES secrets (name),
    version      INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    wrapped_key  BLOB,
    ciphertext   BLOB,
    destroyed_ms INTEGER,
    PRIMARY KEY (name, version)
);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    ts_ms     INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    outcome   TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);

-- One row: the chain's head. Write transactions lock it to serialise appends.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
