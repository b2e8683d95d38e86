//! Helpers of the end-to-end suite.

pub mod cluster;
pub mod sim;
