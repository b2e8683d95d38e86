//! Candles (for market views and replay), the latest tick of each market, and LLM telemetry.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::Store;
use crate::sql::{
    BATCH_ROWS, BeginWrite, Casts, bound, builder, decimal, decimal_opt, insert_each, render, with_pool,
};

/// One candle of one market.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCandle {
    /// Exchange.
    pub exchange: String,
    /// Symbol.
    pub symbol: String,
    /// `1m`, `1h`, …
    pub timeframe: String,
    /// Open time, Unix ms.
    pub open_time_ms: i64,
    /// Open.
    pub open: Decimal,
    /// High.
    pub high: Decimal,
    /// Low.
    pub low: Decimal,
    /// Close.
    pub close: Decimal,
    /// Volume (a float: it is never money).
    pub volume: f64,
}

/// The latest tick of one market: last trade price, best bid and ask.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTick {
    /// Exchange.
    pub exchange: String,
    /// Symbol.
    pub symbol: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Last trade price.
    pub price: Decimal,
    /// Best bid.
    pub bid: Option<Decimal>,
    /// Best ask.
    pub ask: Option<Decimal>,
}

/// One call an agent made to an LLM.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmCall {
    /// Its id (a UUID): writing it twice keeps one row.
    pub call_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The agent that made it.
    pub agent: String,
    /// The model.
    pub model: String,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Completion tokens.
    pub tokens_out: i64,
    /// What it cost, in USD.
    pub cost: Decimal,
    /// How long it took.
    pub latency_ms: i64,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// LLM use of a run for one agent and model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmUsage {
    /// The agent.
    pub agent: String,
    /// The model.
    pub model: String,
    /// Calls made.
    pub calls: u64,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Completion tokens.
    pub tokens_out: i64,
    /// Total cost, exact.
    pub cost: Decimal,
    /// Slowest call.
    pub max_latency_ms: i64,
}

type CandleRow = (String, String, String, i64, String, String, String, String, f64);
type TickRow = (String, String, i64, String, Option<String>, Option<String>);
type LlmRow = (String, String, String, String, i64, i64, String, i64, i64);

impl Store {
    /// Writes candles in multi-row statements; a candle already stored for its market, timeframe
    /// and open time keeps its first values. Returns how many were new.
    pub async fn insert_candles(&self, candles: &[StoredCandle]) -> Result<u64, sqlx::Error> {
        let c = Casts::of(self.backend());
        let mut inserted = 0;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for chunk in candles.chunks(BATCH_ROWS) {
                let mut q = builder(
                    pool,
                    "INSERT INTO candles (exchange, symbol, timeframe, open_time, open, high, low, close, volume) ",
                );
                q.push_values(chunk, |mut row, k| {
                    row.push_bind(&k.exchange)
                        .push_bind(&k.symbol)
                        .push_bind(&k.timeframe)
                        .push(c.ts_open)
                        .push_bind_unseparated(k.open_time_ms)
                        .push_unseparated(c.ts_close);
                    for price in [k.open, k.high, k.low, k.close] {
                        row.push_bind(price.to_string()).push_unseparated(c.numeric);
                    }
                    row.push_bind(k.volume);
                });
                q.push(" ON CONFLICT (exchange, symbol, timeframe, open_time) DO NOTHING");
                inserted += q.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(inserted)
    }

    /// The candles of one market and timeframe with open time in `[from_ms, to_ms)`, in time
    /// order, at most `limit`.
    pub async fn candles(
        &self,
        exchange: &str,
        symbol: &str,
        timeframe: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredCandle>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT exchange, symbol, timeframe, {ms open_time}, {text open}, {text high}, {text low}, {text close}, volume
             FROM candles WHERE exchange = $1 AND symbol = $2 AND timeframe = $3
               AND open_time >= {ts $4} AND open_time < {ts $5}
             ORDER BY open_time LIMIT $6",
        );
        let rows: Vec<CandleRow> = with_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(exchange)
                .bind(symbol)
                .bind(timeframe)
                .bind(bound(from_ms))
                .bind(bound(to_ms))
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(stored_candle).collect()
    }

