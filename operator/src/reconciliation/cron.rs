//! The schedule of a Reconciliation, checked before it reaches a CronJob: five standard cron
//! fields (minute, hour, day of month, month, day of week) or one of the macros Kubernetes takes
//! (`@hourly`, `@daily`, …). The CRD's pattern only checks the shape; this says which field is
//! wrong and why, for the `Ready` condition.
//!
//! Written by hand (about forty lines) rather than with a cron crate: only validation is needed
//! (the CronJob controller does the scheduling), and it must accept exactly what Kubernetes'
//! cron parser accepts for these fields, names of months and days included.

/// The macros Kubernetes' CronJob accepts.
const MACROS: [&str; 7] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];

/// Each field: its name, its range, and the names it takes (their index is their value).
const FIELDS: [(&str, u32, u32, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of month", 1, 31, &[]),
    (
        "month",
        1,
        12,
        &["", "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    ),
    ("day of week", 0, 7, &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
];

/// Checks `schedule`; the error names the field and what is wrong with it.
pub fn check(schedule: &str) -> Result<(), String> {
    let schedule = schedule.trim();
    if schedule.starts_with('@') {
        return if MACROS.contains(&schedule) {
            Ok(())
        } else {
            Err(format!("unknown schedule macro {schedule:?}: use one of {}", MACROS.join(", ")))
        };
    }
    let parts: Vec<&str> = schedule.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!(
            "{schedule:?} has {} fields; a schedule has five (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\"",
            parts.len()
        ));
    }
    for (part, (name, low, high, names)) in parts.iter().zip(FIELDS) {
        for item in part.split(',') {
            field_item(item, low, high, names).map_err(|why| format!("the {name} field {part:?}: {why}"))?;
        }
    }
    Ok(())
}

/// One comma-separated item of a field: `*`, `N`, `N-M`, each optionally `/STEP`.
fn field_item(item: &str, low: u32, high: u32, names: &[&str]) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("step {step:?} is not a whole number above 0")),
        }
    }
    if range == "*" {
        return Ok(());
    }
    let value = |text: &str| -> Result<u32, String> {
        let found = text.parse::<u32>().ok().or_else(|| {
            names
                .iter()
                .position(|n| !n.is_empty() && n.eq_ignore_ascii_case(text))
                .and_then(|i| u32::try_from(i).ok())
        });
        match found {
            Some(v) if (low..=high).contains(&v) => Ok(v),
            Some(v) => Err(format!("{v} is outside {low}-{high}")),
            None => {
                Err(format!("{text:?} is not a number{}", if names.is_empty() { "" } else { " or a name" }))
            }
        }
    };
    match range.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("the range {a}-{b} runs backwards"));
            }
            Ok(())
        }
        None => value(range).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn standard_schedules_and_macros_pass() {
        for ok in [
            "0 * * * *",
            "*/15 * * * *",
            "0 9-17 * * MON-FRI",
            "30 2 1,15 * *",
            "0 0 * JAN,JUL 0",
            "@hourly",
            "5 4 * * 7",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_wrong_field_is_named_with_what_is_wrong() {
        let cases = [
            ("60 * * * *", "minute field \"60\": 60 is outside 0-59"),
            ("0 24 * * *", "hour field"),
            ("0 0 0 * *", "day of month field \"0\": 0 is outside 1-31"),
            ("0 0 * 13 *", "month"),
            ("0 0 * * FUNDAY", "day of week field \"FUNDAY\": \"FUNDAY\" is not a number or a name"),
            ("*/0 * * * *", "step \"0\""),
            ("0 5-2 * * *", "runs backwards"),
            ("0 * * *", "has 4 fields"),
            ("@sometimes", "unknown schedule macro"),
        ];
        for (schedule, says) in cases {
            let why = check(schedule).expect_err(schedule);
            assert!(why.contains(says), "{schedule}: {why}");
        }
    }
}
