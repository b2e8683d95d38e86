//! kuant's session runtime: the IO shell that drives the engine's agents (strategy, risk desk,
//! market-data watchdog, order tracker — all pure, in `kuant-agents` and `kuant-exchanges`)
//! against an [`kuant_exchanges::Exchange`]: Binance, a `kuant exchange-sim`, or the paper account.
//!
//! Built so far: [`trader::Trader`], one strategy on one symbol — warm-up from REST klines,
//! decisions on closed candles only while the data is healthy, every intent through the risk
//! desk before its order leaves, orders and fills followed from the exchange's answers and its
//! account updates. The session around it (several strategies and symbols, the store, status,
//! recovery, the kill switch) is issue 15's remaining work.

pub mod judge;
pub mod reconcile;
pub mod record;
pub mod recovery;
pub mod session;
pub mod status;
pub mod trader;

pub use judge::{Judge, Proposal, RulesJudge, Verdict};
pub use session::{Report, Snapshot, SpecError};
pub use trader::{Noted, Plan, Step, Trader, TraderError};
