//! The failures `kuant exchange-sim` injects on request: the ones trading systems die of.
//!
//! Set through the admin API (`POST /_sim/faults`, JSON, below) or a schedule file at start.
//! Pure: the caller passes the time.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One fault to inject, as the admin API and the schedule file spell it
/// (`{"kind": "silence", "seconds": 60}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Fault {
    /// Market streams stop sending while their connections stay open (no close, no error).
    Silence {
        /// For how long.
        seconds: f64,
    },
    /// Every open WebSocket connection is dropped (closed without a close frame).
    DropConnections,
    /// REST requests are answered with `status` (429, 418 or a 5xx) and Binance's body, for the
    /// next `count` requests or for `seconds` (either, or both: whichever ends first).
    Http {
        /// 429, 418, 500, 502, 503 or 504.
        status: u16,
        /// How many requests.
        #[serde(default)]
        count: Option<u32>,
        /// For how long.
        #[serde(default)]
        seconds: Option<f64>,
        /// The `Retry-After` header of a 429 or 418, in seconds.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Every REST answer is delayed by `ms` after the request was acted on (0 turns it off).
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// Market stream messages are sent twice (`duplicate`) and/or pairs swapped (`reorder`).
    Stream {
        /// Send each message twice.
        #[serde(default)]
        duplicate: bool,
        /// Swap each message with the next.
        #[serde(default)]
        reorder: bool,
    },
    /// The next `count` orders are rejected (-2010 "New order rejected").
    RejectOrders {
        /// How many.
        count: u32,
    },
    /// The next `count` orders are accepted (they exist and may fill) but answered with Binance's
    /// -1007 timeout: the caller cannot know whether they were placed.
    TimeoutAfterAccept {
        /// How many.
        count: u32,
    },
    /// The exchange's clock runs `ms` ahead (negative: behind) of this machine's: `time` says so
    /// and signed requests are judged by it (a client that does not measure it gets -1021).
    ClockSkew {
        /// Milliseconds.
        ms: i64,
    },
}

/// An HTTP error being injected.
#[derive(Clone, Debug, PartialEq)]
struct HttpFault {
    status: u16,
    remaining: Option<u32>,
    until: Option<Instant>,
    retry_after: Option<u64>,
}

/// The faults in force.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    silent_until: Option<Instant>,
    /// Bumped on every `drop-connections`: a connection opened before the bump closes.
    pub connection_epoch: u64,
    http: Option<HttpFault>,
    latency: Duration,
    /// Send market messages twice.
    pub duplicate: bool,
    /// Swap market messages pairwise.
    pub reorder: bool,
    reject_orders: u32,
    timeout_orders: u32,
    /// How far the exchange's clock is ahead of the machine's, in ms.
    pub clock_skew_ms: i64,
}

/// What to do with a REST request, by the faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpVerdict {
    /// Serve it (after the latency).
    Serve(Duration),
    /// Answer with this status and `Retry-After`.
    Fail {
        /// The status.
        status: u16,
        /// The header, in seconds.
        retry_after: Option<u64>,
    },
}

/// What to do with an order, by the faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderVerdict {
    /// Place it and answer.
    Place,
    /// Refuse it.
    Reject,
    /// Place it and answer with a timeout.
    PlaceThenTimeOut,
}

impl Faults {
    /// Puts `fault` in force at `now`. Refuses a fault that makes no sense.
    pub fn apply(&mut self, fault: &Fault, now: Instant) -> Result<(), String> {
        let duration = |seconds: f64| {
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| format!("seconds must be a non-negative number, not {seconds}"))
        };
        match fault {
            Fault::Silence { seconds } => self.silent_until = Some(now + duration(*seconds)?),
            Fault::DropConnections => self.connection_epoch += 1,
            Fault::Http { status, count, seconds, retry_after } => {
                if !matches!(status, 418 | 429 | 500 | 502 | 503 | 504) {
                    return Err(format!("status {status} is not one of 418, 429, 500, 502, 503, 504"));
                }
                if count.is_none() && seconds.is_none() {
                    return Err("an http fault needs count or seconds".into());
                }
                let until = seconds.map(duration).transpose()?.map(|d| now + d);
                self.http =
                    Some(HttpFault { status: *status, remaining: *count, until, retry_after: *retry_after });
            }
            Fault::Latency { ms } => self.latency = Duration::from_millis(*ms),
            Fault::Stream { duplicate, reorder } => {
                self.duplicate = *duplicate;
                self.reorder = *reorder;
            }
            Fault::RejectOrders { count } => self.reject_orders = *count,
            Fault::TimeoutAfterAccept { count } => self.timeout_orders = *count,
            Fault::ClockSkew { ms } => self.clock_skew_ms = *ms,
        }
        Ok(())
    }

    /// Ends every fault (connections already dropped stay dropped).
    pub fn clear(&mut self) {
        let epoch = self.connection_epoch;
        *self = Self { connection_epoch: epoch, ..Self::default() };
    }

    /// Whether the market streams are silent at `now`.
    pub fn silent(&self, now: Instant) -> bool {
        self.silent_until.is_some_and(|until| now < until)
    }

    /// The verdict on a REST request at `now` (counted against a `count`).
    pub fn http(&mut self, now: Instant) -> HttpVerdict {
        if let Some(fault) = &mut self.http {
            let live = fault.until.is_none_or(|u| now < u) && fault.remaining.is_none_or(|r| r > 0);
            if live {
                if let Some(r) = &mut fault.remaining {
                    *r -= 1;
                }
                return HttpVerdict::Fail { status: fault.status, retry_after: fault.retry_after };
            }
            self.http = None;
        }
        HttpVerdict::Serve(self.latency)
    }

    /// The verdict on an order (counted against a `count`).
    pub fn order(&mut self) -> OrderVerdict {
        if self.reject_orders > 0 {
            self.reject_orders -= 1;
            return OrderVerdict::Reject;
        }
        if self.timeout_orders > 0 {
            self.timeout_orders -= 1;
            return OrderVerdict::PlaceThenTimeOut;
        }
        OrderVerdict::Place
    }

    /// What is in force, for `GET /_sim/faults`.
    pub fn describe(&self, now: Instant) -> serde_json::Value {
        serde_json::json!({
            "silentForSeconds": self.silent_until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
            "connectionEpoch": self.connection_epoch,
            "http": self.http.as_ref().map(|h| serde_json::json!({
                "status": h.status, "remaining": h.remaining,
                "forSeconds": h.until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
            })),
            "latencyMs": self.latency.as_millis() as u64,
            "duplicate": self.duplicate,
            "reorder": self.reorder,
            "rejectOrders": self.reject_orders,
            "timeoutAfterAccept": self.timeout_orders,
            "clockSkewMs": self.clock_skew_ms,
        })
    }
}

