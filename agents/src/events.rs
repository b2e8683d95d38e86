//! The event chain every run records: signal → intent → order_submitted → fill | trade_blocked.
//! Every event carries its run, a correlation id (the signal's id) and the id of the event that
//! caused it. Ids are deterministic — derived from the run and a sequence number — so the same
//! run gives the same events, and persisting one twice can be deduplicated on its id.

use std::fmt;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use uuid::Uuid;

use crate::price::Price;
use crate::strategy::Side;

/// Id of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EventId(pub Uuid);

/// Idempotent client order id: the same intent always yields the same id, so a resubmission
/// after a restart is recognised by the exchange instead of doubling the order.
/// Shape: `kq` + 30 hex digits, within Binance's `^[.A-Z:/a-z0-9_-]{1,36}$`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientOrderId(pub Uuid);

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.0.simple().to_string();
        write!(f, "kq{}", &hex[..30])
    }
}

impl Serialize for ClientOrderId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Makes the ids of one run: the run's hash in the high half, a sequence in the low half,
/// stamped as a version-8 (custom) UUID.
#[derive(Clone, Debug)]
pub struct IdGenerator {
    run_hash: u64,
    next: u64,
}

impl IdGenerator {
    /// Ids for the run `run_id` (and sub-stream `stream`, e.g. the symbol).
    pub fn new(run_id: &str, stream: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in run_id.bytes().chain([0]).chain(stream.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self { run_hash: h, next: 0 }
    }

    /// The next id.
    #[inline]
    pub fn next_uuid(&mut self) -> Uuid {
        self.next += 1;
        uuid::Builder::from_custom_bytes(
            ((u128::from(self.run_hash) << 64) | u128::from(self.next)).to_be_bytes(),
        )
        .into_uuid()
    }
}

/// Why an intended trade did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// Not enough cash for the smallest order the symbol allows.
    InsufficientFunds,
    /// Quantity below the symbol's minimum after rounding to its lot size.
    BelowMinQuantity,
    /// Order value below the symbol's minimum notional.
    BelowMinNotional,
    /// The data ended before the order could fill (a signal on the last bar).
    EndOfData,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A strategy signalled at a bar's close.
    Signal {
        /// Buy or sell.
        side: Side,
        /// Close of the signalling bar.
        #[serde(serialize_with = "price_str")]
        price: Price,
    },
    /// The engine intends to act on a signal.
    Intent {
        /// Buy or sell.
        side: Side,
        /// Quote to spend (buys).
        #[serde(skip_serializing_if = "Option::is_none")]
        quote_budget: Option<Decimal>,
        /// Quantity to sell (sells).
        #[serde(skip_serializing_if = "Option::is_none")]
        quantity: Option<Decimal>,
    },
    /// A market order left for the (simulated) exchange.
    OrderSubmitted {
        /// Idempotent client order id.
        client_order_id: ClientOrderId,
        /// Buy or sell.
        side: Side,
    },
    /// The order filled.
    Fill {
        /// The order.
        client_order_id: ClientOrderId,
        /// Buy or sell.
        side: Side,
        /// Execution price, after slippage.
        price: Decimal,
        /// Base quantity.
        quantity: Decimal,
        /// Fee in the quote asset.
        fee: Decimal,
    },
    /// The trade was refused before or at the exchange.
    TradeBlocked {
        /// Why.
        reason: BlockReason,
        /// Details for a human.
        detail: String,
    },
}

fn price_str<S: Serializer>(p: &Price, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// One event of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// This event's id.
    pub id: EventId,
    /// The id of the signal that started the chain.
    pub correlation_id: EventId,
    /// The id of the event that caused this one (absent for a signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<EventId>,
    /// Symbol the event concerns.
    pub symbol: Arc<str>,
    /// Open time of the bar during which it happened (Unix ms).
    pub time_ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_per_run_and_distinct_across_runs() {
        let mut a = IdGenerator::new("run-1", "BTCUSDT");
        let mut b = IdGenerator::new("run-1", "BTCUSDT");
        let mut c = IdGenerator::new("run-2", "BTCUSDT");
        let (a1, b1, c1) = (a.next_uuid(), b.next_uuid(), c.next_uuid());
        assert_eq!(a1, b1);
        assert_ne!(a1, c1);
        assert_ne!(a1, a.next_uuid());
    }

    #[test]
    fn client_order_ids_fit_binance() {
        let id = ClientOrderId(IdGenerator::new("r", "s").next_uuid()).to_string();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    }
}
