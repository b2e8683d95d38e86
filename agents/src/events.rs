//! The event chain every run records: signal → intent → order_submitted → fill | trade_blocked.
//! Every event carries a correlation id (the signal that started its chain) and the id of the
//! event that caused it.
//!
//! While a run simulates, an event is compact: ids are sequence numbers within the run's stream
//! (one stream per symbol). They become UUIDs — the run's hash in the high half, the sequence in
//! the low half — when the event is reported or stored, so the same run always gives the same ids
//! and persisting an event twice can be deduplicated on its id.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use uuid::Uuid;

use crate::price::Price;
use crate::strategy::Side;

/// Sequence number of an event within its stream: 1, 2, 3, …
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq(pub NonZeroU64);

/// Idempotent client order id: the same order event always yields the same id, so a resubmission
/// after a restart is recognised by the exchange instead of doubling the order.
/// Shape: `kq` + the 32 hex digits of the order event's id (34 characters), within Binance's
/// `^[.A-Z:/a-z0-9_-]{1,36}$`; distinct order events give distinct ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientOrderId(pub Uuid);

impl ClientOrderId {
    /// The id `text` shows (`kq` + 32 hex digits), when it is one.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("kq").filter(|h| h.len() == 32)?;
        Uuid::try_parse(hex).ok().map(Self)
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kq{}", self.0.simple())
    }
}

impl Serialize for ClientOrderId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The id space of one stream of one run: turns sequence numbers into UUIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdSpace {
    run_hash: u64,
}