/// A fault at a time after start, in a schedule file (YAML: a list of `{at: SECONDS, kind: …}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    /// Seconds after start.
    pub at: f64,
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_read_as_the_admin_api_spells_them() {
        let f: Fault =
            serde_json::from_str(r#"{"kind": "http", "status": 429, "count": 3, "retryAfter": 2}"#)
                .expect("an http fault");
        assert_eq!(f, Fault::Http { status: 429, count: Some(3), seconds: None, retry_after: Some(2) });
        let s: Vec<Scheduled> = serde_yaml::from_str(
            "- at: 5\n  kind: silence\n  seconds: 30\n- at: 10\n  kind: drop-connections\n",
        )
        .expect("a schedule");
        assert_eq!(s[1].fault, Fault::DropConnections);
        assert!(serde_json::from_str::<Fault>(r#"{"kind": "silence", "secs": 1}"#).is_err());
    }

    #[test]
    fn an_http_fault_ends_after_its_count_or_its_time() {
        let t0 = Instant::now();
        let mut faults = Faults::default();
        faults
            .apply(&Fault::Http { status: 503, count: Some(2), seconds: None, retry_after: None }, t0)
            .expect("ok");
        assert!(matches!(faults.http(t0), HttpVerdict::Fail { status: 503, .. }));
        assert!(matches!(faults.http(t0), HttpVerdict::Fail { .. }));
        assert_eq!(faults.http(t0), HttpVerdict::Serve(Duration::ZERO));
        faults
            .apply(&Fault::Http { status: 418, count: None, seconds: Some(1.0), retry_after: Some(60) }, t0)
            .expect("ok");
        assert_eq!(faults.http(t0), HttpVerdict::Fail { status: 418, retry_after: Some(60) });
        assert_eq!(faults.http(t0 + Duration::from_secs(2)), HttpVerdict::Serve(Duration::ZERO));
        assert!(
            faults
                .apply(&Fault::Http { status: 404, count: Some(1), seconds: None, retry_after: None }, t0)
                .is_err()
        );
        assert!(
            faults
                .apply(&Fault::Http { status: 429, count: None, seconds: None, retry_after: None }, t0)
                .is_err()
        );
    }

    #[test]
    fn silence_orders_and_clear() {
        let t0 = Instant::now();
        let mut faults = Faults::default();
        faults.apply(&Fault::Silence { seconds: 5.0 }, t0).expect("ok");
        assert!(faults.silent(t0 + Duration::from_secs(4)));
        assert!(!faults.silent(t0 + Duration::from_secs(5)));
        faults.apply(&Fault::RejectOrders { count: 1 }, t0).expect("ok");
        faults.apply(&Fault::TimeoutAfterAccept { count: 1 }, t0).expect("ok");
        assert_eq!(faults.order(), OrderVerdict::Reject);
        assert_eq!(faults.order(), OrderVerdict::PlaceThenTimeOut);
        assert_eq!(faults.order(), OrderVerdict::Place);
        faults.apply(&Fault::DropConnections, t0).expect("ok");
        faults.apply(&Fault::Latency { ms: 20 }, t0).expect("ok");
        faults.clear();
        assert_eq!(faults.connection_epoch, 1, "a drop is not undone");
        assert_eq!(faults.http(t0), HttpVerdict::Serve(Duration::ZERO));
        assert!(faults.apply(&Fault::Silence { seconds: -1.0 }, t0).is_err());
    }
}
