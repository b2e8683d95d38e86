//! The paper account: orders never leave the process. They fill at the first market price after
//! the decision (on candles: the next candle's open), with the backtest's fees and slippage and
//! the symbol's rules, through the engine's own execution functions, so a paper session and a
//! backtest of the same candles fill at the same prices and pay the same fees. Fees are charged
//! in the quote asset, as the backtest charges them.
//!
//! Pure: the caller feeds it candles.

use std::collections::{BTreeMap, HashMap};

use kuant_agents::execution::{Costs, execution_price};
use rust_decimal::Decimal;

use crate::error::{ExchangeError, RejectKind};
use crate::model::{
    Balance, ClientOrderId, Fill, Kline, Order, OrderKind, OrderRequest, OrderStatus, Side, TimeInForce,
};
use crate::rules::ExchangeRules;

/// A simulated account on one or more symbols.
pub struct PaperAccount {
    balances: BTreeMap<String, Decimal>,
    costs: Costs,
    rules: HashMap<String, ExchangeRules>,
    last_price: HashMap<String, Decimal>,
    orders: HashMap<ClientOrderId, Order>,
    /// Open orders, oldest first.
    open: Vec<ClientOrderId>,
    fills: Vec<Fill>,
    next_order_id: u64,
    next_trade_id: u64,
}

fn rejected(code: i64, reason: &str, kind: RejectKind) -> ExchangeError {
    ExchangeError::Rejected { code, reason: reason.to_owned(), kind }
}

impl PaperAccount {
    /// An account holding `balances`, filling with `costs`.
    pub fn new(balances: impl IntoIterator<Item = (String, Decimal)>, costs: Costs) -> Self {
        Self {
            balances: balances.into_iter().collect(),
            costs,
            rules: HashMap::new(),
            last_price: HashMap::new(),
            orders: HashMap::new(),
            open: Vec::new(),
            fills: Vec::new(),
            next_order_id: 1,
            next_trade_id: 1,
        }
    }

    /// Trades `rules.symbol` under `rules`.
    pub fn add_symbol(&mut self, rules: ExchangeRules) {
        self.rules.insert(rules.symbol.clone(), rules);
    }

    /// Every asset's balance (paper orders reserve nothing: they fill at the next price).
    pub fn balances(&self) -> Vec<Balance> {
        self.balances
            .iter()
            .map(|(a, f)| Balance { asset: a.clone(), free: *f, locked: Decimal::ZERO })
            .collect()
    }

    /// Every fill, oldest first.
    pub fn fills(&self) -> &[Fill] {
        &self.fills
    }

    /// The order with `client_id`.
    pub fn order(&self, client_id: &ClientOrderId) -> Option<&Order> {
        self.orders.get(client_id)
    }

    /// The open orders, oldest first.
    pub fn open_orders(&self) -> Vec<&Order> {
        self.open.iter().filter_map(|id| self.orders.get(id)).collect()
    }

    fn free(&self, asset: &str) -> Decimal {
        self.balances.get(asset).copied().unwrap_or_default()
    }

    /// Takes `request` at `now_ms`: checked against the rules (valued at the last price seen)
    /// and the balance; it fills on the next candle.
    pub fn place(&mut self, request: &OrderRequest, now_ms: i64) -> Result<Order, ExchangeError> {
        if self.orders.contains_key(&request.client_id) {
            return Err(rejected(-2010, "Duplicate order sent.", RejectKind::DuplicateOrder));
        }
        let rules = self
            .rules
            .get(&request.symbol)
            .ok_or_else(|| rejected(-1121, "Invalid symbol.", RejectKind::Other))?;
        let reference = match request.kind {
            OrderKind::Limit { price, .. } => price,
            OrderKind::Market => self.last_price.get(&request.symbol).copied().ok_or_else(|| {
                rejected(-1013, "No price yet: a market order needs a candle first.", RejectKind::Filter)
            })?,
        };
        rules.check(request, reference)?;
        let enough = match request.side {
            Side::Buy => {
                self.free(&rules.quote_asset) >= reference * request.quantity * self.costs.one_plus_fee()
            }
            Side::Sell => self.free(&rules.base_asset) >= request.quantity,
        };
        if !enough {
            return Err(rejected(
                -2010,
                "Account has insufficient balance for requested action.",
                RejectKind::InsufficientBalance,
            ));
        }
        let order = Order::accepted(request, self.next_order_id, now_ms);
        self.next_order_id += 1;
        self.orders.insert(order.client_id.clone(), order.clone());
        self.open.push(order.client_id.clone());
        Ok(order)
    }

