//! Runs (Backtests, TradingSessions, Reconciliations), their equity curves and their trades.

use rust_decimal::Decimal;
use sqlx::types::Json;

use crate::Store;
use crate::sql::{
    BATCH_ROWS, BeginWrite, Casts, PG_ARRAY_BATCH_ROWS, bound, builder, decimal, decimal_opt, render,
    with_pool,
};

/// What a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// A Backtest.
    Backtest,
    /// A TradingSession.
    Session,
    /// A Reconciliation.
    Reconciliation,
}

impl RunKind {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backtest => "backtest",
            Self::Session => "session",
            Self::Reconciliation => "reconciliation",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "backtest" => Ok(Self::Backtest),
            "session" => Ok(Self::Session),
            "reconciliation" => Ok(Self::Reconciliation),
            other => Err(sqlx::Error::Decode(format!("unknown run kind {other:?}").into())),
        }
    }
}

/// A run (a Backtest, a TradingSession or a Reconciliation), keyed by the id its events carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The run's id.
    pub run_id: String,
    /// What it is.
    pub kind: RunKind,
    /// Namespace of its resource (absent for a local run).
    pub namespace: Option<String>,
    /// Name of its resource.
    pub name: String,
    /// The spec it ran with.
    pub spec: serde_json::Value,
    /// Its phase.
    pub phase: String,
}

/// Which runs [`Store::list_runs`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    /// Only runs of this kind.
    pub kind: Option<RunKind>,
    /// Only runs in this phase.
    pub phase: Option<String>,
    /// Only runs of this strategy (`spec.strategy.name`).
    pub strategy: Option<String>,
    /// Only runs that trade this symbol (`spec.market.symbols`).
    pub symbol: Option<String>,
    /// Only runs after this cursor (see [`StoredRun::cursor`]).
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: i64,
}

impl Run {
    /// The strategy its spec names (`spec.strategy.name`), if any.
    pub fn strategy(&self) -> Option<&str> {
        self.spec.pointer("/strategy/name").and_then(serde_json::Value::as_str)
    }

    /// The symbols its spec trades (`spec.market.symbols`).
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.spec
            .pointer("/market/symbols")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
    }
}

/// A run as stored, with what it ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRun {
    /// The run.
    pub run: Run,
    /// Its last status (the resource's `.status`, or the local equivalent).
    pub status: Option<serde_json::Value>,
    /// Its results (metrics), once it has them.
    pub results: Option<serde_json::Value>,
    /// When it was first recorded, Unix ms.
    pub created_at_ms: i64,
    /// When it finished, Unix ms.
    pub finished_at_ms: Option<i64>,
}

/// A round trip of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTrade {
    /// Symbol.
    pub symbol: String,
    /// Its number within the run and symbol, from 1.
    pub trade_no: i64,
    /// Entry time, Unix ms.
    pub entry_time_ms: i64,
    /// Exit time, Unix ms (absent while open).
    pub exit_time_ms: Option<i64>,
    /// Entry price.
    pub entry_price: Decimal,
    /// Exit price.
    pub exit_price: Option<Decimal>,
    /// Base quantity.
    pub quantity: Decimal,
    /// Profit or loss after fees (absent while open).
    pub pnl: Option<Decimal>,
    /// Fees paid.
    pub fees: Decimal,
}

type RunRow = (
    String,
    String,
    Option<String>,
    String,
    Json<serde_json::Value>,
    String,
    Option<Json<serde_json::Value>>,
    Option<Json<serde_json::Value>>,
    i64,
    Option<i64>,
);

const RUN_COLUMNS: &str =
    "run_id, kind, namespace, name, spec, phase, status, results, {ms created_at}, {ms finished_at}";

type TradeRow = (String, i64, i64, Option<i64>, String, Option<String>, String, Option<String>, String);

impl Store {
    /// Records `run`, or updates its phase when it is already there.
    pub async fn upsert_run(&self, run: &Run) -> Result<(), sqlx::Error> {
        self.write_run(run, false).await
    }

    /// Records `run` afresh: a run already stored under its id is deleted first, with everything
    /// that belongs to it (events, curve, trades, orders, …), in one transaction. A deterministic
    /// run that is run again (a backtest re-run with other parameters, a retried Job) then never
    /// mixes its outputs with the last run's.
    pub async fn reset_run(&self, run: &Run) -> Result<(), sqlx::Error> {
        self.write_run(run, true).await
    }

