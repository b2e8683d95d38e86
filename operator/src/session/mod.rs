//! The TradingSession controller (issue 16, under way): a session runs as one agent pod of a
//! StatefulSet of one replica, never two traders at once.
//!
//! Pure stages so far: [`children`] (the StatefulSet, its headless Service and the agent's
//! image).

pub mod children;
