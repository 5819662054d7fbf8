-- Proxy cost budgets (SQLite): metered cost per user, route and UTC day (days since
-- the Unix epoch). A month's spending is the sum of its days.
CREATE TABLE budget_spend (
    user_id TEXT NOT NULL,
    route   TEXT NOT NULL,
    day     INTEGER NOT NULL,
    spent   INTEGER NOT NULL,
    PRIMARY KEY (user_id, route, day)
);
