//! The generated CRDs: the committed copies match the types, the schemas are structural and
//! installable, and every example manifest validates against them.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kuant_crds::manifest::{self, ManifestError};
use kuant_crds::{Backtest, Reconciliation, TradingSession};
use kube::CustomResourceExt;
use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_crds_match_the_types() {
    for (name, generated) in kuant_crds::crd_files().expect("CRDs render") {
        let path = repo().join("charts/kuant/crds").join(&name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{} is missing ({e}); run `cargo run -- crd --out-dir charts/kuant/crds`", path.display())
        });
        assert!(
            committed == generated,
            "{} differs from what the types generate; run `cargo run -- crd --out-dir charts/kuant/crds` and commit",
            path.display()
        );
    }
    let committed: Vec<_> = std::fs::read_dir(repo().join("charts/kuant/crds"))
        .expect("crds folder")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(committed.len(), 3, "exactly the three generated CRDs are committed: {committed:?}");
}

#[test]
fn crds_are_namespaced_v1alpha1_with_status_short_names_and_category() {
    let expected = [("Backtest", "bt"), ("TradingSession", "ts"), ("Reconciliation", "recon")];
    for (crd, (kind, short)) in kuant_crds::crds().iter().zip(expected) {
        assert_eq!(crd.spec.group, "kuant.dev");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_owned()][..]));
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["kuant".to_owned()][..]));
        let [version] = crd.spec.versions.as_slice() else { panic!("{kind}: one version") };
        assert_eq!((version.name.as_str(), version.served, version.storage), ("v1alpha1", true, true));
        assert!(
            version.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            "{kind}: status subresource"
        );
        let columns = version.additional_printer_columns.as_deref().unwrap_or_default();
        assert!(columns.iter().any(|c| c.json_path == ".status.phase"), "{kind}: a Phase column");
    }
}

#[test]
fn backtest_printer_columns_show_progress_and_rounded_results() {
    let crd = Backtest::crd();
    let columns: Vec<_> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Strategy", ".spec.strategy.name"),
            // Text a person reads (rounded, symbols joined); status.results stays exact.
            ("Symbols", ".status.display.symbols"),
            ("Phase", ".status.phase"),
            ("Progress%", ".status.progress.percent"),
            ("Return%", ".status.display.returnPct"),
            ("Sharpe", ".status.display.sharpe"),
            ("MaxDD%", ".status.display.maxDrawdownPct"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

/// Walks every schema node, calling `f(path, node)`.
fn walk(schema: &Value, path: &str, f: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let Some(node) = schema.as_object() else { return };
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (key, child) in props {
            walk(child, &format!("{path}.{key}"), f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), f);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        walk(additional, &format!("{path}{{}}"), f);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, child) in node.get(junctor).and_then(Value::as_array).into_iter().flatten().enumerate() {
            walk(child, &format!("{path}<{junctor}{i}>"), f);
        }
    }
    if let Some(not) = node.get("not") {
        walk(not, &format!("{path}<not>"), f);
    }
}

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    manifest::schema_json(crd).expect("the CRD has a schema")
}

/// The rules of a structural schema (Kubernetes "Specifying a structural schema") that a
/// generated schema can break, plus what the API server checks on defaults and list maps.
#[test]
fn crd_schemas_are_structural() {
    for crd in kuant_crds::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        let mut problems = Vec::new();
        let mut nodes = 0;
        walk(&schema, &kind, &mut |path, node| {
            nodes += 1;
            let in_junctor = path.ends_with('>');
            let has_type = node.contains_key("type");
            let special = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if !in_junctor && !has_type && !special {
                problems.push(format!("{path}: no type"));
            }
            if in_junctor {
                for banned in ["type", "description", "default", "nullable", "additionalProperties"] {
                    if node.contains_key(banned) {
                        problems.push(format!("{path}: `{banned}` inside a junctor"));
                    }
                }
            }
            for banned in ["$ref", "definitions", "$defs", "dependencies", "patternProperties", "uniqueItems"]
            {
                if node.contains_key(banned) {
                    problems.push(format!("{path}: `{banned}` is not allowed"));
                }
            }
            if node.contains_key("properties") && node.contains_key("additionalProperties") {
                problems.push(format!("{path}: both properties and additionalProperties"));
            }
            if node.get("type").and_then(Value::as_str) == Some("array") && !node.contains_key("items") {
                problems.push(format!("{path}: array without items"));
            }
            if let Some(default) = node.get("default") {
                let mut found = Vec::new();
                kuant_crds::schema_check::check(&Value::Object(node.clone()), default, path, &mut found);
                problems.extend(found.into_iter().map(|p| format!("default of {}: {}", p.path, p.message)));
            }
            if node.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let item = node.get("items").and_then(Value::as_object);
                let required: Vec<&str> = item
                    .and_then(|i| i.get("required"))
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for key in
                    node.get("x-kubernetes-list-map-keys").and_then(Value::as_array).into_iter().flatten()
                {
                    let key = key.as_str().unwrap_or_default();
                    if !required.contains(&key) {
                        problems.push(format!("{path}: list-map key {key} must be required"));
                    }
                }
            }
        });
        assert!(nodes > 40, "{kind}: the walk saw only {nodes} schema nodes");
        assert!(problems.is_empty(), "{kind}:\n{}", problems.join("\n"));
    }
}

