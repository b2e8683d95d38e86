//! The trading chain: signals, orders, fills, blocked trades, positions and risk allocations.

use rust_decimal::Decimal;

use crate::Store;
use crate::sql::{bound, decimal, decimal_opt, insert_each, render, with_pool};

/// A signal a strategy raised.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSignal {
    /// Its id (a UUID): writing it twice keeps one row.
    pub signal_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Its chain (a UUID).
    pub correlation_id: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// The strategy that raised it.
    pub strategy: String,
    /// Symbol.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// The price it saw.
    pub price: Decimal,
}

/// An order as the store keeps it. Its client order id is the idempotency key an exchange sees.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredOrder {
    /// The client order id: unique forever.
    pub client_order_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Its chain (a UUID).
    pub correlation_id: String,
    /// The exchange's id once it has one.
    pub exchange_order_id: Option<String>,
    /// Symbol.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `market`, `limit`, …
    pub order_type: String,
    /// Base quantity.
    pub quantity: Decimal,
    /// Limit price, if any.
    pub limit_price: Option<Decimal>,
    /// Its state.
    pub status: String,
    /// When it was made, Unix ms.
    pub created_at_ms: i64,
}

/// A fill of an order.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFill {
    /// The fill's id (the exchange's trade id, or the engine's): writing it twice keeps one row.
    pub fill_id: String,
    /// The order it fills.
    pub client_order_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Execution price.
    pub price: Decimal,
    /// Base quantity.
    pub quantity: Decimal,
    /// Fee.
    pub fee: Decimal,
    /// Asset of the fee.
    pub fee_asset: String,
}

/// A trade that did not happen, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBlock {
    /// The `trade_blocked` event's id (a UUID).
    pub event_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Its chain (a UUID).
    pub correlation_id: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// A short machine-readable reason: `stale_data`, `risk_budget`, `kill_switch`, …
    pub reason: String,
    /// What a person reads.
    pub detail: String,
}

/// A position (current, or a snapshot of it at `at_ms`).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPosition {
    /// The run it belongs to.
    pub run_id: String,
    /// Symbol.
    pub symbol: String,
    /// When it was so, Unix ms.
    pub at_ms: i64,
    /// Base quantity (negative when short).
    pub quantity: Decimal,
    /// Average entry price, when there is a position.
    pub avg_price: Option<Decimal>,
    /// The price it was marked at (snapshots only).
    pub mark_price: Option<Decimal>,
}

/// Where a risk allocation is in its life: claimed by an intent, used by its fill, released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationState {
    /// Budget set aside for an intent.
    Claimed,
    /// Spent by a fill.
    Used,
    /// Given back (the intent was judged down, the order cancelled, the position closed).
    Released,
}

impl AllocationState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Used => "used",
            Self::Released => "released",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "claimed" => Ok(Self::Claimed),
            "used" => Ok(Self::Used),
            "released" => Ok(Self::Released),
            other => Err(sqlx::Error::Decode(format!("unknown allocation state {other:?}").into())),
        }
    }
}

/// Budget claimed by an intent.
#[derive(Clone, Debug, PartialEq)]
pub struct RiskAllocation {
    /// Its id (a UUID).
    pub allocation_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Its chain (a UUID).
    pub correlation_id: String,
    /// How much, in the session's quote currency.
    pub amount: Decimal,
    /// Where it is.
    pub state: AllocationState,
    /// When it was claimed, Unix ms.
    pub claimed_at_ms: i64,
    /// When it was used, Unix ms.
    pub used_at_ms: Option<i64>,
    /// When it was released, Unix ms.
    pub released_at_ms: Option<i64>,
}

type OrderRow =
    (String, String, String, Option<String>, String, String, String, String, Option<String>, String, i64);
type FillRow = (String, String, String, i64, String, String, String, String);
type SignalRow = (String, String, String, i64, String, String, String, String);
type PositionRow = (String, String, i64, String, Option<String>, Option<String>);
type AllocationRow = (String, String, String, String, String, i64, Option<i64>, Option<i64>);

