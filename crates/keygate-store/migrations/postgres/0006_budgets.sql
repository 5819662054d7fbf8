-- Proxy cost budgets (PostgreSQL): metered cost per user, route and UTC day (days since
-- the Unix epoch). A month's spending is the sum of its days.
CREATE TABLE budget_spend (
    user_id TEXT NOT NULL,
    route   TEXT NOT NULL,
    day     BIGINT NOT NULL,
    spent   BIGINT NOT NULL,
    PRIMARY KEY (user_id, route, day)
);
