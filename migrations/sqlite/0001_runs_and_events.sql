-- kuant's first schema, SQLite dialect (the local store): the same tables and keys as
-- migrations/postgres/0001_runs_and_events.sql. JSON is TEXT holding JSON, times are TEXT in
-- RFC 3339 UTC, UUIDs are TEXT.

CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('backtest', 'session', 'reconciliation')),
    namespace     TEXT,
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL CHECK (json_valid(spec)),
    phase         TEXT NOT NULL DEFAULT 'Pending',
    started_at    TEXT,
    finished_at   TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX runs_by_kind_and_time ON runs (kind, created_at DESC);

CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    source          TEXT NOT NULL,
    occurred_at     TEXT NOT NULL,
    payload         TEXT NOT NULL CHECK (json_valid(payload))
);

CREATE INDEX events_by_run_and_time ON events (run_id, occurred_at);
CREATE INDEX events_by_correlation ON events (correlation_id);
CREATE INDEX events_by_type ON events (run_id, event_type);
