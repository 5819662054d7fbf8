-- Monitor alerts (sqlite): one row per action the monitor took (or alert it raised),
-- with the evidence as JSON. Evidence holds counts, rates, prefixes and countries, never
-- a token or a key.
CREATE TABLE alerts (
    id         TEXT PRIMARY KEY,
    incident   TEXT NOT NULL,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    action     TEXT NOT NULL,
    step       INTEGER NOT NULL,
    evidence   TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    acked_ms   INTEGER,
    acked_by   TEXT
);
CREATE INDEX alerts_created ON alerts (created_ms);
