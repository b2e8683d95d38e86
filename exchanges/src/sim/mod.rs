//! `kuant exchange-sim`'s core: a Binance-spot-like exchange in memory.

pub mod matching;

pub use matching::{BookShape, Changes, Depth, Engine, Fees};