impl IdSpace {
    /// The ids of run `run_id`, stream `stream` (e.g. the symbol).
    pub fn new(run_id: &str, stream: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in run_id.bytes().chain([0]).chain(stream.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self { run_hash: h }
    }

    /// The UUID of event `seq`: a version-8 (custom) UUID.
    pub fn event_id(&self, seq: Seq) -> Uuid {
        let bits = (u128::from(self.run_hash) << 64) | u128::from(seq.0.get());
        uuid::Builder::from_custom_bytes(bits.to_be_bytes()).into_uuid()
    }

    /// The sequence number of `id` when it is one of this space's event ids (a restart finds
    /// which of the orders an exchange holds are its own, and of which decision).
    pub fn seq_of(&self, id: Uuid) -> Option<Seq> {
        let own = self.event_id(Seq(NonZeroU64::MIN)).as_u128() >> 64;
        let bits = id.as_u128();
        if bits >> 64 != own {
            return None;
        }
        // The variant's two bits took the top of the low half; sequence numbers stay below.
        NonZeroU64::new((bits as u64) & ((1 << 62) - 1)).map(Seq)
    }

    /// The client order id of the order submitted as event `seq`.
    pub fn client_order_id(&self, order_event: Seq) -> ClientOrderId {
        ClientOrderId(self.event_id(order_event))
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
    /// An amount would leave the exact decimal range (about 7.9e28).
    AmountOutOfRange,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A strategy signalled at a bar's close (the price).
    Signal {
        /// Buy or sell.
        side: Side,
        /// Close of the signalling bar.
        price: Price,
    },
    /// The engine intends to act: buy for `amount` of quote, or sell `amount` of base.
    Intent {
        /// Buy or sell.
        side: Side,
        /// Quote budget of a buy, base quantity of a sell.
        amount: Decimal,
    },
    /// A market order left for the (simulated) exchange; its client order id derives from this
    /// event's id.
    OrderSubmitted {
        /// Buy or sell.
        side: Side,
    },
    /// The order that caused this event filled.
    Fill {
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
        detail: Box<str>,
    },
}

/// One event of one symbol's stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// This event's sequence number.
    pub seq: Seq,
    /// The signal that started the chain (itself, for a signal).
    pub correlation: Seq,
    /// The event that caused this one (none for a signal).
    pub causation: Option<Seq>,
    /// Open time of the bar during which it happened (Unix ms).
    pub time_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// An event with its symbol and ids, as runs report and store it.
#[derive(Clone, Debug, PartialEq)]
pub struct SymbolEvent {
    /// Symbol the event concerns.
    pub symbol: Arc<str>,
    /// The ids of the symbol's stream.
    pub ids: IdSpace,
    /// The event.
    pub event: Event,
}

impl SymbolEvent {
    /// The event's id.
    pub fn id(&self) -> Uuid {
        self.ids.event_id(self.event.seq)
    }

    /// The id of the signal that started its chain.
    pub fn correlation_id(&self) -> Uuid {
        self.ids.event_id(self.event.correlation)
    }

    /// The id of the event that caused it (none for a signal).
    pub fn causation_id(&self) -> Option<Uuid> {
        self.event.causation.map(|seq| self.ids.event_id(seq))
    }
}

#[derive(Serialize)]
struct EventOut<'a> {
    id: Uuid,
    correlation_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<Uuid>,
    symbol: &'a str,
    time_ms: i64,
    #[serde(flatten)]
    kind: KindOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum KindOut<'a> {
    Signal {
        side: Side,
        price: String,
    },
    Intent {
        side: Side,
        #[serde(skip_serializing_if = "Option::is_none")]
        quote_budget: Option<&'a Decimal>,
        #[serde(skip_serializing_if = "Option::is_none")]
        quantity: Option<&'a Decimal>,
    },
    OrderSubmitted {
        client_order_id: ClientOrderId,
        side: Side,
    },
    Fill {
        client_order_id: Option<ClientOrderId>,
        side: Side,
        price: &'a Decimal,
        quantity: &'a Decimal,
        fee: &'a Decimal,
    },
    TradeBlocked {
        reason: BlockReason,
        detail: &'a str,
    },
}

impl Serialize for SymbolEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = &self.event;
        let kind = match &e.kind {
            EventKind::Signal { side, price } => KindOut::Signal { side: *side, price: price.to_string() },
            EventKind::Intent { side: side @ Side::Buy, amount } => {
                KindOut::Intent { side: *side, quote_budget: Some(amount), quantity: None }
            }
            EventKind::Intent { side: side @ Side::Sell, amount } => {
                KindOut::Intent { side: *side, quote_budget: None, quantity: Some(amount) }
            }
            EventKind::OrderSubmitted { side } => {
                KindOut::OrderSubmitted { client_order_id: self.ids.client_order_id(e.seq), side: *side }
            }
            EventKind::Fill { side, price, quantity, fee } => KindOut::Fill {
                client_order_id: e.causation.map(|order| self.ids.client_order_id(order)),
                side: *side,
                price,
                quantity,
                fee,
            },
            EventKind::TradeBlocked { reason, detail } => KindOut::TradeBlocked { reason: *reason, detail },
        };
        EventOut {
            id: self.id(),
            correlation_id: self.correlation_id(),
            causation_id: e.causation.map(|c| self.ids.event_id(c)),
            symbol: &self.symbol,
            time_ms: e.time_ms,
            kind,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> Seq {
        Seq(NonZeroU64::new(n).expect("non-zero"))
    }

    #[test]
    fn ids_are_deterministic_per_run_and_distinct_across_runs() {
        let (a, b, c) = (
            IdSpace::new("run-1", "BTCUSDT"),
            IdSpace::new("run-1", "BTCUSDT"),
            IdSpace::new("run-2", "BTCUSDT"),
        );
        assert_eq!(a.event_id(seq(1)), b.event_id(seq(1)));
        assert_ne!(a.event_id(seq(1)), c.event_id(seq(1)));
        assert_ne!(a.event_id(seq(1)), a.event_id(seq(2)));
        assert_ne!(a, IdSpace::new("run-1", "ETHUSDT"));
    }

    #[test]
    fn an_id_space_knows_its_own_ids_and_their_sequence_numbers() {
        let (a, b) = (IdSpace::new("run-1", "BTCUSDT/0"), IdSpace::new("run-1", "BTCUSDT/1"));
        for n in [1, 4, (123_456 << 16) | 4, (1 << 62) - 1] {
            let id = a.event_id(seq(n));
            assert_eq!(a.seq_of(id), Some(seq(n)));
            assert_eq!(b.seq_of(id), None, "another stream's id");
            let client = a.client_order_id(seq(n));
            assert_eq!(ClientOrderId::parse(&client.to_string()), Some(client));
        }
        assert_eq!(ClientOrderId::parse("kq123"), None);
        assert_eq!(ClientOrderId::parse("web_order_1"), None);
    }

    #[test]
    fn client_order_ids_fit_binance() {
        let id = IdSpace::new("r", "s").client_order_id(seq(3)).to_string();
        assert_eq!(id.len(), 34);
        assert!(id.starts_with("kq") && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    }

    #[test]
    fn every_order_of_a_run_gets_its_own_client_order_id() {
        let ids = IdSpace::new("run", "BTCUSDT");
        let all: std::collections::HashSet<String> =
            (1..=100_000).map(|n| ids.client_order_id(seq(n)).to_string()).collect();
        assert_eq!(all.len(), 100_000);
    }

    #[test]
    fn a_fill_reports_the_client_order_id_of_its_order() {
        let ids = IdSpace::new("r", "s");
        let fill = SymbolEvent {
            symbol: "BTCUSDT".into(),
            ids,
            event: Event {
                seq: seq(4),
                correlation: seq(1),
                causation: Some(seq(3)),
                time_ms: 7,
                kind: EventKind::Fill {
                    side: Side::Buy,
                    price: Decimal::ONE,
                    quantity: Decimal::TWO,
                    fee: Decimal::ZERO,
                },
            },
        };
        let json = serde_json::to_value(&fill).expect("serializes");
        assert_eq!(json["type"], "fill");
        assert_eq!(json["client_order_id"], ids.client_order_id(seq(3)).to_string());
        assert_eq!(json["causation_id"], ids.event_id(seq(3)).to_string());
        assert_eq!(json["correlation_id"], ids.event_id(seq(1)).to_string());
        assert_eq!(json["quantity"], "2");
        assert_eq!(json["symbol"], "BTCUSDT");
    }
}