    /// One transaction: the old run deleted when `replace`, then the run (its phase updated when
    /// it is there) and its symbols.
    async fn write_run(&self, run: &Run, replace: bool) -> Result<(), sqlx::Error> {
        let delete = render(self.backend(), "DELETE FROM runs WHERE run_id = $1");
        let upsert = render(
            self.backend(),
            "INSERT INTO runs (run_id, kind, namespace, name, spec, phase, strategy, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, {now}, {now})
             ON CONFLICT (run_id) DO UPDATE SET phase = excluded.phase, updated_at = excluded.updated_at",
        );
        let symbols = render(
            self.backend(),
            "INSERT INTO run_symbols (run_id, symbol) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        );
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if replace {
                sqlx::query(delete).bind(&run.run_id).execute(&mut *tx).await?;
            }
            sqlx::query(upsert)
                .bind(&run.run_id)
                .bind(run.kind.as_str())
                .bind(&run.namespace)
                .bind(&run.name)
                .bind(Json(&run.spec))
                .bind(&run.phase)
                .bind(run.strategy())
                .execute(&mut *tx)
                .await?;
            for symbol in run.symbols() {
                sqlx::query(sqlx::AssertSqlSafe(symbols.0.clone()))
                    .bind(&run.run_id)
                    .bind(symbol)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records how run `run_id` ended: its phase, status and results, at `finished_at_ms`.
    /// Returns false when there is no such run.
    pub async fn finish_run(
        &self,
        run_id: &str,
        phase: &str,
        status: Option<&serde_json::Value>,
        results: Option<&serde_json::Value>,
        finished_at_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let sql = render(
            self.backend(),
            "UPDATE runs SET phase = $2, status = $3, results = $4, finished_at = {ts $5}, updated_at = {now}
             WHERE run_id = $1",
        );
        let done = with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(run_id)
                .bind(phase)
                .bind(status.map(Json))
                .bind(results.map(Json))
                .bind(finished_at_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Run `run_id`, if stored.
    pub async fn run(&self, run_id: &str) -> Result<Option<StoredRun>, sqlx::Error> {
        let sql = render(self.backend(), &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"));
        let row: Option<RunRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_optional(pool).await?);
        row.map(stored_run).transpose()
    }

    /// The newest runs first, of one kind or all, at most `limit`.
    pub async fn runs(&self, kind: Option<RunKind>, limit: i64) -> Result<Vec<StoredRun>, sqlx::Error> {
        self.list_runs(&RunFilter { kind, limit, ..RunFilter::default() }).await
    }

    /// The runs `filter` selects, newest first (ties by id), one page of at most `filter.limit`.
    /// The page after it: the same filter with `after` = the last run's [`StoredRun::cursor`].
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, sqlx::Error> {
        let sql = render(
            self.backend(),
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR phase = $2) AND ($3 IS NULL OR strategy = $3)
                   AND ($4 IS NULL OR EXISTS (SELECT 1 FROM run_symbols s WHERE s.run_id = runs.run_id AND s.symbol = $4))
                   AND ($5 IS NULL OR created_at < {{ts $6}} OR (created_at = {{ts $6}} AND run_id > $5))
                 ORDER BY created_at DESC, run_id LIMIT $7"
            ),
        );
        let kind = filter.kind.map(RunKind::as_str);
        let (after_ms, after_id) = match &filter.after {
            Some((ms, id)) => (*ms, Some(id.as_str())),
            None => (0, None),
        };
        let rows: Vec<RunRow> = with_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(kind)
                .bind(filter.phase.as_deref())
                .bind(filter.strategy.as_deref())
                .bind(filter.symbol.as_deref())
                .bind(after_id)
                .bind(bound(after_ms))
                .bind(filter.limit.max(0))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(stored_run).collect()
    }

    /// Writes a run's equity points `(Unix ms, equity)` in one transaction, in multi-row
    /// statements; a point already stored for that time keeps its first value. Returns how many
    /// rows were new.
    pub async fn insert_equity(&self, run_id: &str, points: &[(i64, f64)]) -> Result<u64, sqlx::Error> {
        // Shortest text that reads back as the same float; NUMERIC/TEXT keep it exactly.
        let text: Vec<(i64, String)> = points.iter().map(|&(at, e)| (at, format!("{e:?}"))).collect();
        let mut inserted = 0;
        match self {
            // PostgreSQL: one statement over arrays per batch (see insert_events).
            Store::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                for chunk in text.chunks(PG_ARRAY_BATCH_ROWS) {
                    inserted += sqlx::query(
                        "INSERT INTO equity_points (run_id, at, equity)
                         SELECT $1, to_timestamp(ms / 1000.0), e::numeric FROM UNNEST($2::int8[], $3::text[]) AS x(ms, e)
                         ON CONFLICT (run_id, at) DO NOTHING",
                    )
                    .bind(run_id)
                    .bind(chunk.iter().map(|(at, _)| *at).collect::<Vec<i64>>())
                    .bind(chunk.iter().map(|(_, e)| e.as_str()).collect::<Vec<&str>>())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                for chunk in text.chunks(BATCH_ROWS) {
                    let mut q = builder(pool, "INSERT INTO equity_points (run_id, at, equity) ");
                    q.push_values(chunk, |mut row, (at, equity)| {
                        row.push_bind(run_id).push_bind(*at).push_bind(equity);
                    });
                    q.push(" ON CONFLICT (run_id, at) DO NOTHING");
                    inserted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
        }
        Ok(inserted)
    }

    /// A run's equity points in time order.
    pub async fn equity_of_run(&self, run_id: &str) -> Result<Vec<(i64, f64)>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT {ms at}, {text equity} FROM equity_points WHERE run_id = $1 ORDER BY at",
        );
        let rows: Vec<(i64, String)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(at, e)| {
                e.parse::<f64>()
                    .map(|equity| (at, equity))
                    .map_err(|err| sqlx::Error::Decode(format!("equity {e:?} at {at}: {err}").into()))
            })
            .collect()
    }

    /// Writes a run's trades in one transaction; a trade already stored (same symbol and number)
    /// keeps its first values. Returns how many were new.
    pub async fn insert_trades(&self, run_id: &str, trades: &[StoredTrade]) -> Result<u64, sqlx::Error> {
        let c = Casts::of(self.backend());
        let mut inserted = 0;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for chunk in trades.chunks(BATCH_ROWS) {
                let mut q = builder(
                    pool,
                    "INSERT INTO trades (run_id, symbol, trade_no, entry_time, exit_time, entry_price, exit_price, quantity, pnl, fees) ",
                );
                q.push_values(chunk, |mut row, t| {
                    row.push_bind(run_id)
                        .push_bind(&t.symbol)
                        .push_bind(t.trade_no)
                        .push(c.ts_open)
                        .push_bind_unseparated(t.entry_time_ms)
                        .push_unseparated(c.ts_close)
                        .push(c.ts_open)
                        .push_bind_unseparated(t.exit_time_ms)
                        .push_unseparated(c.ts_close)
                        .push_bind(t.entry_price.to_string())
                        .push_unseparated(c.numeric)
                        .push_bind(t.exit_price.map(|p| p.to_string()))
                        .push_unseparated(c.numeric)
                        .push_bind(t.quantity.to_string())
                        .push_unseparated(c.numeric)
                        .push_bind(t.pnl.map(|p| p.to_string()))
                        .push_unseparated(c.numeric)
                        .push_bind(t.fees.to_string())
                        .push_unseparated(c.numeric);
                });
                q.push(" ON CONFLICT (run_id, symbol, trade_no) DO NOTHING");
                inserted += q.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(inserted)
    }

    /// A run's trades in entry order.
    pub async fn trades_of_run(&self, run_id: &str) -> Result<Vec<StoredTrade>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT symbol, {int trade_no}, {ms entry_time}, {ms exit_time}, {text entry_price}, {text exit_price},
                    {text quantity}, {text pnl}, {text fees}
             FROM trades WHERE run_id = $1 ORDER BY entry_time, symbol, trade_no",
        );
        let rows: Vec<TradeRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(symbol, trade_no, entry_time_ms, exit_time_ms, entry, exit, quantity, pnl, fees)| {
                Ok(StoredTrade {
                    symbol,
                    trade_no,
                    entry_time_ms,
                    exit_time_ms,
                    entry_price: decimal("entry_price", &entry)?,
                    exit_price: decimal_opt("exit_price", exit)?,
                    quantity: decimal("quantity", &quantity)?,
                    pnl: decimal_opt("pnl", pnl)?,
                    fees: decimal("fees", &fees)?,
                })
            })
            .collect()
    }
}

