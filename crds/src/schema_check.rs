//! Structural validation of a JSON value against a CRD's OpenAPI v3 schema, the way the API
//! server applies it: types, required fields, unknown fields, enums, patterns, bounds and
//! list uniqueness. CEL rules are evaluated separately (see [`crate::manifest`]).
//!
//! Messages follow the API server's wording (`Required value`, `Unsupported value`,
//! `Invalid value`, `unknown field`) so a user sees the same words locally and from `kubectl`.

use std::collections::HashSet;
use std::fmt::Write as _;

use regex::Regex;
use serde_json::{Map, Value};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path of the field, e.g. `spec.market.symbols[0]`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

/// Checks `value` against `schema`, appending every problem found to `out`.
/// `path` is the path of `value` itself (empty at the root).
pub fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(schema) = schema.as_object() else { return };
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            out.push(Problem::new(
                path,
                format!("Invalid value: {}: must be an integer or a string", show(value)),
            ));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list = allowed.iter().map(show).collect::<Vec<_>>().join(", ");
        out.push(Problem::new(path, format!("Unsupported value: {}: supported values: {list}", show(value))));
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => match value.as_object() {
            Some(map) => check_object(schema, map, path, out),
            None => out.push(wrong_type(path, value, "object")),
        },
        Some("array") => match value.as_array() {
            Some(items) => check_array(schema, items, path, out),
            None => out.push(wrong_type(path, value, "array")),
        },
        Some("string") => match value.as_str() {
            Some(s) => check_string(schema, s, path, out),
            None => out.push(wrong_type(path, value, "string")),
        },
        Some("integer") => {
            if value.is_i64() || value.is_u64() {
                check_number(schema, value, path, out);
            } else {
                out.push(wrong_type(path, value, "integer"));
            }
        }
        Some("number") => {
            if value.is_number() {
                check_number(schema, value, path, out);
            } else {
                out.push(wrong_type(path, value, "number"));
            }
        }
        Some("boolean") if !value.is_boolean() => out.push(wrong_type(path, value, "boolean")),
        _ => {}
    }
}

fn check_object(schema: &Map<String, Value>, map: &Map<String, Value>, path: &str, out: &mut Vec<Problem>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let nullable = |s: &Value| s.get("nullable").and_then(Value::as_bool).unwrap_or(false);
    for (key, child) in map {
        let child_path = join(path, key);
        let child_schema = properties.and_then(|p| p.get(key)).or(additional.filter(|a| a.is_object()));
        match child_schema {
            // The API server drops a null it cannot store; a required field then counts as missing.
            Some(s) if child.is_null() && !nullable(s) => {}
            Some(s) => check(s, child, &child_path, out),
            None if preserve || additional == Some(&Value::Bool(true)) => {}
            // An object without declared fields (metadata) is free-form.
            None if properties.is_none() && additional.is_none() => {}
            None => {
                out.push(Problem::new(child_path, "unknown field (not in the schema; check the spelling)"))
            }
        }
    }
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(key) = required.as_str()
            && map.get(key).is_none_or(Value::is_null)
        {
            out.push(Problem::new(join(path, key), "Required value"));
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        out.push(Problem::new(path, format!("Too many: {}: must have at most {max} entries", map.len())));
    }
}

fn check_array(schema: &Map<String, Value>, items: &[Value], path: &str, out: &mut Vec<Problem>) {
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        let noun = if min == 1 { "item" } else { "items" };
        out.push(Problem::new(
            path,
            format!("Invalid value: {}: must have at least {min} {noun}", items.len()),
        ));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        out.push(Problem::new(path, format!("Too many: {}: must have at most {max} items", items.len())));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
    let keys: Vec<&str> = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        Some("set") => Vec::new(),
        _ => return,
    };
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let identity = if keys.is_empty() {
            item.to_string()
        } else {
            keys.iter()
                .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("/")
        };
        if !seen.insert(identity) {
            let shown = if keys.is_empty() {
                show(item)
            } else {
                keys.iter().map(|k| item.get(*k).map(show).unwrap_or_default()).collect::<Vec<_>>().join(", ")
            };
            out.push(Problem::new(format!("{path}[{i}]"), format!("Duplicate value: {shown}")));
        }
    }
}

