-- What a reconciliation run compared against and how it explained its drift: the threshold it
-- judged by, the exchange's trades the ledger lacks (JSON), a summary, and per asset whether the
-- drift was within the threshold.
ALTER TABLE reconciliation_runs ADD COLUMN threshold_absolute NUMERIC;
ALTER TABLE reconciliation_runs ADD COLUMN threshold_relative_pct DOUBLE PRECISION;
ALTER TABLE reconciliation_runs ADD COLUMN explanation TEXT;
ALTER TABLE reconciliation_runs ADD COLUMN message TEXT;
ALTER TABLE reconciliation_drifts ADD COLUMN within_threshold BOOLEAN;
