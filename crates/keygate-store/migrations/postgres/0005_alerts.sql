-- Monitor alerts (postgres): one row per action the monitor took (or alert it raised),
-- with the evidence as JSON. Evidence holds counts, rates, prefixes and countries, never
-- a token or a key.
CREATE TABLE alerts (
    id         TEXT PRIMARY KEY,
    incident   TEXT NOT NULL,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    action     TEXT NOT NULL,
    step       BIGINT NOT NULL,
    evidence   TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    acked_ms   BIGINT,
    acked_by   TEXT
);
CREATE INDEX alerts_created ON alerts (created_ms);