    /// The newest candle of every market and timeframe on `exchange` (the latest prices), by
    /// symbol then timeframe.
    pub async fn latest_candles(&self, exchange: &str) -> Result<Vec<StoredCandle>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT exchange, symbol, timeframe, {ms open_time}, {text open}, {text high}, {text low}, {text close}, volume
             FROM candles c WHERE exchange = $1 AND open_time = (
                 SELECT MAX(open_time) FROM candles d
                 WHERE d.exchange = c.exchange AND d.symbol = c.symbol AND d.timeframe = c.timeframe)
             ORDER BY symbol, timeframe",
        );
        let rows: Vec<CandleRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(exchange).fetch_all(pool).await?);
        rows.into_iter().map(stored_candle).collect()
    }

    /// Records ticks as their market's latest; a tick older than (or as old as) the stored one
    /// changes nothing. Returns how many replaced or added a market's latest.
    pub async fn upsert_ticks(&self, ticks: &[StoredTick]) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO ticks (exchange, symbol, at, price, bid, ask)
             VALUES ($1, $2, {ts $3}, {num $4}, {num $5}, {num $6})
             ON CONFLICT (exchange, symbol) DO UPDATE
               SET at = excluded.at, price = excluded.price, bid = excluded.bid, ask = excluded.ask
               WHERE ticks.at < excluded.at",
        );
        Ok(insert_each!(self, sql, ticks, |q, tick| q
            .bind(&tick.exchange)
            .bind(&tick.symbol)
            .bind(tick.at_ms)
            .bind(tick.price.to_string())
            .bind(tick.bid.map(|d| d.to_string()))
            .bind(tick.ask.map(|d| d.to_string()))))
    }

    /// The latest tick of every market on `exchange`, by symbol.
    pub async fn latest_ticks(&self, exchange: &str) -> Result<Vec<StoredTick>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT exchange, symbol, {ms at}, {text price}, {text bid}, {text ask}
             FROM ticks WHERE exchange = $1 ORDER BY symbol",
        );
        let rows: Vec<TickRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(exchange).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(exchange, symbol, at_ms, price, bid, ask)| {
                Ok(StoredTick {
                    exchange,
                    symbol,
                    at_ms,
                    price: decimal("price", &price)?,
                    bid: decimal_opt("bid", bid)?,
                    ask: decimal_opt("ask", ask)?,
                })
            })
            .collect()
    }

    /// Writes LLM calls; one already stored (same id) is kept. Returns how many were new.
    pub async fn insert_llm_calls(&self, calls: &[LlmCall]) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO llm_calls (call_id, run_id, agent, model, tokens_in, tokens_out, cost, latency_ms, at)
             VALUES ({uuid $1}, $2, $3, $4, $5, $6, {num $7}, $8, {ts $9}) ON CONFLICT (call_id) DO NOTHING",
        );
        Ok(insert_each!(self, sql, calls, |q, call| q
            .bind(&call.call_id)
            .bind(&call.run_id)
            .bind(&call.agent)
            .bind(&call.model)
            .bind(call.tokens_in)
            .bind(call.tokens_out)
            .bind(call.cost.to_string())
            .bind(call.latency_ms)
            .bind(call.at_ms)))
    }

    /// A run's LLM calls in time order.
    pub async fn llm_calls_of_run(&self, run_id: &str) -> Result<Vec<LlmCall>, sqlx::Error> {
        self.llm_calls(Some(run_id), i64::MIN, i64::MAX).await
    }

    /// LLM calls in `[from_ms, to_ms)`, of one run or all, in time order.
    pub async fn llm_calls(
        &self,
        run_id: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<LlmCall>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT {text call_id}, run_id, agent, model, {int tokens_in}, {int tokens_out}, {text cost},
                    {int latency_ms}, {ms at}
             FROM llm_calls WHERE ($1 IS NULL OR run_id = $1) AND at >= {ts $2} AND at < {ts $3}
             ORDER BY at, call_id",
        );
        let rows: Vec<LlmRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(run_id).bind(bound(from_ms)).bind(bound(to_ms)).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(call_id, run_id, agent, model, tokens_in, tokens_out, cost, latency_ms, at_ms)| {
                Ok(LlmCall {
                    call_id,
                    run_id,
                    agent,
                    model,
                    tokens_in,
                    tokens_out,
                    cost: decimal("cost", &cost)?,
                    latency_ms,
                    at_ms,
                })
            })
            .collect()
    }

    /// LLM use per agent and model in `[from_ms, to_ms)`, of one run or all (the dashboard's
    /// cost panel), costs summed exactly.
    pub async fn llm_usage(
        &self,
        run_id: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<LlmUsage>, sqlx::Error> {
        let mut by: BTreeMap<(String, String), LlmUsage> = BTreeMap::new();
        for call in self.llm_calls(run_id, from_ms, to_ms).await? {
            let usage = by.entry((call.agent.clone(), call.model.clone())).or_insert_with(|| LlmUsage {
                agent: call.agent.clone(),
                model: call.model.clone(),
                calls: 0,
                tokens_in: 0,
                tokens_out: 0,
                cost: Decimal::ZERO,
                max_latency_ms: 0,
            });
            usage.calls += 1;
            usage.tokens_in += call.tokens_in;
            usage.tokens_out += call.tokens_out;
            usage.cost += call.cost;
            usage.max_latency_ms = usage.max_latency_ms.max(call.latency_ms);
        }
        Ok(by.into_values().collect())
    }
}

fn stored_candle(row: CandleRow) -> Result<StoredCandle, sqlx::Error> {
    let (exchange, symbol, timeframe, open_time_ms, open, high, low, close, volume) = row;
    Ok(StoredCandle {
        exchange,
        symbol,
        timeframe,
        open_time_ms,
        open: decimal("open", &open)?,
        high: decimal("high", &high)?,
        low: decimal("low", &low)?,
        close: decimal("close", &close)?,
        volume,
    })
}
