//! `kuant agent …`: the roles that run inside pods the operator starts.

pub mod backtest;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod session;
