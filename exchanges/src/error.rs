//! What can go wrong talking to an exchange, typed by what the caller must do about it.

use std::time::Duration;

use crate::model::ClientOrderId;
use crate::rules::RuleViolation;

/// Why the exchange refused a request, when the caller may act on the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    /// A symbol rule (filters, precision).
    Filter,
    /// The balance cannot cover the order.
    InsufficientBalance,
    /// An order with this client id was already sent.
    DuplicateOrder,
    /// No such order (cancel or query).
    UnknownOrder,
    /// The key, its permissions or the signature.
    Unauthorized,
    /// Anything else the exchange refused (a bad parameter, say).
    Other,
}

/// An exchange error. Only [`ExchangeError::Unavailable`] and [`ExchangeError::RateLimited`]
/// are worth sending again (after the wait); [`ExchangeError::UnknownOutcome`] is resolved by
/// asking for the order by its client id, never by sending it again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// Refused before it was sent: it breaks the symbol's rules.
    #[error("blocked before sending: {0}")]
    Blocked(#[from] RuleViolation),
    /// Refused by the exchange, with its code and reason. Never retried.
    #[error("rejected by the exchange ({code}): {reason}")]
    Rejected {
        /// The exchange's error code (Binance: e.g. -2010).
        code: i64,
        /// The exchange's message.
        reason: String,
        /// What kind of refusal it is.
        kind: RejectKind,
    },
    /// Too many requests: wait `retry_after` before the next one. `banned` (Binance's 418) means
    /// the exchange stopped answering this client until then.
    #[error("rate limited{}: retry after {retry_after:?}", if *.banned { " (banned)" } else { "" })]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
        /// Whether it is a ban (418) rather than a warning (429).
        banned: bool,
    },
    /// The request's timestamp is outside the exchange's window: the clock offset must be
    /// measured again.
    #[error("clock skew: {0}")]
    ClockSkew(String),
    /// The exchange did not take the request (an outage, a connection refused, a 5xx before
    /// anything was accepted). Safe to send again.
    #[error("exchange unavailable: {0}")]
    Unavailable(String),
    /// An order was sent and no answer came (a timeout, a 5xx that may have been accepted):
    /// it may or may not exist. Ask for it by its client id; never send it again.
    #[error("the outcome of order {client_id} is unknown: {detail}")]
    UnknownOutcome {
        /// The order to ask for.
        client_id: ClientOrderId,
        /// What happened.
        detail: String,
    },
    /// The exchange answered something this adapter cannot read.
    #[error("unexpected answer from the exchange: {0}")]
    Protocol(String),
}

impl ExchangeError {
    /// Whether sending the same request again (after [`ExchangeError::wait`]) is right.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::RateLimited { .. } | Self::ClockSkew(_))
    }

    /// How long to wait before the next request, when the exchange said.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}
