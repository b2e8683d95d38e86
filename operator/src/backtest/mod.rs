//! The Backtest controller: a Backtest runs in a Job it owns, and its status follows the Job.
//!
//! Pure stages: [`validate`] (the spec), [`job`] (the desired Job), [`state`] (what the Job and
//! its pods say), [`plan`] (status, action, Events). The IO around them is in the controller.

pub mod controller;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod job;
#[cfg(test)]
mod mock_api;
pub mod plan;
pub mod state;
pub mod validate;
