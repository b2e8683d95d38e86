-- What the ops API filters runs by: the strategy and the symbols of a run's spec, kept beside the
-- spec by the writer so that a filter is an index lookup, not a scan of JSON. PostgreSQL.

ALTER TABLE runs ADD COLUMN strategy TEXT;
CREATE INDEX runs_by_strategy ON runs (strategy);

CREATE TABLE run_symbols (
    run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    symbol  TEXT NOT NULL,
    PRIMARY KEY (run_id, symbol)
);
CREATE INDEX run_symbols_by_symbol ON run_symbols (symbol);

-- Runs list newest first, paged by (created_at, run_id).
CREATE INDEX runs_by_time ON runs (created_at DESC, run_id);
