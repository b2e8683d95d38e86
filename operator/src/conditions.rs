//! Status conditions by the Kubernetes conventions: one per `type`, each with the generation it
//! describes, and a `lastTransitionTime` that moves only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// It does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// What a condition should say, before times and generations are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Condition type, e.g. `Complete`.
    pub type_: &'static str,
    /// True, False or Unknown.
    pub status: Status,
    /// CamelCase reason for machines.
    pub reason: &'static str,
    /// A sentence for humans.
    pub message: String,
}

impl Desired {
    /// A condition of `type_` with `status`, `reason` and `message`.
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// The conditions `desired` describes, for `generation`, keeping each previous
/// `lastTransitionTime` where the status did not change and stamping `now` where it did.
/// Conditions of other types in `previous` are kept as they were.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> =
        previous.iter().filter(|c| !desired.iter().any(|d| d.type_ == c.type_)).cloned().collect();
    for d in desired {
        let before = previous.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match before {
            Some(c) if c.status == d.status.as_str() => c.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: d.type_.to_owned(),
            status: d.status.as_str().to_owned(),
            reason: d.reason.to_owned(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Whether `conditions` has `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:01:00Z");
        let first =
            merge(&[], &[Desired::new("Complete", Status::False, "Running", "running")], Some(1), &t0);
        assert_eq!(first[0].last_transition_time, t0);
        // Same status, new reason and message: the time stays.
        let same =
            merge(&first, &[Desired::new("Complete", Status::False, "Pending", "waiting")], Some(1), &t1);
        assert_eq!((same[0].last_transition_time.clone(), same[0].reason.as_str()), (t0, "Pending"));
        // Flipped: the time moves.
        let flipped =
            merge(&same, &[Desired::new("Complete", Status::True, "Succeeded", "done")], Some(2), &t1);
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped[0].observed_generation, Some(2));
    }

    #[test]
    fn other_condition_types_are_kept_and_the_list_is_ordered_by_type() {
        let t0 = time("2026-01-01T00:00:00Z");
        let previous = merge(&[], &[Desired::new("Zeta", Status::True, "X", "x")], None, &t0);
        let out = merge(&previous, &[Desired::new("Alpha", Status::Unknown, "Y", "y")], Some(3), &t0);
        let types: Vec<_> = out.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(types, [("Alpha", "Unknown"), ("Zeta", "True")]);
        assert!(is_true(&out, "Zeta") && !is_true(&out, "Alpha"));
    }
}
