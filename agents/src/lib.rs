//! kuant's trading engine. Every agent is a state machine fed events, with no I/O inside: the same
//! strategy, risk, execution and portfolio code runs in the backtest loop, in a live session and in
//! tests.

pub mod backtest;
pub mod candles;
pub mod data;
pub mod events;
pub mod execution;
pub mod indicators;
pub mod portfolio;
pub mod price;
pub mod risk;
pub mod strategy;
pub mod watchdog;
