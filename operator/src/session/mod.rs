//! The TradingSession controller: a session runs as one agent pod of a StatefulSet of one
//! replica, never two traders at once.
//!
//! Pure stages: [`children`] (the StatefulSet, its headless Service and the agent's image) and
//! [`plan`] (status, children, finalizer, Events). The IO around them is in [`controller`].

pub mod children;
pub mod controller;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod mock_api;
pub mod plan;
