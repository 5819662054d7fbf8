-- Proxy quota counters (SQLite): one row per (limit key, window).
CREATE TABLE quota_counters (
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
);
