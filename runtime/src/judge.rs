//! The judge: the last look at a trade plan, after the risk desk approved it and before its order
//! leaves. `judge.mode: rules` is [`RulesJudge`]; the language-model judge (`judge.mode: llm`)
//! comes behind the same [`Judge`] interface.

use std::future::Future;
use std::pin::Pin;

use kuant_agents::strategy::Side;
use rust_decimal::Decimal;

/// A trade plan as the judge sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The strategy that signalled.
    pub strategy: String,
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Base quantity.
    pub quantity: Decimal,
    /// The price the decision was made at (the signalling candle's close).
    pub decided_at_price: Decimal,
    /// The latest price the session has seen.
    pub last_price: Decimal,
}

/// The judge's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the order may leave.
    pub approved: bool,
    /// Why, for the event chain (`price_moved`, `rules_passed`, …).
    pub reason: String,
    /// What a person reads.
    pub detail: String,
}

/// A boxed verdict future (the judge is called through `dyn`).
pub type Judging<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// Judges trade plans.
pub trait Judge: Send + Sync {
    /// The verdict on `proposal`.
    fn judge<'a>(&'a self, proposal: &'a Proposal) -> Judging<'a>;
}

/// `judge.mode: rules`: deterministic rules, no network. It refuses a plan whose price has moved
/// more than `max_move` (a fraction) between the decision and now — a decision taken on a price
/// the market has left (after a slow back-fill, a reconnect, a stalled process) — and approves
/// the rest: the risk desk has already applied the budget, position, order and loss limits.
#[derive(Clone, Debug)]
pub struct RulesJudge {
    /// The largest move, as a fraction of the decision's price, that still passes.
    pub max_move: Decimal,
}

impl Default for RulesJudge {
    /// 2 % (`0.02`).
    fn default() -> Self {
        Self { max_move: Decimal::new(2, 2) }
    }
}

impl RulesJudge {
    /// The verdict, synchronously.
    pub fn verdict(&self, p: &Proposal) -> Verdict {
        if p.decided_at_price.is_zero() {
            return Verdict {
                approved: false,
                reason: "no_price".into(),
                detail: "the decision has no price to compare with".into(),
            };
        }
        let moved = ((p.last_price - p.decided_at_price) / p.decided_at_price).abs();
        if moved > self.max_move {
            return Verdict {
                approved: false,
                reason: "price_moved".into(),
                detail: format!(
                    "{} moved {}% since the decision ({} → {}); the rules allow {}%",
                    p.symbol,
                    (moved * Decimal::ONE_HUNDRED).round_dp(2).normalize(),
                    p.decided_at_price.normalize(),
                    p.last_price.normalize(),
                    (self.max_move * Decimal::ONE_HUNDRED).normalize()
                ),
            };
        }
        Verdict {
            approved: true,
            reason: "rules_passed".into(),
            detail: format!(
                "price within {}% of the decision",
                (self.max_move * Decimal::ONE_HUNDRED).normalize()
            ),
        }
    }
}

impl Judge for RulesJudge {
    fn judge<'a>(&'a self, proposal: &'a Proposal) -> Judging<'a> {
        Box::pin(std::future::ready(self.verdict(proposal)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(decided: i64, last: i64) -> Proposal {
        Proposal {
            strategy: "sma-crossover".into(),
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            quantity: Decimal::ONE,
            decided_at_price: Decimal::from(decided),
            last_price: Decimal::from(last),
        }
    }

    #[test]
    fn approves_a_plan_whose_price_held_and_refuses_one_the_market_left() {
        let judge = RulesJudge::default();
        let held = judge.verdict(&proposal(100, 101));
        assert!(held.approved, "{held:?}");
        assert_eq!(held.reason, "rules_passed");
        let up = judge.verdict(&proposal(100, 103));
        assert!(!up.approved);
        assert_eq!(up.reason, "price_moved");
        assert!(up.detail.contains("moved 3%"), "{}", up.detail);
        assert!(!judge.verdict(&proposal(100, 97)).approved, "a fall counts as a move too");
        assert!(judge.verdict(&proposal(100, 98)).approved, "exactly the limit passes");
        assert_eq!(judge.verdict(&proposal(0, 98)).reason, "no_price");
    }
}
