-- kuant's first schema: the runs (backtests and sessions) and the event chain every agent writes.
-- PostgreSQL. Applied in file-name order (sqlx's convention: <version>_<name>.sql).

-- One row per Backtest run or TradingSession, keyed by the id every event carries.
CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('backtest', 'session', 'reconciliation')),
    namespace     TEXT,
    name          TEXT NOT NULL,
    -- The manifest's spec as applied, so a run can be compared with or repeated from its inputs.
    spec          JSONB NOT NULL,
    phase         TEXT NOT NULL DEFAULT 'Pending',
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX runs_by_kind_and_time ON runs (kind, created_at DESC);

-- The event chain: market data → signal → intent → plan_judged → order_submitted → fill |
-- trade_blocked. event_id is the primary key so that persisting an event twice (a retry, a
-- restarted agent replaying its outbox) never duplicates it: writers use ON CONFLICT DO NOTHING.
CREATE TABLE events (
    event_id        UUID PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  UUID NOT NULL,
    event_type      TEXT NOT NULL,
    source          TEXT NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    payload         JSONB NOT NULL
);

CREATE INDEX events_by_run_and_time ON events (run_id, occurred_at);
CREATE INDEX events_by_correlation ON events (correlation_id);
CREATE INDEX events_by_type ON events (run_id, event_type);
