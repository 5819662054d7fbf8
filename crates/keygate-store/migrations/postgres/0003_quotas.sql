-- Proxy quota counters (PostgreSQL): one row per (limit key, window).
CREATE TABLE quota_counters (
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end   BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
