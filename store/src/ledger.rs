//! The double-entry ledger, wallets, and reconciliation runs with per-asset drift.
//!
//! Every ledger transaction's lines sum to zero per asset; [`Store::post`] refuses one that does
//! not, before anything is written. Balances are summed in exact decimals, never in floats.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::Store;
use crate::sql::{BeginWrite, bound, decimal, insert_each, render, with_pool};

/// What an account is, in double-entry terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    /// What is held (exchange balances, cash).
    Asset,
    /// What is owed.
    Liability,
    /// Capital put in.
    Equity,
    /// Realised gains.
    Income,
    /// Fees, losses.
    Expense,
}

impl AccountKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Asset => "asset",
            Self::Liability => "liability",
            Self::Equity => "equity",
            Self::Income => "income",
            Self::Expense => "expense",
        }
    }
}

/// A ledger account: one asset, one kind.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerAccount {
    /// Its id, e.g. `s-1:binance:spot:USDT`.
    pub account_id: String,
    /// The run it belongs to (absent for an account shared by runs).
    pub run_id: Option<String>,
    /// What a person reads.
    pub name: String,
    /// The asset it counts.
    pub asset: String,
    /// Its kind.
    pub kind: AccountKind,
}

/// A ledger transaction: lines that sum to zero per asset.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerTransaction {
    /// Its id (a UUID): posting it twice keeps one.
    pub tx_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The chain that caused it (a UUID), if any.
    pub correlation_id: Option<String>,
    /// When, Unix ms.
    pub at_ms: i64,
    /// What it was (`fill kq… buy 0.1 BTC @ 42000`).
    pub memo: String,
    /// `(account id, amount)`: positive debits, negative credits.
    pub lines: Vec<(String, Decimal)>,
}

/// Why a ledger transaction was refused.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// It has no lines.
    #[error("ledger transaction {0} has no lines")]
    Empty(String),
    /// A line names an account that does not exist.
    #[error("ledger transaction {tx_id} names unknown account {account_id:?}")]
    UnknownAccount {
        /// The transaction.
        tx_id: String,
        /// The account.
        account_id: String,
    },
    /// Its lines do not sum to zero in an asset.
    #[error("ledger transaction {tx_id} does not balance: its {asset} lines sum to {sum}, not 0")]
    Unbalanced {
        /// The transaction.
        tx_id: String,
        /// The asset.
        asset: String,
        /// What they sum to.
        sum: Decimal,
    },
    /// The database failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// An exchange wallet: one asset of one account on one exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct Wallet {
    /// Its id.
    pub wallet_id: String,
    /// Exchange.
    pub exchange: String,
    /// Account on the exchange (`spot`, a sub-account, …).
    pub account: String,
    /// Asset.
    pub asset: String,
}

/// How a reconciliation came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconciliationResult {
    /// Ledger and exchange agree within tolerance.
    InSync,
    /// They differ in at least one asset.
    Drifted,
    /// The exchange could not be read.
    Failed,
}

impl ReconciliationResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::InSync => "in-sync",
            Self::Drifted => "drifted",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "in-sync" => Ok(Self::InSync),
            "drifted" => Ok(Self::Drifted),
            "failed" => Ok(Self::Failed),
            other => Err(sqlx::Error::Decode(format!("unknown reconciliation result {other:?}").into())),
        }
    }
}

/// One asset of a reconciliation: what the ledger says, what the exchange says.
#[derive(Clone, Debug, PartialEq)]
pub struct Drift {
    /// Asset.
    pub asset: String,
    /// The ledger's balance.
    pub ledger_balance: Decimal,
    /// The exchange's balance.
    pub exchange_balance: Decimal,
    /// Whether the drift was within the run's threshold (absent in runs recorded before
    /// thresholds were).
    pub within_threshold: Option<bool>,
}

impl Drift {
    /// Exchange minus ledger: positive when the exchange holds more than the ledger knows.
    pub fn drift(&self) -> Decimal {
        self.exchange_balance - self.ledger_balance
    }
}

