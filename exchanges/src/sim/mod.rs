//! `kuant exchange-sim`'s core: a Binance-spot-like exchange in memory.

pub mod matching;
pub mod replay;
pub mod server;

pub use matching::{BookShape, Changes, Depth, Engine, Fees};
pub use replay::{Candle, Replay, SimClock};
pub use server::{SimConfig, SimState, SimSymbol, router};
