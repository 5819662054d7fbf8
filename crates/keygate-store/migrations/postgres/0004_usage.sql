-- Proxy usage per minute (PostgreSQL): counts and latencies per user, route and status class.
CREATE TABLE usage_minutes (
    minute       BIGINT NOT NULL,
    user_id      TEXT NOT NULL,
    route        TEXT NOT NULL,
    status_class TEXT NOT NULL,
    calls        BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    latency_ms_max BIGINT NOT NULL,
    PRIMARY KEY (minute, user_id, route, status_class)
);