#[test]
fn conditions_are_list_maps_keyed_by_type() {
    for crd in kuant_crds::crds() {
        let schema = schema_of(&crd);
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{}", crd.spec.names.kind);
        assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
        let required = &conditions["items"]["required"];
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            assert!(required.as_array().is_some_and(|r| r.contains(&field.into())), "{field} required");
        }
    }
}

#[test]
fn every_field_is_documented_for_kubectl_explain() {
    for crd in kuant_crds::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        let mut undocumented = Vec::new();
        walk(&schema["properties"]["spec"], &format!("{kind}.spec"), &mut |path, node| {
            let description = node.get("description").and_then(Value::as_str).unwrap_or_default();
            if description.trim().is_empty()
                && !path.ends_with(']')
                && !path.ends_with("[]")
                && !path.ends_with('}')
            {
                undocumented.push(path.to_owned());
            }
        });
        assert!(undocumented.is_empty(), "fields without a description: {undocumented:?}");
    }
}

/// Every CEL rule compiles, uses only variables a CRD rule may use, and stays within the API
/// server's cost budget (which needs maxItems/maxLength on what it iterates).
#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let mut rules = 0;
    for crd in kuant_crds::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        let mut problems = Vec::new();
        walk(&schema, &kind, &mut |path, node| {
            let Some(validations) = node.get("x-kubernetes-validations").and_then(Value::as_array) else {
                return;
            };
            let compiled = compile_schema(&Value::Object(node.clone()));
            for error in compiled.compilation_errors() {
                problems.push(format!("{path}: {error}"));
            }
            for rule in validations.iter().filter_map(|v| v.get("rule").and_then(Value::as_str)) {
                rules += 1;
                for warning in analyze_rule(rule, &compiled, ScopeContext::CrdValidation) {
                    if warning.kind == WarningKind::WrongScope
                        && binds_in_comprehension(rule, &warning.message)
                    {
                        continue;
                    }
                    problems.push(format!("{path}: {rule}: {}", warning.message));
                }
            }
        });
        assert!(problems.is_empty(), "{kind}:\n{}", problems.join("\n"));
    }
    assert!(rules >= 15, "expected the CEL rules of all three kinds, found {rules}");
}

/// The scope check does not know comprehension macros: `list.map(s, s.x)` binds `s` itself.
fn binds_in_comprehension(rule: &str, message: &str) -> bool {
    let Some(var) = message.strip_prefix("variable '").and_then(|m| m.split('\'').next()) else {
        return false;
    };
    ["map", "all", "exists", "exists_one", "filter"].iter().any(|m| rule.contains(&format!(".{m}({var},")))
}

fn examples() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repo().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn check_example(path: &Path) -> Result<&'static str, ManifestError> {
    let text = std::fs::read_to_string(path).expect("example readable");
    let name = path.strip_prefix(repo()).unwrap_or(path).display().to_string();
    let kind = serde_yaml::from_str::<Value>(&text).ok().and_then(|v| v["kind"].as_str().map(str::to_owned));
    match kind.as_deref() {
        Some("Backtest") => manifest::parse::<Backtest>(&text, &name).map(|_| "Backtest"),
        Some("TradingSession") => manifest::parse::<TradingSession>(&text, &name).map(|_| "TradingSession"),
        Some("Reconciliation") => manifest::parse::<Reconciliation>(&text, &name).map(|_| "Reconciliation"),
        other => panic!("{name}: unexpected kind {other:?}"),
    }
}

#[test]
fn every_example_validates_against_its_crd() {
    let files = examples();
    let required = [
        "examples/backtests/btc-sma-crossover.yaml",
        "examples/backtests/btc-csv.yaml",
        "examples/sessions/paper-btc.yaml",
        "examples/sessions/live-btc.yaml",
        "examples/reconciliations/hourly.yaml",
    ];
    for r in required {
        assert!(files.contains(&repo().join(r)), "{r} is missing");
    }
    for file in files {
        if let Err(e) = check_example(&file) {
            panic!("{e}");
        }
    }
}

#[test]
fn the_live_example_without_acknowledgement_is_refused_with_the_cel_message() {
    let path = repo().join("examples/sessions/live-btc.yaml");
    let text = std::fs::read_to_string(&path).expect("live example");
    assert!(text.contains("liveTradingAcknowledged: true"));
    let unacknowledged = text.replace("liveTradingAcknowledged: true", "liveTradingAcknowledged: false");
    let err =
        manifest::parse::<TradingSession>(&unacknowledged, "live-btc.yaml").expect_err("must be refused");
    assert_eq!(
        err.to_string(),
        "live-btc.yaml: spec.liveTradingAcknowledged: live trading needs spec.liveTradingAcknowledged: true (real orders with real money)"
    );
    let omitted: String =
        text.lines().filter(|l| !l.contains("liveTradingAcknowledged")).map(|l| format!("{l}\n")).collect();
    let err = manifest::parse::<TradingSession>(&omitted, "live-btc.yaml").expect_err("must be refused");
    assert!(err.to_string().contains("live trading needs spec.liveTradingAcknowledged: true"), "{err}");
}
