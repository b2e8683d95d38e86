//! Deterministic names of the children the operator creates. A name depends only on the owner
//! (its name and uid), so a restarted operator finds the child it made instead of making a
//! second one, and a new resource of the same name (new uid) never adopts an old child.

/// Longest name of a child whose name also becomes a label value (the Job controller labels
/// each pod with its Job's name, and label values have at most 63 characters).
const MAX_LABELLED_NAME: usize = 63;

/// The name of the Job that runs the Backtest `name` with `uid`: `<name>-bt-<hash>`, the name
/// shortened when needed to keep the whole within 63 characters.
pub fn backtest_job(name: &str, uid: &str) -> String {
    child(name, "bt", uid, MAX_LABELLED_NAME)
}

/// Longest name of a StatefulSet: its pods carry the label `controller-revision-hash` with the
/// value `<name>-<10 characters>`, which must fit a label value.
const MAX_STATEFUL_SET_NAME: usize = 52;

/// The name of the StatefulSet (and its headless Service) that runs the agent of the
/// TradingSession `name` with `uid`: `<name>-ts-<hash>`, at most 52 characters.
pub fn session_agent(name: &str, uid: &str) -> String {
    child(name, "ts", uid, MAX_STATEFUL_SET_NAME)
}

/// Longest name of a CronJob: the Jobs it makes are named `<name>-<up to 11 digits>`, and a
/// Job's name becomes a label value of its pods.
const MAX_CRON_JOB_NAME: usize = 52;

/// The name of the Job (run once) or CronJob (on a schedule) of the Reconciliation `name` with
/// `uid`: `<name>-rc-<hash>`, at most 52 characters.
pub fn reconciliation(name: &str, uid: &str) -> String {
    child(name, "rc", uid, MAX_CRON_JOB_NAME)
}

/// An owner's name as a label value (at most 63 characters; longer names are cut, and the
/// ownerReference, not the label, is what ties a child to its owner).
pub fn label_value(name: &str) -> String {
    name.get(..MAX_LABELLED_NAME.min(name.len())).unwrap_or(name).trim_end_matches(['-', '.']).to_owned()
}

fn child(name: &str, role: &str, uid: &str, max: usize) -> String {
    let suffix = format!("-{role}-{:08x}", fnv1a(uid.as_bytes()));
    let room = max - suffix.len();
    let mut stem: &str = name.get(..room.min(name.len())).unwrap_or(name);
    // A name must end with an alphanumeric character.
    stem = stem.trim_end_matches(['-', '.']);
    format!("{stem}{suffix}")
}

/// 32-bit FNV-1a: a stable hash (the standard library's may change between releases).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_name_is_stable_and_tied_to_the_uid() {
        let a = backtest_job("btc-sma-crossover", "0b9c1d3e-1111-2222-3333-444455556666");
        assert_eq!(a, backtest_job("btc-sma-crossover", "0b9c1d3e-1111-2222-3333-444455556666"));
        assert!(a.starts_with("btc-sma-crossover-bt-"), "{a}");
        assert_ne!(
            a,
            backtest_job("btc-sma-crossover", "another-uid"),
            "a recreated Backtest gets a new Job"
        );
    }

    #[test]
    fn long_names_are_shortened_to_a_valid_label_value() {
        let long = format!("{}-x", "a".repeat(48)) + &"-".repeat(10) + "tail";
        let name = backtest_job(&long, "uid");
        assert!(name.len() <= 63, "{} chars", name.len());
        assert!(!name.contains("--"), "no dash left dangling before the suffix: {name}");
        assert!(name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn a_session_agents_name_leaves_room_for_the_statefulsets_pod_labels() {
        let name = session_agent(&"s".repeat(80), "uid");
        assert!(name.len() <= 52, "{} chars", name.len());
        assert!(name.contains("-ts-"), "{name}");
        assert_eq!(session_agent("paper-btc", "u1"), session_agent("paper-btc", "u1"));
        assert_ne!(session_agent("paper-btc", "u1"), session_agent("paper-btc", "u2"));
    }

    #[test]
    fn fnv1a_matches_the_published_test_vector() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }
}
