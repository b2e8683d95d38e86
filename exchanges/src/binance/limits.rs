//! Pacing requests the way Binance counts them, and its clock: pure state machines fed with
//! times and headers, so every decision is tested without a network.
//!
//! - Weight: Binance counts request weight per minute of its clock and reports the minute's
//!   total in `X-MBX-USED-WEIGHT-1M`. A request that would cross the budget waits for the next
//!   minute instead of earning a 429.
//! - 429 (and -1003): wait `Retry-After`, then run at half the budget for a minute.
//! - 418: the IP is banned until `Retry-After`; nothing is sent before then.
//! - Clock: `timestamp` must be within `recvWindow` of Binance's time. The offset is measured
//!   from `GET /api/v3/time` and measured again after -1021.

use std::time::Duration;

use crate::error::ExchangeError;

/// Binance spot's request-weight budget per minute (its `exchangeInfo` `REQUEST_WEIGHT` limit).
pub const DEFAULT_WEIGHT_PER_MINUTE: u32 = 6000;
/// The share of the budget kuant spends, leaving room for other clients of the same IP.
const BUDGET_SHARE: f64 = 0.9;
const MINUTE_MS: i64 = 60_000;

/// Why a request must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The minute's weight budget is spent.
    Budget,
    /// The exchange answered 429.
    RateLimited,
    /// The exchange answered 418: banned.
    Banned,
}

/// A wait before the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Why.
    pub reason: WaitReason,
    /// Until when, in Binance's time (Unix ms).
    pub until_ms: i64,
}

impl Wait {
    /// How long from `now_ms`.
    pub fn duration_from(&self, now_ms: i64) -> Duration {
        Duration::from_millis(u64::try_from(self.until_ms - now_ms).unwrap_or(0))
    }
}

/// The request pacer of one API key (and IP).
#[derive(Clone, Debug)]
pub struct RateGate {
    limit: u32,
    used: u32,
    minute: i64,
    paused: Option<Wait>,
    slow_until_ms: i64,
    waits: u64,
}

impl RateGate {
    /// A gate for a budget of `limit_per_minute` weight.
    pub fn new(limit_per_minute: u32) -> Self {
        Self { limit: limit_per_minute, used: 0, minute: 0, paused: None, slow_until_ms: 0, waits: 0 }
    }

    /// The waits ordered so far (the `kuant_exchange_rate_limit_waits_total` metric).
    pub fn waits(&self) -> u64 {
        self.waits
    }

    fn budget(&self, now_ms: i64) -> u32 {
        let share = if now_ms < self.slow_until_ms { BUDGET_SHARE / 2.0 } else { BUDGET_SHARE };
        (f64::from(self.limit) * share) as u32
    }

    /// Whether a request of `weight` may go at `now_ms`; the wait if not. A new wait (not one
    /// already reported) is counted once.
    pub fn before(&mut self, now_ms: i64, weight: u32) -> Option<Wait> {
        if let Some(paused) = self.paused {
            if now_ms < paused.until_ms {
                return Some(paused);
            }
            self.paused = None;
        }
        let minute = now_ms.div_euclid(MINUTE_MS);
        if minute != self.minute {
            self.minute = minute;
            self.used = 0;
        }
        if self.used + weight > self.budget(now_ms) && self.used > 0 {
            let wait = Wait { reason: WaitReason::Budget, until_ms: (minute + 1) * MINUTE_MS };
            self.paused = Some(wait);
            self.waits += 1;
            return Some(wait);
        }
        self.used += weight;
        None
    }

    /// What an answer at `now_ms` said: its `X-MBX-USED-WEIGHT-1M` header and, when it failed,
    /// the error. Returns the wait it orders, if it orders a new one.
    pub fn after(
        &mut self,
        now_ms: i64,
        used_weight: Option<u32>,
        error: Option<&ExchangeError>,
    ) -> Option<Wait> {
        if let Some(used) = used_weight
            && now_ms.div_euclid(MINUTE_MS) == self.minute
        {
            self.used = self.used.max(used);
        }
        let Some(ExchangeError::RateLimited { retry_after, banned }) = error else { return None };
        let until_ms = now_ms + i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX / 2);
        let reason = if *banned { WaitReason::Banned } else { WaitReason::RateLimited };
        let wait = Wait { reason, until_ms };
        self.paused = Some(match self.paused {
            Some(current) if current.until_ms >= until_ms => current,
            _ => wait,
        });
        self.slow_until_ms = until_ms + MINUTE_MS;
        self.waits += 1;
        Some(wait)
    }
}

