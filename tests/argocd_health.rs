//! The Argo CD health checks under `charts/kuant/argocd/`, run the way Argo CD runs them: Lua 5.1
//! (Argo uses gopher-lua), the resource as the global `obj`, a table `{status, message}` returned.
//! Each kind's `health_test.yaml` (Argo's own format) lists sample objects and the expected result.

use std::path::{Path, PathBuf};

use kuant_crds::manifest;
use kuant_crds::{Backtest, Reconciliation, TradingSession};
use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::Value;

fn argocd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/kuant/argocd/kuant.dev")
}

fn run_health(script: &str, object: &Value) -> Result<(String, String), mlua::Error> {
    let lua = Lua::new();
    // Argo hands the script plain tables: absent fields are nil, never a null sentinel.
    let options =
        mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    lua.globals().set("obj", lua.to_value_with(object, options)?)?;
    let hs: Table = lua.load(script).eval()?;
    Ok((hs.get("status")?, hs.get::<Option<String>>("message")?.unwrap_or_default()))
}

fn check_sample(kind: &str, object: Value, path: &Path) {
    let name = path.display().to_string();
    let result = match kind {
        "Backtest" => manifest::check_value::<Backtest>(object, &name),
        "TradingSession" => manifest::check_value::<TradingSession>(object, &name),
        "Reconciliation" => manifest::check_value::<Reconciliation>(object, &name),
        other => panic!("no CRD for kind {other}"),
    };
    if let Err(e) = result {
        panic!("sample objects must be valid {kind}s, so the script reads real fields: {e}");
    }
}

#[test]
fn health_checks_return_what_their_tests_expect() {
    let mut seen = std::collections::BTreeMap::<String, Vec<String>>::new();
    for kind in ["Backtest", "TradingSession", "Reconciliation"] {
        let dir = argocd_dir().join(kind);
        let script = std::fs::read_to_string(dir.join("health.lua")).expect("health.lua");
        let tests: Value = serde_yaml::from_str(
            &std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"),
        )
        .expect("health_test.yaml is YAML");
        let cases = tests["tests"].as_array().expect("a tests list");
        assert!(!cases.is_empty(), "{kind}: no test cases");
        for case in cases {
            let input = dir.join(case["inputPath"].as_str().expect("inputPath"));
            let object: Value =
                serde_yaml::from_str(&std::fs::read_to_string(&input).expect("test data")).expect("YAML");
            assert_eq!(object["kind"], kind, "{}", input.display());
            check_sample(kind, object.clone(), &input);
            let (status, message) = run_health(&script, &object)
                .unwrap_or_else(|e| panic!("{}: the script failed: {e}", input.display()));
            let expected = &case["healthStatus"];
            assert_eq!(status, expected["status"].as_str().unwrap_or_default(), "{}", input.display());
            assert_eq!(message, expected["message"].as_str().unwrap_or_default(), "{}", input.display());
            seen.entry(kind.to_owned()).or_default().push(status);
        }
    }
    for (kind, statuses) in &seen {
        for needed in ["Progressing", "Healthy", "Degraded"] {
            assert!(statuses.iter().any(|s| s == needed), "{kind}: no {needed} sample");
        }
    }
}

#[test]
fn health_checks_survive_a_bare_object() {
    // A resource just created, before any status: never a script error (Argo shows those as Unknown).
    for kind in ["Backtest", "TradingSession", "Reconciliation"] {
        let script = std::fs::read_to_string(argocd_dir().join(kind).join("health.lua")).expect("health.lua");
        let object = serde_json::json!({
            "apiVersion": "kuant.dev/v1alpha1", "kind": kind,
            "metadata": {"name": "x", "generation": 1}, "spec": {}
        });
        let (status, _) = run_health(&script, &object).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(status, "Progressing", "{kind}");
    }
}
