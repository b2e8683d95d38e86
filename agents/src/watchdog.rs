//! Market-data health: the decisions of a session's watchdog. Data is healthy while the stream
//! delivers; when nothing arrives for `stale_after` — the connection closed, or open and silent,
//! which is the failure that froze other bots with no alarm — the data is stale: no new intent may
//! be decided, the REST API is polled every `poll_every` for prices (to value the portfolio, not
//! to trade on), and only the stream's return makes the data healthy again. After a reconnect,
//! the candles the stream missed are fetched before any decision ([`gap`]).
//!
//! Pure: times are passed in.

/// The health of a session's market data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Nothing has arrived yet.
    Unknown,
    /// The stream delivers.
    Healthy,
    /// Nothing came from the stream since `since_ms`.
    Stale {
        /// When the last message came (or the watch started).
        since_ms: i64,
    },
}

/// A change of health, for a condition and an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The stream went quiet for `silent_ms`.
    BecameStale {
        /// How long nothing came.
        silent_ms: i64,
    },
    /// The stream delivers again (or for the first time), after `stale_ms` without.
    BecameHealthy {
        /// How long it was stale or unknown.
        stale_ms: i64,
    },
}

/// The watchdog of one session's market data.
#[derive(Clone, Debug)]
pub struct Watchdog {
    stale_after_ms: i64,
    poll_every_ms: Option<i64>,
    health: Health,
    started_ms: i64,
    last_message_ms: Option<i64>,
    last_poll_ms: Option<i64>,
}

impl Watchdog {
    /// A watchdog started at `now_ms`: stale after `stale_after_ms` without a stream message,
    /// polling REST every `poll_every_ms` meanwhile (`None`: no REST fallback).
    pub fn new(stale_after_ms: i64, poll_every_ms: Option<i64>, now_ms: i64) -> Self {
        Self {
            stale_after_ms: stale_after_ms.max(1),
            poll_every_ms: poll_every_ms.map(|p| p.max(1)),
            health: Health::Unknown,
            started_ms: now_ms,
            last_message_ms: None,
            last_poll_ms: None,
        }
    }

    /// The health now.
    pub fn health(&self) -> Health {
        self.health
    }

    /// When the last stream message came (its receipt time), if one has.
    pub fn last_message_ms(&self) -> Option<i64> {
        self.last_message_ms
    }

    /// Whether an intent may be decided: only on healthy data.
    pub fn may_trade(&self) -> bool {
        self.health == Health::Healthy
    }

    /// A message from the stream, received at `received_ms` and handled at `now_ms` (a reader
    /// behind its stream handles it later): it makes the data healthy only if it is itself less
    /// than `stale_after` old.
    pub fn on_stream_message(&mut self, received_ms: i64, now_ms: i64) -> Option<Change> {
        self.last_message_ms = Some(self.last_message_ms.map_or(received_ms, |l| l.max(received_ms)));
        if now_ms - received_ms >= self.stale_after_ms {
            return self.tick(now_ms);
        }
        let change = match self.health {
            Health::Healthy => None,
            Health::Unknown => Some(Change::BecameHealthy { stale_ms: received_ms - self.started_ms }),
            Health::Stale { since_ms } => Some(Change::BecameHealthy { stale_ms: received_ms - since_ms }),
        };
        self.health = Health::Healthy;
        self.last_poll_ms = None;
        change
    }

    /// Time passes (call it at least every second): healthy data with no message for
    /// `stale_after_ms` goes stale, and so does data that never came.
    pub fn tick(&mut self, now_ms: i64) -> Option<Change> {
        let since = self.last_message_ms.unwrap_or(self.started_ms);
        let silent_ms = now_ms - since;
        if silent_ms < self.stale_after_ms || matches!(self.health, Health::Stale { .. }) {
            return None;
        }
        self.health = Health::Stale { since_ms: since };
        Some(Change::BecameStale { silent_ms })
    }

    /// Whether to poll the REST API now (while the data is not healthy, every `poll_every_ms`);
    /// a `true` counts as the poll.
    pub fn should_poll(&mut self, now_ms: i64) -> bool {
        let Some(every) = self.poll_every_ms else { return false };
        if self.health == Health::Healthy {
            return false;
        }
        if self.last_poll_ms.is_some_and(|last| now_ms - last < every) {
            return false;
        }
        self.last_poll_ms = Some(now_ms);
        true
    }
}

/// The candles missing between the last one a session has (opening at `last_open_ms`) and the
/// next one the stream gave (opening at `next_open_ms`), with candles `step_ms` long: the open
/// times of the first and last missing one, or `None` when there is no gap.
pub fn gap(last_open_ms: i64, next_open_ms: i64, step_ms: i64) -> Option<(i64, i64)> {
    let first = last_open_ms.checked_add(step_ms)?;
    let last = next_open_ms.checked_sub(step_ms)?;
    (step_ms > 0 && first <= last).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_makes_data_stale_and_only_the_stream_makes_it_healthy_again() {
        let mut w = Watchdog::new(30_000, Some(5_000), 0);
        assert_eq!(w.health(), Health::Unknown);
        assert!(!w.may_trade(), "nothing yet: no decisions");
        assert_eq!(w.on_stream_message(1_000, 1_000), Some(Change::BecameHealthy { stale_ms: 1_000 }));
        assert!(w.may_trade());
        assert_eq!(w.on_stream_message(2_000, 2_000), None);
        assert_eq!(w.tick(31_999), None, "29.999 s of silence is not yet stale");
        assert_eq!(w.tick(32_000), Some(Change::BecameStale { silent_ms: 30_000 }));
        assert_eq!(w.tick(40_000), None, "said once");
        assert!(!w.may_trade());
        // REST while stale: at once, then every 5 s; it does not make the data healthy.
        assert!(w.should_poll(32_000));
        assert!(!w.should_poll(36_999));
        assert!(w.should_poll(37_000));
        assert!(!w.may_trade());
        assert_eq!(w.on_stream_message(90_000, 90_000), Some(Change::BecameHealthy { stale_ms: 88_000 }));
        assert!(w.may_trade() && !w.should_poll(90_001));
    }

    #[test]
    fn a_message_handled_long_after_it_came_is_not_fresh_data() {
        let mut w = Watchdog::new(1_000, None, 0);
        assert!(w.on_stream_message(100, 150).is_some());
        // The reader fell 2 s behind: what it handles now was received 2 s ago.
        assert_eq!(w.on_stream_message(200, 2_200), Some(Change::BecameStale { silent_ms: 2_000 }));
        assert!(!w.may_trade());
        assert_eq!(w.on_stream_message(300, 2_250), None, "still old");
        assert_eq!(w.on_stream_message(2_240, 2_260), Some(Change::BecameHealthy { stale_ms: 2_040 }));
    }

    #[test]
    fn data_that_never_comes_goes_stale_and_without_fallback_nothing_polls() {
        let mut w = Watchdog::new(10_000, None, 5_000);
        assert_eq!(w.tick(15_000), Some(Change::BecameStale { silent_ms: 10_000 }));
        assert!(!w.should_poll(15_000));
    }

    #[test]
    fn a_gap_names_the_candles_the_stream_missed() {
        const H: i64 = 3_600_000;
        assert_eq!(gap(0, H, H), None, "the next one");
        assert_eq!(gap(0, 0, H), None, "the same one again");
        assert_eq!(gap(0, 4 * H, H), Some((H, 3 * H)));
        assert_eq!(gap(0, 2 * H, H), Some((H, H)));
        assert_eq!(gap(i64::MAX, 0, H), None);
    }
}
