-- The rest of what kuant records: results and curves, candles, the trading chain (signals,
-- orders, fills, blocks, positions), risk allocations, the double-entry ledger, wallets and
-- reconciliation runs, LLM telemetry. PostgreSQL. Money and quantities are NUMERIC (exact).
-- Every row of a run or session carries its run_id; the ids that agents generate are primary
-- keys, so a retried write keeps one row (writers use ON CONFLICT DO NOTHING).

ALTER TABLE runs ADD COLUMN status JSONB;
ALTER TABLE runs ADD COLUMN results JSONB;

-- Equity at each (kept) bar of a run.
CREATE TABLE equity_points (
    run_id   TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    at       TIMESTAMPTZ NOT NULL,
    equity   NUMERIC NOT NULL,
    PRIMARY KEY (run_id, at)
);

-- Round trips of a run.
CREATE TABLE trades (
    run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    symbol       TEXT NOT NULL,
    trade_no     INTEGER NOT NULL,
    entry_time   TIMESTAMPTZ NOT NULL,
    exit_time    TIMESTAMPTZ,
    entry_price  NUMERIC NOT NULL,
    exit_price   NUMERIC,
    quantity     NUMERIC NOT NULL,
    pnl          NUMERIC,
    fees         NUMERIC NOT NULL,
    PRIMARY KEY (run_id, symbol, trade_no)
);

-- Candles for market views and replay.
CREATE TABLE candles (
    exchange   TEXT NOT NULL,
    symbol     TEXT NOT NULL,
    timeframe  TEXT NOT NULL,
    open_time  TIMESTAMPTZ NOT NULL,
    open       NUMERIC NOT NULL,
    high       NUMERIC NOT NULL,
    low        NUMERIC NOT NULL,
    close      NUMERIC NOT NULL,
    volume     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (exchange, symbol, timeframe, open_time)
);

CREATE TABLE signals (
    signal_id       UUID PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  UUID NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
    strategy        TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    price           NUMERIC NOT NULL
);
CREATE INDEX signals_by_run_and_time ON signals (run_id, at);
CREATE INDEX signals_by_correlation ON signals (correlation_id);

-- The client order id is the idempotency key an exchange sees: unique, forever.
CREATE TABLE orders (
    client_order_id    TEXT PRIMARY KEY,
    run_id             TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id     UUID NOT NULL,
    exchange_order_id  TEXT,
    symbol             TEXT NOT NULL,
    side               TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type         TEXT NOT NULL,
    quantity           NUMERIC NOT NULL,
    limit_price        NUMERIC,
    status             TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_by_run_and_time ON orders (run_id, created_at);
CREATE INDEX orders_by_correlation ON orders (correlation_id);

CREATE TABLE fills (
    fill_id          TEXT PRIMARY KEY,
    client_order_id  TEXT NOT NULL REFERENCES orders (client_order_id) ON DELETE CASCADE,
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    at               TIMESTAMPTZ NOT NULL,
    price            NUMERIC NOT NULL,
    quantity         NUMERIC NOT NULL,
    fee              NUMERIC NOT NULL,
    fee_asset        TEXT NOT NULL
);
CREATE INDEX fills_by_run_and_time ON fills (run_id, at);
CREATE INDEX fills_by_order ON fills (client_order_id);

-- A trade that did not happen, and why.
CREATE TABLE block_events (
    event_id        UUID PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  UUID NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
    reason          TEXT NOT NULL,
    detail          TEXT NOT NULL
);
CREATE INDEX block_events_by_run_and_time ON block_events (run_id, at);

CREATE TABLE positions (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    symbol      TEXT NOT NULL,
    quantity    NUMERIC NOT NULL,
    avg_price   NUMERIC,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, symbol)
);

CREATE TABLE position_snapshots (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    symbol      TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    quantity    NUMERIC NOT NULL,
    avg_price   NUMERIC,
    mark_price  NUMERIC,
    PRIMARY KEY (run_id, symbol, at)
);

-- Budget claimed by an intent, used by its fill, released when it ends.
CREATE TABLE risk_allocations (
    allocation_id   UUID PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  UUID NOT NULL,
    amount          NUMERIC NOT NULL CHECK (amount >= 0),
    state           TEXT NOT NULL CHECK (state IN ('claimed', 'used', 'released')),
    claimed_at      TIMESTAMPTZ NOT NULL,
    used_at         TIMESTAMPTZ,
    released_at     TIMESTAMPTZ
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
    tx_id           UUID PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    correlation_id  UUID,
    at              TIMESTAMPTZ NOT NULL,
    memo            TEXT NOT NULL
);
CREATE INDEX ledger_transactions_by_run_and_time ON ledger_transactions (run_id, at);

CREATE TABLE ledger_entries (
    tx_id       UUID NOT NULL REFERENCES ledger_transactions (tx_id) ON DELETE CASCADE,
    line_no     INTEGER NOT NULL,
    account_id  TEXT NOT NULL REFERENCES ledger_accounts (account_id),
    amount      NUMERIC NOT NULL,
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
    recon_id     UUID PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    result       TEXT CHECK (result IN ('in-sync', 'drifted', 'failed'))
);
CREATE INDEX reconciliation_runs_by_run_and_time ON reconciliation_runs (run_id, started_at);

CREATE TABLE reconciliation_drifts (
    recon_id          UUID NOT NULL REFERENCES reconciliation_runs (recon_id) ON DELETE CASCADE,
    asset             TEXT NOT NULL,
    ledger_balance    NUMERIC NOT NULL,
    exchange_balance  NUMERIC NOT NULL,
    drift             NUMERIC NOT NULL,
    PRIMARY KEY (recon_id, asset)
);

CREATE TABLE llm_calls (
    call_id     UUID PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    agent       TEXT NOT NULL,
    model       TEXT NOT NULL,
    tokens_in   INTEGER NOT NULL CHECK (tokens_in >= 0),
    tokens_out  INTEGER NOT NULL CHECK (tokens_out >= 0),
    cost        NUMERIC NOT NULL CHECK (cost >= 0),
    latency_ms  INTEGER NOT NULL CHECK (latency_ms >= 0),
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX llm_calls_by_run_and_time ON llm_calls (run_id, at);
