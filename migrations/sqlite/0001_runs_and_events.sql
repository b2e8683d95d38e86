-- kuant's first schema, SQLite dialect (the local store): the same tables and keys as
-- migrations/postgres/0001_runs_and_events.sql. JSON is TEXT holding JSON, times are INTEGER
-- milliseconds since the Unix epoch (UTC), UUIDs are TEXT.

CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('backtest', 'session', 'reconciliation')),
    namespace     TEXT,
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL CHECK (json_valid(spec)),
    phase         TEXT NOT NULL DEFAULT 'Pending',
    started_at    INTEGER,
    finished_at   INTEGER,
    created_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
);

CREATE INDEX runs_by_kind_and_time ON runs (kind, created_at DESC);

CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    source          TEXT NOT NULL,
    occurred_at     INTEGER NOT NULL,
    payload         TEXT NOT NULL CHECK (json_valid(payload))
);

CREATE INDEX events_by_run_and_time ON events (run_id, occurred_at);
CREATE INDEX events_by_correlation ON events (correlation_id);
CREATE INDEX events_by_type ON events (run_id, event_type);
