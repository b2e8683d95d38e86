//! Binance spot, as its API documentation describes it (REST `/api/v3`, the WebSocket market
//! streams, and the WebSocket API's user data stream subscription: the spot listenKey was
//! discontinued on 2026-02-20).

pub mod codes;
pub mod limits;
pub mod rest;
pub mod sign;
pub mod stream;
pub mod user_stream;
pub mod wire;

pub use codes::classify;
pub use limits::{RateGate, ServerClock, Wait, WaitReason};
pub use sign::{Credentials, CredentialsError};
