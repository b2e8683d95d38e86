//! `kuant exchange-sim`'s core: a Binance-spot-like exchange in memory.

pub mod faults;
pub mod matching;
pub mod replay;
pub mod server;
pub mod streams;

pub use faults::{Fault, Faults, Scheduled};
pub use matching::{BookShape, Changes, Depth, Engine, Fees};
pub use replay::{Candle, Replay, SimClock, Speed};
pub use server::{SimConfig, SimState, SimSymbol, router, serve_on_loopback};
