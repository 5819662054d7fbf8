-- Secret rotation schedules and webhook dead letters (SQLite).
-- A schedule never holds a value: only timings, the hook's name and the last error text
-- (which the scheduler builds without the value).
CREATE TABLE rotation_schedules (
    secret             TEXT PRIMARY KEY,
    every_ms           INTEGER NOT NULL,
    overlap_ms         INTEGER NOT NULL,
    hook               TEXT NOT NULL,
    created_ms         INTEGER NOT NULL,
    last_rotated_ms    INTEGER,
    next_due_ms        INTEGER NOT NULL,
    previous_version   INTEGER,
    overlap_ends_ms    INTEGER,
    last_error         TEXT,
    last_error_ms      INTEGER,
    overdue_notified_ms INTEGER
);

-- Webhook deliveries that failed every attempt. The payload is not kept.
CREATE TABLE webhook_dead_letters (
    id          TEXT PRIMARY KEY,
    webhook     TEXT NOT NULL,
    event       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    failed_ms   INTEGER NOT NULL
);
CREATE INDEX webhook_dead_letters_failed ON webhook_dead_letters (failed_ms);
