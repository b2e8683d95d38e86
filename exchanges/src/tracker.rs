//! What a session knows of its orders, fed by whatever the exchange says, in whatever order it
//! says it: the answer to a placement, the user data stream's updates, a query after a
//! reconnect or a restart. Each order only moves forward (new → partially filled → filled,
//! cancelled, rejected or expired; the filled quantity never shrinks), so a late or repeated
//! report changes nothing; each fill counts once, by its trade id, however often it is reported.
//!
//! Pure: no IO. The session applies what it hears and acts on what changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::model::{ClientOrderId, Fill, Order, OrderStatus};

/// How far along its life a status is: a report may only move an order to a later stage.
fn stage(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::New => 0,
        OrderStatus::PartiallyFilled | OrderStatus::PendingCancel => 1,
        OrderStatus::Filled | OrderStatus::Canceled | OrderStatus::Rejected | OrderStatus::Expired => 2,
    }
}

/// What applying a report did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The order after the report, when the report moved it (or it was new to the tracker).
    pub changed: Option<Order>,
    /// The fill, when this is the first time it was heard of.
    pub new_fill: Option<Fill>,
}

/// The orders of one session, by client order id.
#[derive(Debug, Default)]
pub struct OrderTracker {
    orders: HashMap<ClientOrderId, Order>,
    fills: HashSet<(Arc<str>, u64)>,
}

impl OrderTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// The order with `client_id`, as last known.
    pub fn get(&self, client_id: &ClientOrderId) -> Option<&Order> {
        self.orders.get(client_id)
    }

    /// The orders that can still fill.
    pub fn open(&self) -> impl Iterator<Item = &Order> {
        self.orders.values().filter(|o| o.status.is_open())
    }

    /// Applies a report of `order` (with the fill it carries, if any): the order moves only
    /// forward, the fill counts only the first time.
    pub fn apply(&mut self, order: &Order, fill: Option<&Fill>) -> Applied {
        let new_fill = fill.filter(|f| self.fills.insert((f.symbol.clone(), f.trade_id))).cloned();
        let changed = match self.orders.get_mut(&order.client_id) {
            None => {
                self.orders.insert(order.client_id.clone(), order.clone());
                Some(order.clone())
            }
            Some(known) => {
                let later = stage(order.status) > stage(known.status)
                    || (stage(order.status) == stage(known.status)
                        && stage(known.status) < 2
                        && order.filled_quantity > known.filled_quantity);
                let no_less_filled = order.filled_quantity >= known.filled_quantity;
                if later && no_less_filled {
                    *known = order.clone();
                    Some(order.clone())
                } else {
                    None
                }
            }
        };
        Applied { changed, new_fill }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::model::{OrderKind, OrderRequest, Side};

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn order(status: OrderStatus, filled: &str) -> Order {
        let request = OrderRequest {
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            kind: OrderKind::Market,
            quantity: d("1"),
            client_id: ClientOrderId::new("t-1").expect("id"),
        };
        let mut o = Order::accepted(&request, "BTCUSDT".into(), 7, 0);
        o.status = status;
        o.filled_quantity = d(filled);
        o
    }

    fn fill(trade_id: u64, quantity: &str) -> Fill {
        Fill {
            symbol: "BTCUSDT".into(),
            client_id: ClientOrderId::new("t-1").expect("id"),
            order_id: 7,
            trade_id,
            side: Side::Buy,
            price: d("100"),
            quantity: d(quantity),
            fee: d("0"),
            fee_asset: "BTC".into(),
            maker: false,
            time_ms: 0,
        }
    }

    #[test]
    fn an_order_only_moves_forward_and_a_fill_counts_once() {
        let mut t = OrderTracker::new();
        assert!(t.apply(&order(OrderStatus::New, "0"), None).changed.is_some(), "new to the tracker");
        let part = t.apply(&order(OrderStatus::PartiallyFilled, "0.4"), Some(&fill(1, "0.4")));
        assert!(part.changed.is_some() && part.new_fill.is_some());
        // The same report again (a duplicated stream message, a query after a reconnect).
        let again = t.apply(&order(OrderStatus::PartiallyFilled, "0.4"), Some(&fill(1, "0.4")));
        assert_eq!(again, Applied::default());
        // A late NEW changes nothing; more filled moves it on.
        assert_eq!(t.apply(&order(OrderStatus::New, "0"), None), Applied::default());
        assert!(
            t.apply(&order(OrderStatus::PartiallyFilled, "0.7"), Some(&fill(2, "0.3"))).changed.is_some()
        );
        assert_eq!(t.open().count(), 1);
        let done = t.apply(&order(OrderStatus::Filled, "1"), Some(&fill(3, "0.3")));
        assert_eq!(done.changed.map(|o| o.status), Some(OrderStatus::Filled));
        // Nothing moves an ended order, not even a late partial fill report (its fill still counts
        // once if it was never heard of).
        let late = t.apply(&order(OrderStatus::PartiallyFilled, "0.7"), Some(&fill(2, "0.3")));
        assert_eq!(late, Applied::default());
        assert_eq!(t.apply(&order(OrderStatus::Canceled, "1"), None), Applied::default());
        assert_eq!(t.open().count(), 0);
        assert_eq!(
            t.get(&ClientOrderId::new("t-1").expect("id")).map(|o| o.status),
            Some(OrderStatus::Filled)
        );
    }
}
