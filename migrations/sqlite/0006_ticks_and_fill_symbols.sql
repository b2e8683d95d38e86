-- The SQLite side of migrations/postgres/0006: the latest tick of each market, replaced only by
-- a newer one. (Fill announcements are PostgreSQL's; SQLite has none.)
CREATE TABLE ticks (
    exchange  TEXT NOT NULL,
    symbol    TEXT NOT NULL,
    at        INTEGER NOT NULL,
    price     TEXT NOT NULL,
    bid       TEXT,
    ask       TEXT,
    PRIMARY KEY (exchange, symbol)
);
