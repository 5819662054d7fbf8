-- Secret rotation schedules and webhook dead letters (PostgreSQL).
-- A schedule never holds a value: only timings, the hook's name and the last error text
-- (which the scheduler builds without the value).
CREATE TABLE rotation_schedules (
    secret             TEXT PRIMARY KEY,
    every_ms           BIGINT NOT NULL,
    overlap_ms         BIGINT NOT NULL,
    hook               TEXT NOT NULL,
    created_ms         BIGINT NOT NULL,
    last_rotated_ms    BIGINT,
    next_due_ms        BIGINT NOT NULL,
    previous_version   BIGINT,
    overlap_ends_ms    BIGINT,
    last_error         TEXT,
    last_error_ms      BIGINT,
    overdue_notified_ms BIGINT
);

-- Webhook deliveries that failed every attempt. The payload is not kept.
CREATE TABLE webhook_dead_letters (
    id          TEXT PRIMARY KEY,
    webhook     TEXT NOT NULL,
    event       TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    last_error  TEXT NOT NULL,
    failed_ms   BIGINT NOT NULL
);
CREATE INDEX webhook_dead_letters_failed ON webhook_dead_letters (failed_ms);
