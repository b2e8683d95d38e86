-- The rest of what kuant records: results and curves, candles, the trading chain (signals,
-- orders, fills, blocks, positions), risk allocations, the double-entry ledger, wallets and
-- reconciliation runs, LLM telemetry. SQLite dialect of migrations/postgres/0002: the same tables,
-- columns and keys. Money and quantities are TEXT decimal strings (exact), times INTEGER Unix
-- milliseconds, UUIDs TEXT, JSON TEXT.
-- Every row of a run or session carries its run_id; the ids that agents generate are primary
-- keys, so a retried write keeps one row (writers use ON CONFLICT DO NOTHING).

ALTER TABLE runs ADD COLUMN status TEXT CHECK (status IS NULL OR json_valid(status));
ALTER TABLE runs ADD COLUMN results TEXT CHECK (results IS NULL OR json_valid(results));

-- Equity at each (kept) bar of a run.
CREATE TABLE equity_points (
    run_id   TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    equity   TEXT NOT NULL,
    PRIMARY KEY (run_id, at)
);

-- Round trips of a run.
CREATE TABLE trades (
    run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    symbol       TEXT NOT NULL,
    trade_no     INTEGER NOT NULL,
    entry_time   INTEGER NOT NULL,
    exit_time    INTEGER,
    entry_price  TEXT NOT NULL,
    exit_price   TEXT,
    quantity     TEXT NOT NULL,
    pnl          TEXT,
    fees         TEXT NOT NULL,
    PRIMARY KEY (run_id, symbol, trade_no)
);

-- Candles for market views and replay.
CREATE TABLE candles (
    exchange   TEXT NOT NULL,
    symbol     TEXT NOT NULL,
    timeframe  TEXT NOT NULL,
    open_time  INTEGER NOT NULL,
    open       TEXT NOT NULL,
    high       TEXT NOT NULL,
    low        TEXT NOT NULL,
    close      TEXT NOT NULL,
    volume     REAL NOT NULL,
    PRIMARY KEY (exchange, symbol, timeframe, open_time)
);

CREATE TABLE signals (
    signal_id       TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  TEXT NOT NULL,
    at              INTEGER NOT NULL,
    strategy        TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    price           TEXT NOT NULL
);
CREATE INDEX signals_by_run_and_time ON signals (run_id, at);
CREATE INDEX signals_by_correlation ON signals (correlation_id);

-- The client order id is the idempotency key an exchange sees: unique, forever.
CREATE TABLE orders (
    client_order_id    TEXT PRIMARY KEY,
    run_id             TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id     TEXT NOT NULL,
    exchange_order_id  TEXT,
    symbol             TEXT NOT NULL,
    side               TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type         TEXT NOT NULL,
    quantity           TEXT NOT NULL,
    limit_price        TEXT,
    status             TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX orders_by_run_and_time ON orders (run_id, created_at);
CREATE INDEX orders_by_correlation ON orders (correlation_id);

CREATE TABLE fills (
    fill_id          TEXT PRIMARY KEY,
    client_order_id  TEXT NOT NULL REFERENCES orders (client_order_id) ON DELETE CASCADE,
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    at               INTEGER NOT NULL,
    price            TEXT NOT NULL,
    quantity         TEXT NOT NULL,
    fee              TEXT NOT NULL,
    fee_asset        TEXT NOT NULL
);
CREATE INDEX fills_by_run_and_time ON fills (run_id, at);
CREATE INDEX fills_by_order ON fills (client_order_id);

-- A trade that did not happen, and why.
CREATE TABLE block_events (
    event_id        TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  TEXT NOT NULL,
    at              INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    detail          TEXT NOT NULL
);
CREATE INDEX block_events_by_run_and_time ON block_events (run_id, at);

CREATE TABLE positions (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    symbol      TEXT NOT NULL,
    quantity    TEXT NOT NULL,
    avg_price   TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, symbol)
);

CREATE TABLE position_snapshots (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    symbol      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    quantity    TEXT NOT NULL,
    avg_price   TEXT,
    mark_price  TEXT,
    PRIMARY KEY (run_id, symbol, at)
);

-- Budget claimed by an intent, used by its fill, released when it ends.
CREATE TABLE risk_allocations (
    allocation_id   TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  TEXT NOT NULL,
    amount          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('claimed', 'used', 'released')),
    claimed_at      INTEGER NOT NULL,
    used_at         INTEGER,
    released_at     INTEGER
);
CREATE INDEX risk_allocations_by_run_and_state ON risk_allocations (run_id, state);

-- The double-entry ledger: every transaction's lines must sum to zero per asset; the ledger
-- writer (not yet built) checks it before it commits a transaction.
CREATE TABLE ledger_accounts (
    account_id  TEXT PRIMARY KEY,
    run_id      TEXT REFERENCES runs (run_id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    asset       TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('asset', 'liability', 'equity', 'income', 'expense'))
);

CREATE TABLE ledger_transactions (
    tx_id           TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  TEXT,
    at              INTEGER NOT NULL,
    memo            TEXT NOT NULL
);
CREATE INDEX ledger_transactions_by_run_and_time ON ledger_transactions (run_id, at);

CREATE TABLE ledger_entries (
    tx_id       TEXT NOT NULL REFERENCES ledger_transactions (tx_id) ON DELETE CASCADE,
    line_no     INTEGER NOT NULL,
    account_id  TEXT NOT NULL REFERENCES ledger_accounts (account_id),
    amount      TEXT NOT NULL,
    PRIMARY KEY (tx_id, line_no)
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id);

CREATE TABLE wallets (
    wallet_id  TEXT PRIMARY KEY,
    exchange   TEXT NOT NULL,
    account    TEXT NOT NULL,
    asset      TEXT NOT NULL,
    UNIQUE (exchange, account, asset)
);

CREATE TABLE reconciliation_runs (
    recon_id     TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    result       TEXT CHECK (result IN ('in-sync', 'drifted', 'failed'))
);
CREATE INDEX reconciliation_runs_by_run_and_time ON reconciliation_runs (run_id, started_at);

CREATE TABLE reconciliation_drifts (
    recon_id          TEXT NOT NULL REFERENCES reconciliation_runs (recon_id) ON DELETE CASCADE,
    asset             TEXT NOT NULL,
    ledger_balance    TEXT NOT NULL,
    exchange_balance  TEXT NOT NULL,
    drift             TEXT NOT NULL,
    PRIMARY KEY (recon_id, asset)
);

CREATE TABLE llm_calls (
    call_id     TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    agent       TEXT NOT NULL,
    model       TEXT NOT NULL,
    tokens_in   INTEGER NOT NULL CHECK (tokens_in >= 0),
    tokens_out  INTEGER NOT NULL CHECK (tokens_out >= 0),
    cost        TEXT NOT NULL,
    latency_ms  INTEGER NOT NULL CHECK (latency_ms >= 0),
    at          INTEGER NOT NULL
);
CREATE INDEX llm_calls_by_run_and_time ON llm_calls (run_id, at);