/// A reconciliation run.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconciliationRun {
    /// Its id (a UUID).
    pub recon_id: String,
    /// The Reconciliation (or session) it belongs to.
    pub run_id: String,
    /// Started, Unix ms.
    pub started_at_ms: i64,
    /// Finished, Unix ms.
    pub finished_at_ms: Option<i64>,
    /// How it came out, once finished.
    pub result: Option<ReconciliationResult>,
    /// Per asset.
    pub drifts: Vec<Drift>,
    /// The threshold it judged by: an absolute amount per asset, and a percentage of the
    /// exchange balance.
    pub threshold: Option<(Decimal, f64)>,
    /// The exchange's trades the ledger lacks (JSON), which explain the drift.
    pub explanation: Option<serde_json::Value>,
    /// A summary: which assets drifted, or why the run failed.
    pub message: Option<String>,
}

/// One asset of a paper account: what a paper session's "exchange" holds.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperBalance {
    /// Asset.
    pub asset: String,
    /// Available.
    pub free: Decimal,
    /// Held by open orders.
    pub locked: Decimal,
    /// As of, Unix ms.
    pub at_ms: i64,
}

type ReconRow = (
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<String>,
);
type PaperRow = (String, String, String, i64);

impl Store {
    /// Opens `account`, or leaves it as it is when it exists. Returns whether it was new.
    pub async fn open_account(&self, account: &LedgerAccount) -> Result<bool, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO ledger_accounts (account_id, run_id, name, asset, kind) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account_id) DO NOTHING",
        );
        let n = with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&account.account_id)
                .bind(&account.run_id)
                .bind(&account.name)
                .bind(&account.asset)
                .bind(account.kind.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Posts `tx` atomically after checking that its lines sum to zero per asset and name known
    /// accounts. Posting the same transaction id again writes nothing and returns false.
    pub async fn post(&self, tx: &LedgerTransaction) -> Result<bool, LedgerError> {
        if tx.lines.is_empty() {
            return Err(LedgerError::Empty(tx.tx_id.clone()));
        }
        let asset_of = render(self.backend(), "SELECT asset FROM ledger_accounts WHERE account_id = $1");
        let header = render(
            self.backend(),
            "INSERT INTO ledger_transactions (tx_id, run_id, correlation_id, at, memo)
             VALUES ({uuid $1}, $2, {uuid $3}, {ts $4}, $5) ON CONFLICT (tx_id) DO NOTHING",
        );
        let line = render(
            self.backend(),
            "INSERT INTO ledger_entries (tx_id, line_no, account_id, amount) VALUES ({uuid $1}, $2, $3, {num $4})",
        );
        with_pool!(self, pool => {
            let mut db = pool.begin_write().await?;
            let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
            for (account_id, amount) in &tx.lines {
                let asset: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(asset_of.0.clone()))
                    .bind(account_id)
                    .fetch_optional(&mut *db)
                    .await?;
                let asset = asset.ok_or_else(|| LedgerError::UnknownAccount {
                    tx_id: tx.tx_id.clone(),
                    account_id: account_id.clone(),
                })?;
                *sums.entry(asset).or_default() += *amount;
            }
            if let Some((asset, sum)) = sums.into_iter().find(|(_, sum)| !sum.is_zero()) {
                return Err(LedgerError::Unbalanced { tx_id: tx.tx_id.clone(), asset, sum });
            }
            let new = sqlx::query(header)
                .bind(&tx.tx_id)
                .bind(&tx.run_id)
                .bind(&tx.correlation_id)
                .bind(tx.at_ms)
                .bind(&tx.memo)
                .execute(&mut *db)
                .await?
                .rows_affected();
            if new == 0 {
                return Ok(false);
            }
            for (line_no, (account_id, amount)) in (1_i64..).zip(&tx.lines) {
                sqlx::query(sqlx::AssertSqlSafe(line.0.clone()))
                    .bind(&tx.tx_id)
                    .bind(line_no)
                    .bind(account_id)
                    .bind(amount.to_string())
                    .execute(&mut *db)
                    .await?;
            }
            db.commit().await?;
        });
        Ok(true)
    }

    /// The balance of every account of `run_id` (and of the shared accounts its transactions
    /// touch), as of `until_ms` inclusive: `(account id, asset, balance)`, by account id.
    pub async fn balances(
        &self,
        run_id: &str,
        until_ms: i64,
    ) -> Result<Vec<(String, String, Decimal)>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT e.account_id, a.asset, {text e.amount}
             FROM ledger_entries e
             JOIN ledger_transactions t ON t.tx_id = e.tx_id
             JOIN ledger_accounts a ON a.account_id = e.account_id
             WHERE t.run_id = $1 AND t.at <= {ts $2}",
        );
        let rows: Vec<(String, String, String)> = with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).bind(bound(until_ms)).fetch_all(pool).await?);
        let mut balances: BTreeMap<String, (String, Decimal)> = BTreeMap::new();
        for (account_id, asset, amount) in rows {
            balances.entry(account_id).or_insert((asset, Decimal::ZERO)).1 += decimal("amount", &amount)?;
        }
        Ok(balances.into_iter().map(|(account, (asset, balance))| (account, asset, balance)).collect())
    }

    /// Records a paper account's balances of session `run_id`; an asset's row is replaced only
    /// by a newer state (a late write never undoes a newer one). Returns how many rows changed.
    pub async fn record_paper_balances(
        &self,
        run_id: &str,
        balances: &[PaperBalance],
    ) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO paper_balances (run_id, asset, free, locked, updated_at)
             VALUES ($1, $2, {num $3}, {num $4}, {ts $5})
             ON CONFLICT (run_id, asset) DO UPDATE
               SET free = excluded.free, locked = excluded.locked, updated_at = excluded.updated_at
               WHERE paper_balances.updated_at < excluded.updated_at",
        );
        Ok(insert_each!(self, sql, balances, |q, b| q
            .bind(run_id)
            .bind(&b.asset)
            .bind(b.free.to_string())
            .bind(b.locked.to_string())
            .bind(bound(b.at_ms))))
    }

    /// The paper account's balances of session `run_id`, by asset (none: no paper account).
    pub async fn paper_balances(&self, run_id: &str) -> Result<Vec<PaperBalance>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT asset, {text free}, {text locked}, {ms updated_at}
             FROM paper_balances WHERE run_id = $1 ORDER BY asset",
        );
        let rows: Vec<PaperRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(asset, free, locked, at_ms)| {
                Ok(PaperBalance {
                    asset,
                    free: decimal("free", &free)?,
                    locked: decimal("locked", &locked)?,
                    at_ms,
                })
            })
            .collect()
    }

    /// Registers `wallet`, or leaves it when the same exchange, account and asset exist.
    /// Returns whether it was new.
    pub async fn register_wallet(&self, wallet: &Wallet) -> Result<bool, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO wallets (wallet_id, exchange, account, asset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        );
        let n = with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&wallet.wallet_id)
                .bind(&wallet.exchange)
                .bind(&wallet.account)
                .bind(&wallet.asset)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// The wallets on `exchange`, by account and asset.
    pub async fn wallets(&self, exchange: &str) -> Result<Vec<Wallet>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT wallet_id, exchange, account, asset FROM wallets WHERE exchange = $1 ORDER BY account, asset",
        );
        let rows: Vec<(String, String, String, String)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(exchange).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .map(|(wallet_id, exchange, account, asset)| Wallet { wallet_id, exchange, account, asset })
            .collect())
    }

    /// Records a reconciliation run and its drifts in one transaction. Recording the same id
    /// again changes nothing and returns false.
    pub async fn record_reconciliation(&self, recon: &ReconciliationRun) -> Result<bool, sqlx::Error> {
        let header = render(
            self.backend(),
            "INSERT INTO reconciliation_runs (recon_id, run_id, started_at, finished_at, result,
                 threshold_absolute, threshold_relative_pct, explanation, message)
             VALUES ({uuid $1}, $2, {ts $3}, {ts $4}, $5, {num $6}, $7, $8, $9) ON CONFLICT (recon_id) DO NOTHING",
        );
        let drift = render(
            self.backend(),
            "INSERT INTO reconciliation_drifts (recon_id, asset, ledger_balance, exchange_balance, drift, within_threshold)
             VALUES ({uuid $1}, $2, {num $3}, {num $4}, {num $5}, $6)",
        );
        with_pool!(self, pool => {
            let mut db = pool.begin_write().await?;
            let new = sqlx::query(header)
                .bind(&recon.recon_id)
                .bind(&recon.run_id)
                .bind(recon.started_at_ms)
                .bind(recon.finished_at_ms)
                .bind(recon.result.map(ReconciliationResult::as_str))
                .bind(recon.threshold.map(|t| t.0.to_string()))
                .bind(recon.threshold.map(|t| t.1))
                .bind(recon.explanation.as_ref().map(serde_json::Value::to_string))
                .bind(recon.message.as_deref())
                .execute(&mut *db)
                .await?
                .rows_affected();
            if new == 0 {
                return Ok(false);
            }
            for d in &recon.drifts {
                sqlx::query(sqlx::AssertSqlSafe(drift.0.clone()))
                    .bind(&recon.recon_id)
                    .bind(&d.asset)
                    .bind(d.ledger_balance.to_string())
                    .bind(d.exchange_balance.to_string())
                    .bind(d.drift().to_string())
                    .bind(d.within_threshold)
                    .execute(&mut *db)
                    .await?;
            }
            db.commit().await?;
        });
        Ok(true)
    }

    /// A run's reconciliations, newest first, at most `limit`, each with its drifts by asset.
    pub async fn reconciliations(
        &self,
        run_id: &str,
        limit: i64,
    ) -> Result<Vec<ReconciliationRun>, sqlx::Error> {
        let runs_sql = render(
            self.backend(),
            "SELECT {text recon_id}, run_id, {ms started_at}, {ms finished_at}, result,
                 {text threshold_absolute}, threshold_relative_pct, explanation, message
             FROM reconciliation_runs WHERE run_id = $1 ORDER BY started_at DESC, recon_id LIMIT $2",
        );
        let drifts_sql = render(
            self.backend(),
            "SELECT asset, {text ledger_balance}, {text exchange_balance}, within_threshold FROM reconciliation_drifts
             WHERE recon_id = {uuid $1} ORDER BY asset",
        );
        let mut out = Vec::new();
        with_pool!(self, pool => {
            let runs: Vec<ReconRow> =
                sqlx::query_as(runs_sql).bind(run_id).bind(limit).fetch_all(pool).await?;
            for (recon_id, run_id, started_at_ms, finished_at_ms, result, absolute, relative, explanation, message) in runs {
                let rows: Vec<(String, String, String, Option<bool>)> = sqlx::query_as(sqlx::AssertSqlSafe(drifts_sql.0.clone()))
                    .bind(&recon_id)
                    .fetch_all(pool)
                    .await?;
                let drifts = rows
                    .into_iter()
                    .map(|(asset, ledger, exchange, within_threshold)| {
                        Ok(Drift {
                            asset,
                            ledger_balance: decimal("ledger_balance", &ledger)?,
                            exchange_balance: decimal("exchange_balance", &exchange)?,
                            within_threshold,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                out.push(ReconciliationRun {
                    recon_id,
                    run_id,
                    started_at_ms,
                    finished_at_ms,
                    result: result.as_deref().map(ReconciliationResult::parse).transpose()?,
                    drifts,
                    threshold: match (absolute, relative) {
                        (Some(a), Some(r)) => Some((decimal("threshold_absolute", &a)?, r)),
                        _ => None,
                    },
                    explanation: explanation.and_then(|e| serde_json::from_str(&e).ok()),
                    message,
                });
            }
        });
        Ok(out)
    }
}
