//! Binance's answers that are not successes, mapped to what the caller must do: its HTTP status,
//! its `Retry-After` header and its error body (`{"code": -2010, "msg": "…"}`).

use std::time::Duration;

use serde::Deserialize;

use crate::error::{ExchangeError, RejectKind};
use crate::model::ClientOrderId;

/// Binance's error body.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// E.g. -2010.
    pub code: i64,
    /// E.g. "Account has insufficient balance for requested action."
    pub msg: String,
}

/// How long to wait after a 429 that names no wait.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);
/// How long to stay quiet after a 418 that names no end to the ban.
pub const DEFAULT_BAN_WAIT: Duration = Duration::from_secs(120);

/// The error an answer with HTTP `status` (not 2xx), `retry_after` (the header, in seconds) and
/// `body` means. `placing` names the order when the request placed one: an answer that does not
/// say whether it was accepted (a 5xx, Binance's -1007 timeout) then makes the outcome unknown.
pub fn classify(
    status: u16,
    retry_after: Option<u64>,
    body: &str,
    placing: Option<&ClientOrderId>,
) -> ExchangeError {
    let wait = |default: Duration| retry_after.map_or(default, Duration::from_secs);
    let parsed: Option<ErrorBody> = serde_json::from_str(body).ok();
    let unknown = |detail: String| match placing {
        Some(id) => ExchangeError::UnknownOutcome { client_id: id.clone(), detail },
        None => ExchangeError::Unavailable(detail),
    };
    match status {
        429 => {
            return ExchangeError::RateLimited { retry_after: wait(DEFAULT_RATE_LIMIT_WAIT), banned: false };
        }
        418 => return ExchangeError::RateLimited { retry_after: wait(DEFAULT_BAN_WAIT), banned: true },
        500.. => {
            let detail = match &parsed {
                Some(e) => format!("HTTP {status} ({}): {}", e.code, e.msg),
                None => format!("HTTP {status}"),
            };
            return unknown(detail);
        }
        _ => {}
    }
    let Some(ErrorBody { code, msg }) = parsed else {
        return ExchangeError::Protocol(format!(
            "HTTP {status} with a body that is not an error: {}",
            clip(body)
        ));
    };
    let rejected = |kind| ExchangeError::Rejected { code, reason: msg.clone(), kind };
    match code {
        -1003 => ExchangeError::RateLimited { retry_after: wait(DEFAULT_RATE_LIMIT_WAIT), banned: false },
        -1021 => ExchangeError::ClockSkew(msg),
        -1001 | -1006 | -1008 => unknown(format!("{code}: {msg}")),
        -1007 => unknown(format!("{code}: {msg}")),
        -1013 | -1111 | -1112 | -1115 | -1116 | -1117 => rejected(RejectKind::Filter),
        -2010 => {
            let lower = msg.to_ascii_lowercase();
            if lower.contains("insufficient balance") {
                rejected(RejectKind::InsufficientBalance)
            } else if lower.contains("duplicate order") {
                rejected(RejectKind::DuplicateOrder)
            } else {
                rejected(RejectKind::Other)
            }
        }
        -2011 | -2013 => rejected(RejectKind::UnknownOrder),
        -1002 | -1022 | -2014 | -2015 => rejected(RejectKind::Unauthorized),
        _ => rejected(RejectKind::Other),
    }
}

/// At most 200 characters of a body, for an error message.
fn clip(body: &str) -> String {
    let mut end = body.len().min(200);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/binance/errors/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn kind(e: &ExchangeError) -> Option<RejectKind> {
        match e {
            ExchangeError::Rejected { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[test]
    fn each_documented_error_maps_to_what_the_caller_must_do() {
        let id = ClientOrderId::new("kuant-1").expect("id");
        let order = Some(&id);
        let cases = [
            ("filter-failure", RejectKind::Filter),
            ("bad-precision", RejectKind::Filter),
            ("insufficient-balance", RejectKind::InsufficientBalance),
            ("duplicate-order", RejectKind::DuplicateOrder),
            ("unknown-order", RejectKind::UnknownOrder),
            ("no-such-order", RejectKind::UnknownOrder),
            ("invalid-signature", RejectKind::Unauthorized),
            ("invalid-api-key", RejectKind::Unauthorized),
        ];
        for (name, expected) in cases {
            let error = classify(400, None, &fixture(name), order);
            assert_eq!(kind(&error), Some(expected), "{name}: {error}");
            assert!(!error.is_retryable(), "{name} is never retried");
        }
        let skew = classify(400, None, &fixture("timestamp-outside-window"), order);
        assert!(matches!(skew, ExchangeError::ClockSkew(_)), "{skew}");
        let weight = classify(429, Some(7), &fixture("too-many-requests"), None);
        assert_eq!(weight, ExchangeError::RateLimited { retry_after: Duration::from_secs(7), banned: false });
        let ban = classify(418, Some(300), &fixture("too-many-requests"), None);
        assert_eq!(ban.wait(), Some(Duration::from_secs(300)));
        assert!(matches!(ban, ExchangeError::RateLimited { banned: true, .. }));
        let no_header = classify(429, None, "", None);
        assert_eq!(no_header.wait(), Some(DEFAULT_RATE_LIMIT_WAIT));
    }

    #[test]
    fn a_placement_without_a_clear_answer_has_an_unknown_outcome() {
        let id = ClientOrderId::new("kuant-2").expect("id");
        let timeout = classify(500, None, &fixture("timeout"), Some(&id));
        assert!(
            matches!(&timeout, ExchangeError::UnknownOutcome { client_id, .. } if *client_id == id),
            "{timeout}"
        );
        assert!(!timeout.is_retryable(), "an unknown outcome is resolved by a query, not a resend");
        let gateway = classify(503, None, "<html>Service Unavailable</html>", Some(&id));
        assert!(matches!(gateway, ExchangeError::UnknownOutcome { .. }));
        // The same for a read is only an outage: ask again.
        let read = classify(502, None, "", None);
        assert!(matches!(read, ExchangeError::Unavailable(_)) && read.is_retryable());
        let garbage = classify(400, None, "<html>nope</html>", None);
        assert!(matches!(garbage, ExchangeError::Protocol(_)));
    }
}