impl StoredRun {
    /// Where a page that ends with this run stops: pass it as [`RunFilter::after`].
    pub fn cursor(&self) -> (i64, String) {
        (self.created_at_ms, self.run.run_id.clone())
    }
}

fn stored_run(row: RunRow) -> Result<StoredRun, sqlx::Error> {
    let (run_id, kind, namespace, name, spec, phase, status, results, created_at_ms, finished_at_ms) = row;
    Ok(StoredRun {
        run: Run { run_id, kind: RunKind::parse(&kind)?, namespace, name, spec: spec.0, phase },
        status: status.map(|s| s.0),
        results: results.map(|r| r.0),
        created_at_ms,
        finished_at_ms,
    })
}

/// At most `max` points of `curve`: its first and last, and from each of `(max - 2) / 2` equal
/// buckets in between the lowest and the highest point, in time order. Unlike keeping every
/// n-th point, this keeps every peak and trough a chart of the curve would show, so a thinned
/// curve shows the same drawdowns.
pub fn downsample(curve: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    if curve.len() <= max {
        return curve.to_vec();
    }
    if max < 4 {
        // Too few for buckets: the ends, as many as fit.
        return [curve.first(), curve.last()].into_iter().flatten().take(max).copied().collect();
    }
    let inner = &curve[1..curve.len() - 1];
    let buckets = (max - 2) / 2;
    let mut out = Vec::with_capacity(max);
    out.extend(curve.first().copied());
    // Buckets of nearly equal size (their bounds at i × len / buckets), all `buckets` of them.
    let bounds = |i: usize| i * inner.len() / buckets;
    for bucket in (0..buckets).map(|i| &inner[bounds(i)..bounds(i + 1)]) {
        let by_equity = |a: &&(i64, f64), b: &&(i64, f64)| a.1.total_cmp(&b.1);
        let (Some(low), Some(high)) = (bucket.iter().min_by(by_equity), bucket.iter().max_by(by_equity))
        else {
            continue;
        };
        let (first, second) = if low.0 <= high.0 { (low, high) } else { (high, low) };
        out.push(*first);
        if second.0 != first.0 {
            out.push(*second);
        }
    }
    out.extend(curve.last().copied());
    out
}