    /// Cancels an open order.
    pub fn cancel(&mut self, client_id: &ClientOrderId, now_ms: i64) -> Result<Order, ExchangeError> {
        let Some(at) = self.open.iter().position(|id| id == client_id) else {
            return Err(rejected(-2011, "Unknown order sent.", RejectKind::UnknownOrder));
        };
        self.open.remove(at);
        let order = self
            .orders
            .get_mut(client_id)
            .ok_or_else(|| rejected(-2011, "Unknown order sent.", RejectKind::UnknownOrder))?;
        order.status = OrderStatus::Canceled;
        order.updated_ms = now_ms;
        Ok(order.clone())
    }

    /// A new candle of `symbol`: open orders placed before it fill, market orders at its open
    /// (with slippage, on the tick), limit orders at their price or better when it reaches them
    /// (an IOC that does not fill at the open expires). Returns what changed.
    pub fn on_candle(&mut self, symbol: &str, candle: &Kline) -> Vec<(Order, Option<Fill>)> {
        let Some(rules) = self.rules.get(symbol).cloned() else { return Vec::new() };
        let engine_rules = rules.engine_rules();
        let mut changed = Vec::new();
        let mut still_open = Vec::new();
        for id in std::mem::take(&mut self.open) {
            let Some(mut order) = self.orders.get(&id).cloned() else { continue };
            // Only candles that open after the decision fill it.
            if order.symbol != symbol || candle.open_ms <= order.created_ms {
                still_open.push(id);
                continue;
            }
            let price = match order.kind {
                OrderKind::Market => {
                    Some(execution_price(candle.open, order.side, &self.costs, &engine_rules))
                }
                OrderKind::Limit { price, time_in_force } => {
                    let at_open = match order.side {
                        Side::Buy => candle.open <= price,
                        Side::Sell => candle.open >= price,
                    };
                    let within = match order.side {
                        Side::Buy => candle.low <= price,
                        Side::Sell => candle.high >= price,
                    };
                    if at_open {
                        Some(candle.open)
                    } else if within && time_in_force == TimeInForce::Gtc {
                        Some(price)
                    } else {
                        None
                    }
                }
            };
            let Some(price) = price else {
                if matches!(order.kind, OrderKind::Limit { time_in_force: TimeInForce::Ioc, .. }) {
                    order.status = OrderStatus::Expired;
                    order.updated_ms = candle.open_ms;
                    self.orders.insert(id, order.clone());
                    changed.push((order, None));
                } else {
                    still_open.push(id);
                }
                continue;
            };
            let notional = price * order.quantity;
            let fee = notional * self.costs.fee_rate();
            let (base, quote) = (rules.base_asset.clone(), rules.quote_asset.clone());
            let covered = match order.side {
                Side::Buy => self.free(&quote) >= notional + fee,
                Side::Sell => self.free(&base) >= order.quantity,
            };
            if !covered {
                // The balance moved since the order was taken: refused as the exchange would.
                order.status = OrderStatus::Rejected;
                order.updated_ms = candle.open_ms;
                self.orders.insert(id, order.clone());
                changed.push((order, None));
                continue;
            }
            match order.side {
                Side::Buy => {
                    *self.balances.entry(quote.clone()).or_default() -= notional + fee;
                    *self.balances.entry(base).or_default() += order.quantity;
                }
                Side::Sell => {
                    *self.balances.entry(base).or_default() -= order.quantity;
                    *self.balances.entry(quote.clone()).or_default() += notional - fee;
                }
            }
            order.filled_quantity = order.quantity;
            order.filled_quote = notional;
            order.status = OrderStatus::Filled;
            order.updated_ms = candle.open_ms;
            let fill = Fill {
                symbol: symbol.to_owned(),
                client_id: order.client_id.clone(),
                order_id: order.exchange_id,
                trade_id: self.next_trade_id,
                side: order.side,
                price,
                quantity: order.quantity,
                fee,
                fee_asset: quote,
                maker: matches!(order.kind, OrderKind::Limit { .. }) && price != candle.open,
                time_ms: candle.open_ms,
            };
            self.next_trade_id += 1;
            self.fills.push(fill.clone());
            self.orders.insert(id, order.clone());
            changed.push((order, Some(fill)));
        }
        self.open = still_open;
        self.last_price.insert(symbol.to_owned(), candle.close);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    const H: i64 = 3_600_000;

    fn candle(i: i64, open: &str, high: &str, low: &str, close: &str) -> Kline {
        Kline {
            open_ms: i * H,
            open: d(open),
            high: d(high),
            low: d(low),
            close: d(close),
            volume: d("1"),
            close_ms: i * H + H - 1,
            closed: true,
        }
    }

    fn account() -> PaperAccount {
        let costs = Costs::from_bps(10.0, 5.0).expect("costs");
        let mut a = PaperAccount::new([("USDT".to_owned(), d("10000"))], costs);
        a.add_symbol(ExchangeRules::binance_default("BTCUSDT").expect("rules"));
        a
    }

    fn request(id: &str, side: Side, kind: OrderKind, quantity: &str) -> OrderRequest {
        OrderRequest {
            symbol: "BTCUSDT".into(),
            side,
            kind,
            quantity: d(quantity),
            client_id: ClientOrderId::new(id).expect("id"),
        }
    }

    #[test]
    fn a_market_order_fills_at_the_next_open_as_the_backtest_fills() {
        let mut a = account();
        assert!(a.place(&request("m0", Side::Buy, OrderKind::Market, "0.01"), 0).is_err(), "no price yet");
        a.on_candle("BTCUSDT", &candle(0, "50000", "50100", "49900", "50050"));
        let placed = a.place(&request("m1", Side::Buy, OrderKind::Market, "0.1"), H - 1).expect("taken");
        assert_eq!(placed.status, OrderStatus::New);
        let changed = a.on_candle("BTCUSDT", &candle(1, "50200", "50300", "50100", "50250"));
        let (order, fill) = &changed[0];
        let fill = fill.as_ref().expect("filled");
        // The engine's own execution price: the open plus 5 bp of slippage, on the tick.
        let costs = Costs::from_bps(10.0, 5.0).expect("costs");
        let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules").engine_rules();
        let expected = execution_price(d("50200"), Side::Buy, &costs, &rules);
        assert_eq!(expected, d("50225.10"));
        assert_eq!((order.status, fill.price), (OrderStatus::Filled, expected));
        assert_eq!(fill.fee, expected * d("0.1") * d("0.001"));
        let usdt = a.balances().into_iter().find(|b| b.asset == "USDT").expect("USDT").free;
        assert_eq!(usdt, d("10000") - expected * d("0.1") - fill.fee);
        // And back: the sell pays its fee from the proceeds.
        a.place(&request("m2", Side::Sell, OrderKind::Market, "0.1"), 2 * H - 1).expect("taken");
        let changed = a.on_candle("BTCUSDT", &candle(2, "50000", "50000", "50000", "50000"));
        let sold = changed[0].1.as_ref().expect("filled");
        assert_eq!(sold.price, execution_price(d("50000"), Side::Sell, &costs, &rules));
        assert!(a.balances().iter().any(|b| b.asset == "BTC" && b.free.is_zero()));
    }

    #[test]
    fn limits_fill_when_reached_an_ioc_expires_and_refusals_are_binances() {
        let mut a = account();
        a.on_candle("BTCUSDT", &candle(0, "50000", "50000", "50000", "50000"));
        a.place(
            &request(
                "l1",
                Side::Buy,
                OrderKind::Limit { price: d("49000"), time_in_force: TimeInForce::Gtc },
                "0.1",
            ),
            1,
        )
        .expect("taken");
        a.place(
            &request(
                "l2",
                Side::Buy,
                OrderKind::Limit { price: d("49000"), time_in_force: TimeInForce::Ioc },
                "0.1",
            ),
            1,
        )
        .expect("taken");
        let changed = a.on_candle("BTCUSDT", &candle(1, "50000", "50100", "49500", "49600"));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0.status, OrderStatus::Expired);
        assert_eq!(a.open_orders().len(), 1);
        let changed = a.on_candle("BTCUSDT", &candle(2, "49600", "49700", "48800", "48900"));
        let fill = changed[0].1.as_ref().expect("filled");
        assert_eq!((fill.price, fill.maker), (d("49000"), true));
        let dup = a.place(&request("l1", Side::Buy, OrderKind::Market, "0.1"), 3 * H);
        assert!(matches!(dup, Err(ExchangeError::Rejected { kind: RejectKind::DuplicateOrder, .. })));
        let broke = a.place(&request("b1", Side::Buy, OrderKind::Market, "1"), 3 * H);
        assert!(matches!(broke, Err(ExchangeError::Rejected { kind: RejectKind::InsufficientBalance, .. })));
        let tiny = a.place(&request("t1", Side::Buy, OrderKind::Market, "0.000001"), 3 * H);
        assert!(matches!(tiny, Err(ExchangeError::Blocked(_))));
        a.place(
            &request(
                "c1",
                Side::Sell,
                OrderKind::Limit { price: d("90000"), time_in_force: TimeInForce::Gtc },
                "0.05",
            ),
            3 * H,
        )
        .expect("taken");
        assert_eq!(
            a.cancel(&ClientOrderId::new("c1").expect("id"), 3 * H).expect("cancelled").status,
            OrderStatus::Canceled
        );
        assert!(a.cancel(&ClientOrderId::new("c1").expect("id"), 3 * H).is_err());
    }
}
