-- A paper account's balances, per session and asset: what a paper session's "exchange" holds,
-- so a reconciliation reads them as it reads a real exchange's. One row per asset, replaced only
-- by a newer state.
CREATE TABLE paper_balances (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    asset       TEXT NOT NULL,
    free        TEXT NOT NULL,
    locked      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, asset)
);