#[cfg(test)]
mod tests {
    use super::downsample;

    #[test]
    fn a_long_curve_keeps_its_ends_peaks_and_troughs_within_the_cap() {
        let curve: Vec<(i64, f64)> = (0..10).map(|i| (i, i as f64)).collect();
        assert_eq!(downsample(&curve, 20), curve, "short curves are kept whole");
        assert!(downsample(&curve, 0).is_empty());
        assert_eq!(downsample(&curve, 2), vec![(0, 0.0), (9, 9.0)]);

        // A noisy curve with one deep trough and one high peak in the middle of buckets.
        let mut curve: Vec<(i64, f64)> =
            (0..100_000).map(|i| (i * 60_000, 10_000.0 + ((i * 7919) % 1000) as f64 / 10.0)).collect();
        curve[33_333].1 = 5_000.0;
        curve[66_667].1 = 20_000.0;
        for max in [4, 5, 100, 10_000] {
            let kept = downsample(&curve, max);
            assert!(kept.len() <= max, "{} > {max}", kept.len());
            assert_eq!(kept.first(), curve.first());
            assert_eq!(kept.last(), curve.last());
            assert!(kept.contains(&curve[33_333]) && kept.contains(&curve[66_667]), "extremes kept at {max}");
            assert!(kept.windows(2).all(|w| w[0].0 < w[1].0), "in time order, no repeats");
        }
        assert!(downsample(&curve, 10_000).len() > 9_900, "the cap is used");
        let twice = downsample(&curve[..20_000], 10_000).len();
        assert!(twice > 9_900, "a curve just over the cap keeps nearly the cap: {twice}");
    }
}