impl Store {
    /// Writes `signals`; one already stored (same id) is kept as it was. Returns how many were new.
    pub async fn insert_signals(&self, signals: &[StoredSignal]) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO signals (signal_id, run_id, correlation_id, at, strategy, symbol, side, price)
             VALUES ({uuid $1}, $2, {uuid $3}, {ts $4}, $5, $6, $7, {num $8})
             ON CONFLICT (signal_id) DO NOTHING",
        );
        Ok(insert_each!(self, sql, signals, |q, s| q
            .bind(&s.signal_id)
            .bind(&s.run_id)
            .bind(&s.correlation_id)
            .bind(s.at_ms)
            .bind(&s.strategy)
            .bind(&s.symbol)
            .bind(&s.side)
            .bind(s.price.to_string())))
    }

    /// A run's signals in time order.
    pub async fn signals_of_run(&self, run_id: &str) -> Result<Vec<StoredSignal>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT {text signal_id}, run_id, {text correlation_id}, {ms at}, strategy, symbol, side, {text price}
             FROM signals WHERE run_id = $1 ORDER BY at, signal_id",
        );
        let rows: Vec<SignalRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(signal_id, run_id, correlation_id, at_ms, strategy, symbol, side, price)| {
                Ok(StoredSignal {
                    signal_id,
                    run_id,
                    correlation_id,
                    at_ms,
                    strategy,
                    symbol,
                    side,
                    price: decimal("price", &price)?,
                })
            })
            .collect()
    }

    /// Writes `orders`; one already stored (same client order id) is kept as it was. Returns
    /// how many were new.
    pub async fn insert_orders(&self, orders: &[StoredOrder]) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO orders (client_order_id, run_id, correlation_id, exchange_order_id, symbol, side,
                                 order_type, quantity, limit_price, status, created_at, updated_at)
             VALUES ($1, $2, {uuid $3}, $4, $5, $6, $7, {num $8}, {num $9}, $10, {ts $11}, {ts $11})
             ON CONFLICT (client_order_id) DO NOTHING",
        );
        Ok(insert_each!(self, sql, orders, |q, o| q
            .bind(&o.client_order_id)
            .bind(&o.run_id)
            .bind(&o.correlation_id)
            .bind(&o.exchange_order_id)
            .bind(&o.symbol)
            .bind(&o.side)
            .bind(&o.order_type)
            .bind(o.quantity.to_string())
            .bind(o.limit_price.map(|p| p.to_string()))
            .bind(&o.status)
            .bind(o.created_at_ms)))
    }

    /// Moves order `client_order_id` to `status` as of `at_ms`, recording the exchange's id when
    /// given. An update older than the order's last one is ignored (exchange reports arrive out
    /// of order), so the stored status never goes back in time. Returns whether it applied.
    pub async fn update_order_status(
        &self,
        client_order_id: &str,
        status: &str,
        exchange_order_id: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let sql = render(
            self.backend(),
            "UPDATE orders SET status = $2, exchange_order_id = COALESCE($3, exchange_order_id), updated_at = {ts $4}
             WHERE client_order_id = $1 AND updated_at <= {ts $4}",
        );
        let changed = with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(client_order_id)
                .bind(status)
                .bind(exchange_order_id)
                .bind(at_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// A run's orders in the order they were made.
    pub async fn orders_of_run(&self, run_id: &str) -> Result<Vec<StoredOrder>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT client_order_id, run_id, {text correlation_id}, exchange_order_id, symbol, side, order_type,
                    {text quantity}, {text limit_price}, status, {ms created_at}
             FROM orders WHERE run_id = $1 ORDER BY created_at, client_order_id",
        );
        let rows: Vec<OrderRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|r| {
                let (
                    client_order_id,
                    run_id,
                    correlation_id,
                    exchange_order_id,
                    symbol,
                    side,
                    order_type,
                    q,
                    l,
                    status,
                    at,
                ) = r;
                Ok(StoredOrder {
                    client_order_id,
                    run_id,
                    correlation_id,
                    exchange_order_id,
                    symbol,
                    side,
                    order_type,
                    quantity: decimal("quantity", &q)?,
                    limit_price: decimal_opt("limit_price", l)?,
                    status,
                    created_at_ms: at,
                })
            })
            .collect()
    }

    /// Writes `fills`; one already stored (same fill id) is kept as it was, so a retried write
    /// after a crash adds nothing. Returns how many were new.
    pub async fn insert_fills(&self, fills: &[StoredFill]) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO fills (fill_id, client_order_id, run_id, at, price, quantity, fee, fee_asset)
             VALUES ($1, $2, $3, {ts $4}, {num $5}, {num $6}, {num $7}, $8)
             ON CONFLICT (fill_id) DO NOTHING",
        );
        Ok(insert_each!(self, sql, fills, |q, f| q
            .bind(&f.fill_id)
            .bind(&f.client_order_id)
            .bind(&f.run_id)
            .bind(f.at_ms)
            .bind(f.price.to_string())
            .bind(f.quantity.to_string())
            .bind(f.fee.to_string())
            .bind(&f.fee_asset)))
    }

    /// A run's fills in the order they happened (ties by id).
    pub async fn fills_of_run(&self, run_id: &str) -> Result<Vec<StoredFill>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT fill_id, client_order_id, run_id, {ms at}, {text price}, {text quantity}, {text fee}, fee_asset
             FROM fills WHERE run_id = $1 ORDER BY at, fill_id",
        );
        let rows: Vec<FillRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(|(fill_id, client_order_id, run_id, at_ms, price, quantity, fee, fee_asset)| {
                Ok(StoredFill {
                    fill_id,
                    client_order_id,
                    run_id,
                    at_ms,
                    price: decimal("price", &price)?,
                    quantity: decimal("quantity", &quantity)?,
                    fee: decimal("fee", &fee)?,
                    fee_asset,
                })
            })
            .collect()
    }

    /// Writes `blocks`; one already stored (same event id) is kept. Returns how many were new.
    pub async fn insert_blocks(&self, blocks: &[StoredBlock]) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO block_events (event_id, run_id, correlation_id, at, reason, detail)
             VALUES ({uuid $1}, $2, {uuid $3}, {ts $4}, $5, $6) ON CONFLICT (event_id) DO NOTHING",
        );
        Ok(insert_each!(self, sql, blocks, |q, b| q
            .bind(&b.event_id)
            .bind(&b.run_id)
            .bind(&b.correlation_id)
            .bind(b.at_ms)
            .bind(&b.reason)
            .bind(&b.detail)))
    }

    /// A run's blocked trades in time order, optionally only those with `reason`.
    pub async fn blocks_of_run(
        &self,
        run_id: &str,
        reason: Option<&str>,
    ) -> Result<Vec<StoredBlock>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT {text event_id}, run_id, {text correlation_id}, {ms at}, reason, detail
             FROM block_events WHERE run_id = $1 AND ($2 IS NULL OR reason = $2) ORDER BY at, event_id",
        );
        let rows: Vec<(String, String, String, i64, String, String)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).bind(reason).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .map(|(event_id, run_id, correlation_id, at_ms, reason, detail)| StoredBlock {
                event_id,
                run_id,
                correlation_id,
                at_ms,
                reason,
                detail,
            })
            .collect())
    }

    /// Sets the current position of `position.run_id` in `position.symbol`, unless the stored one
    /// is newer (a late writer never rolls a position back). Returns whether it applied.
    pub async fn upsert_position(&self, position: &StoredPosition) -> Result<bool, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO positions (run_id, symbol, quantity, avg_price, updated_at)
             VALUES ($1, $2, {num $3}, {num $4}, {ts $5})
             ON CONFLICT (run_id, symbol) DO UPDATE
             SET quantity = excluded.quantity, avg_price = excluded.avg_price, updated_at = excluded.updated_at
             WHERE positions.updated_at <= excluded.updated_at",
        );
        let changed = with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&position.run_id)
                .bind(&position.symbol)
                .bind(position.quantity.to_string())
                .bind(position.avg_price.map(|p| p.to_string()))
                .bind(position.at_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// A run's current positions, by symbol (`mark_price` is absent: positions are not marked).
    pub async fn positions_of_run(&self, run_id: &str) -> Result<Vec<StoredPosition>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT run_id, symbol, {ms updated_at}, {text quantity}, {text avg_price}, NULL
             FROM positions WHERE run_id = $1 ORDER BY symbol",
        );
        let rows: Vec<PositionRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter().map(stored_position).collect()
    }

    /// Writes position snapshots; one already stored for that run, symbol and time is kept.
    /// Returns how many were new.
    pub async fn insert_position_snapshots(&self, snapshots: &[StoredPosition]) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO position_snapshots (run_id, symbol, at, quantity, avg_price, mark_price)
             VALUES ($1, $2, {ts $3}, {num $4}, {num $5}, {num $6}) ON CONFLICT (run_id, symbol, at) DO NOTHING",
        );
        Ok(insert_each!(self, sql, snapshots, |q, p| q
            .bind(&p.run_id)
            .bind(&p.symbol)
            .bind(p.at_ms)
            .bind(p.quantity.to_string())
            .bind(p.avg_price.map(|v| v.to_string()))
            .bind(p.mark_price.map(|v| v.to_string()))))
    }

    /// The snapshots of one position of a run, in time order, from `from_ms` on.
    pub async fn position_history(
        &self,
        run_id: &str,
        symbol: &str,
        from_ms: i64,
    ) -> Result<Vec<StoredPosition>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT run_id, symbol, {ms at}, {text quantity}, {text avg_price}, {text mark_price}
             FROM position_snapshots WHERE run_id = $1 AND symbol = $2 AND at >= {ts $3} ORDER BY at",
        );
        let rows: Vec<PositionRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(run_id).bind(symbol).bind(bound(from_ms)).fetch_all(pool).await?
        });
        rows.into_iter().map(stored_position).collect()
    }

    /// Claims budget for an intent. Claiming the same allocation id again changes nothing.
    /// Returns whether it was new.
    pub async fn claim_risk(&self, allocation: &RiskAllocation) -> Result<bool, sqlx::Error> {
        let sql = render(
            self.backend(),
            "INSERT INTO risk_allocations (allocation_id, run_id, correlation_id, amount, state, claimed_at)
             VALUES ({uuid $1}, $2, {uuid $3}, {num $4}, 'claimed', {ts $5}) ON CONFLICT (allocation_id) DO NOTHING",
        );
        let inserted = with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&allocation.allocation_id)
                .bind(&allocation.run_id)
                .bind(&allocation.correlation_id)
                .bind(allocation.amount.to_string())
                .bind(allocation.claimed_at_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Moves an allocation forward to `to` (claimed → used → released; claimed → released) at
    /// `at_ms`. A move backwards, or to where it already is, changes nothing and returns false.
    pub async fn advance_risk(
        &self,
        allocation_id: &str,
        to: AllocationState,
        at_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let template = match to {
            AllocationState::Claimed => return Ok(false),
            AllocationState::Used => {
                "UPDATE risk_allocations SET state = $2, used_at = {ts $3}
                 WHERE allocation_id = {uuid $1} AND state = 'claimed'"
            }
            AllocationState::Released => {
                "UPDATE risk_allocations SET state = $2, released_at = {ts $3}
                 WHERE allocation_id = {uuid $1} AND state IN ('claimed', 'used')"
            }
        };
        let sql = render(self.backend(), template);
        let changed = with_pool!(self, pool => {
            sqlx::query(sql).bind(allocation_id).bind(to.as_str()).bind(at_ms).execute(pool).await?.rows_affected()
        });
        Ok(changed == 1)
    }

    /// A run's risk allocations in the order they were claimed.
    pub async fn risk_of_run(&self, run_id: &str) -> Result<Vec<RiskAllocation>, sqlx::Error> {
        let sql = render(
            self.backend(),
            "SELECT {text allocation_id}, run_id, {text correlation_id}, {text amount}, state,
                    {ms claimed_at}, {ms used_at}, {ms released_at}
             FROM risk_allocations WHERE run_id = $1 ORDER BY claimed_at, allocation_id",
        );
        let rows: Vec<AllocationRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).fetch_all(pool).await?);
        rows.into_iter()
            .map(
                |(
                    allocation_id,
                    run_id,
                    correlation_id,
                    amount,
                    state,
                    claimed_at_ms,
                    used_at_ms,
                    released_at_ms,
                )| {
                    Ok(RiskAllocation {
                        allocation_id,
                        run_id,
                        correlation_id,
                        amount: decimal("amount", &amount)?,
                        state: AllocationState::parse(&state)?,
                        claimed_at_ms,
                        used_at_ms,
                        released_at_ms,
                    })
                },
            )
            .collect()
    }

    /// The budget a run holds: the sum of its allocations not yet released (exact).
    pub async fn risk_in_use(&self, run_id: &str) -> Result<Decimal, sqlx::Error> {
        Ok(self
            .risk_of_run(run_id)
            .await?
            .iter()
            .filter(|a| a.state != AllocationState::Released)
            .map(|a| a.amount)
            .sum())
    }
}

fn stored_position(row: PositionRow) -> Result<StoredPosition, sqlx::Error> {
    let (run_id, symbol, at_ms, quantity, avg_price, mark_price) = row;
    Ok(StoredPosition {
        run_id,
        symbol,
        at_ms,
        quantity: decimal("quantity", &quantity)?,
        avg_price: decimal_opt("avg_price", avg_price)?,
        mark_price: decimal_opt("mark_price", mark_price)?,
    })
}