/// The offset between this machine's clock and Binance's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerClock {
    offset_ms: i64,
}

impl ServerClock {
    /// The offset from one `GET /api/v3/time`: sent at `sent_ms` and answered at `received_ms`
    /// (this machine's clock) with `server_ms`; the server read its clock half way, as far as
    /// this side can tell.
    pub fn measured(sent_ms: i64, server_ms: i64, received_ms: i64) -> Self {
        Self { offset_ms: server_ms - (sent_ms + received_ms) / 2 }
    }

    /// Binance's time when this machine's clock says `local_ms`: the `timestamp` to send.
    pub fn timestamp(&self, local_ms: i64) -> i64 {
        local_ms + self.offset_ms
    }

    /// The offset, in ms (positive: Binance is ahead).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_765_000_000_000 - 1_765_000_000_000 % MINUTE_MS;

    #[test]
    fn the_budget_holds_a_request_until_the_next_minute() {
        let mut gate = RateGate::new(100);
        assert_eq!(gate.before(T0 + 1_000, 50), None);
        assert_eq!(gate.before(T0 + 2_000, 40), None);
        // 90 of the 90 allowed (90 % of 100) are spent: the next waits for the next minute.
        let wait = gate.before(T0 + 3_000, 1).expect("a wait");
        assert_eq!(wait, Wait { reason: WaitReason::Budget, until_ms: T0 + MINUTE_MS });
        assert_eq!(wait.duration_from(T0 + 3_000), Duration::from_secs(57));
        assert_eq!(gate.waits(), 1);
        // Asked again during the same wait: the same wait, counted once.
        assert_eq!(gate.before(T0 + 4_000, 1), Some(wait));
        assert_eq!(gate.waits(), 1);
        assert_eq!(gate.before(T0 + MINUTE_MS, 1), None);
    }

    #[test]
    fn the_exchanges_count_is_believed_over_ours() {
        let mut gate = RateGate::new(100);
        assert_eq!(gate.before(T0, 1), None);
        // Another process on the same IP spent most of the minute.
        assert_eq!(gate.after(T0 + 10, Some(89), None), None);
        assert!(gate.before(T0 + 20, 5).is_some());
    }

    #[test]
    fn a_429_waits_then_slows_down_and_a_418_stops_everything_until_the_ban_ends() {
        let mut gate = RateGate::new(100);
        assert_eq!(gate.before(T0, 1), None);
        let limited = ExchangeError::RateLimited { retry_after: Duration::from_secs(5), banned: false };
        let wait = gate.after(T0 + 100, Some(1), Some(&limited)).expect("a wait");
        assert_eq!((wait.reason, wait.until_ms), (WaitReason::RateLimited, T0 + 5_100));
        assert_eq!(gate.before(T0 + 5_000, 1), Some(wait));
        assert_eq!(gate.before(T0 + 5_100, 1), None);
        // Half the budget (45) for a minute after the wait.
        assert_eq!(gate.before(T0 + 5_200, 43), None);
        assert!(gate.before(T0 + 5_300, 5).is_some(), "slowed down");

        let banned = ExchangeError::RateLimited { retry_after: Duration::from_secs(120), banned: true };
        let ban = gate.after(T0 + 70_000, None, Some(&banned)).expect("a ban");
        assert_eq!(ban.reason, WaitReason::Banned);
        for at in [T0 + 70_001, T0 + 130_000, T0 + 189_999] {
            assert_eq!(gate.before(at, 1), Some(ban), "nothing is sent during a ban");
        }
        assert_eq!(gate.before(T0 + 190_000, 1), None);
        assert_eq!(gate.waits(), 3);
    }

    #[test]
    fn the_clock_offset_is_measured_at_the_round_trips_middle() {
        let clock = ServerClock::measured(1_000, 1_600, 1_200);
        assert_eq!(clock.offset_ms(), 500);
        assert_eq!(clock.timestamp(10_000), 10_500);
        assert_eq!(ServerClock::default().timestamp(7), 7);
    }
}