fn check_string(schema: &Map<String, Value>, s: &str, path: &str, out: &mut Vec<Problem>) {
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        let message = if min == 1 && chars == 0 {
            "Required value: must not be empty".to_owned()
        } else {
            format!("Invalid value: {}: must be at least {min} characters long", show_str(s))
        };
        out.push(Problem::new(path, message));
        return;
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        out.push(Problem::new(path, format!("Too long: may not be more than {max} characters")));
        return;
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => out.push(Problem::new(
                path,
                format!("Invalid value: {}: {path} in body should match '{pattern}'", show_str(s)),
            )),
            Ok(_) => {}
            Err(e) => {
                out.push(Problem::new(path, format!("schema pattern {pattern:?} does not compile: {e}")))
            }
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && s.parse::<k8s_openapi::jiff::Timestamp>().is_err()
    {
        out.push(Problem::new(
            path,
            format!(
                "Invalid value: {}: must be an RFC 3339 date-time such as \"2024-01-31T00:00:00Z\"",
                show_str(s)
            ),
        ));
    }
}

fn check_number(schema: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(x) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let relation = if exclusive { "greater than" } else { "greater than or equal to" };
            out.push(Problem::new(
                path,
                format!("Invalid value: {value}: {path} in body should be {relation} {}", number(min)),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let relation = if exclusive { "less than" } else { "less than or equal to" };
            out.push(Problem::new(
                path,
                format!("Invalid value: {value}: {path} in body should be {relation} {}", number(max)),
            ));
        }
    }
}

fn wrong_type(path: &str, value: &Value, expected: &str) -> Problem {
    let mut message = format!("Invalid value: {}: must be of type {expected}", show(value));
    if expected == "string" && value.is_number() {
        let _ = write!(message, " (quote it: \"{value}\")");
    }
    Problem::new(path, message)
}

fn flag(schema: &Map<String, Value>, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => show_str(s),
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

fn show_str(s: &str) -> String {
    format!("{s:?}")
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(schema: Value, value: Value) -> Vec<String> {
        let mut out = Vec::new();
        check(&schema, &value, "spec", &mut out);
        out.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
    }

    #[test]
    fn reports_missing_required_and_unknown_fields() {
        let schema = json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}});
        assert_eq!(
            problems(schema, json!({"b": 1})),
            vec!["spec.b: unknown field (not in the schema; check the spelling)", "spec.a: Required value"]
        );
    }

    #[test]
    fn reports_enum_pattern_and_bounds() {
        let schema = json!({"type": "object", "properties": {
            "tf": {"type": "string", "enum": ["1m", "1h"]},
            "sym": {"type": "string", "pattern": "^[A-Z]+$"},
            "pct": {"type": "number", "minimum": 0.0, "maximum": 100.0},
        }});
        assert_eq!(
            problems(schema, json!({"tf": "2h", "sym": "btc", "pct": 120})),
            // Fields are visited in key order, so the report is the same on every run.
            vec![
                "spec.pct: Invalid value: 120: spec.pct in body should be less than or equal to 100",
                "spec.sym: Invalid value: \"btc\": spec.sym in body should match '^[A-Z]+$'",
                "spec.tf: Unsupported value: \"2h\": supported values: \"1m\", \"1h\"",
            ]
        );
    }

    #[test]
    fn advises_quoting_a_number_given_for_a_string() {
        let schema = json!({"type": "string"});
        assert_eq!(
            problems(schema, json!(10000)),
            vec!["spec: Invalid value: 10000: must be of type string (quote it: \"10000\")"]
        );
    }

    #[test]
    fn finds_duplicates_in_sets_and_maps() {
        let set = json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}});
        assert_eq!(problems(set, json!(["A", "B", "A"])), vec!["spec[2]: Duplicate value: \"A\""]);
        let map = json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object", "properties": {"type": {"type": "string"}}}});
        assert_eq!(
            problems(map, json!([{"type": "Ready"}, {"type": "Ready"}])),
            vec!["spec[1]: Duplicate value: \"Ready\""]
        );
    }

    #[test]
    fn integers_refuse_fractions_and_null_counts_as_missing() {
        let schema = json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
        assert_eq!(
            problems(schema.clone(), json!({"n": 1.5})),
            vec!["spec.n: Invalid value: 1.5: must be of type integer"]
        );
        assert_eq!(problems(schema, json!({"n": null})), vec!["spec.n: Required value"]);
    }

    #[test]
    fn date_times_must_be_rfc3339() {
        let schema = json!({"type": "string", "format": "date-time"});
        assert!(problems(schema.clone(), json!("2024-01-31T00:00:00Z")).is_empty());
        assert_eq!(
            problems(schema, json!("31/01/2024")),
            vec![
                "spec: Invalid value: \"31/01/2024\": must be an RFC 3339 date-time such as \"2024-01-31T00:00:00Z\""
            ]
        );
    }
}
