-- Proxy usage per minute (SQLite): counts and latencies per user, route and status class.
CREATE TABLE usage_minutes (
    minute       INTEGER NOT NULL,
    user_id      TEXT NOT NULL,
    route        TEXT NOT NULL,
    status_class TEXT NOT NULL,
    calls        INTEGER NOT NULL,
    latency_ms_sum INTEGER NOT NULL,
    latency_ms_max INTEGER NOT NULL,
    PRIMARY KEY (minute, user_id, route, status_class)
);
