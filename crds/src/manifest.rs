//! Reading a manifest the way the API server would: YAML → apiVersion/kind → defaults →
//! schema (types, bounds, unknown fields) → CEL rules → the Rust type. Every problem names its
//! field, so a broken manifest is refused with the same words locally and in a cluster.

use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;
use kube::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::common::OBJECT_NAME_PATTERN;
pub use crate::schema_check::Problem;

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// Where the manifest came from (a file name, `stdin`).
    pub source_name: String,
    /// Every problem found, each naming its field.
    pub problems: Vec<Problem>,
}

impl ManifestError {
    fn one(source_name: &str, path: &str, message: impl Into<String>) -> Self {
        Self { source_name: source_name.to_owned(), problems: vec![Problem::new(path, message)] }
    }
}

impl fmt::Display for ManifestError {
    /// One line: `file: field: problem; field: problem`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source_name)?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if p.path.is_empty() {
                f.write_str(&p.message)?;
            } else {
                write!(f, "{}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Reads one manifest of kind `K` from YAML (or JSON) text, checking it as the API server would,
/// and returns it with the schema defaults applied.
pub fn parse<K>(text: &str, source_name: &str) -> Result<K, ManifestError>
where
    K: Resource<DynamicType = ()> + CustomResourceExt + DeserializeOwned,
{
    from_value(read_yaml(text, source_name)?, source_name)
}

/// Reads one manifest of kind `K` from parsed JSON (a request body), checking it as the API
/// server would, and returns it with the schema defaults applied.
pub fn from_value<K>(value: Value, source_name: &str) -> Result<K, ManifestError>
where
    K: Resource<DynamicType = ()> + CustomResourceExt + DeserializeOwned,
{
    let value = check_value::<K>(value, source_name)?;
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&value, &mut track);
    K::deserialize(deserializer).map_err(|e| {
        let path = track.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ManifestError::one(source_name, &path, e.to_string())
    })
}

/// Checks an already-parsed object of kind `K` (apiVersion, kind, name, schema, CEL) and returns
/// it with the schema defaults applied.
pub fn check_value<K>(value: Value, source_name: &str) -> Result<Value, ManifestError>
where
    K: Resource<DynamicType = ()> + CustomResourceExt,
{
    let err = |problems| ManifestError { source_name: source_name.to_owned(), problems };
    let Some(object) = value.as_object() else {
        return Err(ManifestError::one(
            source_name,
            "",
            "expected a YAML mapping with apiVersion, kind, metadata and spec",
        ));
    };
    let (api_version, kind) = (K::api_version(&()), K::kind(&()));
    let mut problems = Vec::new();
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == api_version => {}
        Some(v) => problems
            .push(Problem::new("apiVersion", format!("Unsupported value: {v:?}: expected {api_version:?}"))),
        None => {
            problems.push(Problem::new("apiVersion", format!("Required value: expected {api_version:?}")))
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        Some(k) => {
            problems.push(Problem::new("kind", format!("Unsupported value: {k:?}: expected {kind:?}")))
        }
        None => problems.push(Problem::new("kind", format!("Required value: expected {kind:?}"))),
    }
    if !problems.is_empty() {
        return Err(err(problems));
    }
    check_metadata(object.get("metadata"), &mut problems);

    let schema = openapi_schema::<K>().map_err(|e| ManifestError::one(source_name, "", e))?;
    let defaulted = kube::core::cel::apply_defaults(&schema, &value);
    // The API server checks apiVersion, kind and metadata itself; the CRD schema covers the rest.
    let mut body = defaulted.clone();
    if let Some(body) = body.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            body.remove(key);
        }
    }
    crate::schema_check::check(&schema, &body, "", &mut problems);
    if !problems.is_empty() {
        return Err(err(problems));
    }
    // CEL rules assume a well-typed object, so they run only once the structure is right.
    if let Err(errors) = Validator::new().validate(&schema, &defaulted, None) {
        let problems = errors.into_vec().into_iter().map(|e| Problem::new(e.field_path, e.message)).collect();
        return Err(err(problems));
    }
    Ok(defaulted)
}

/// Checks an update of a `K` from `old` to `new` against the transition rules (those using
/// `oldSelf`, such as an immutable spec), as the API server does on `kubectl apply` of a change.
pub fn check_update<K>(new: &Value, old: &Value, source_name: &str) -> Result<(), ManifestError>
where
    K: CustomResourceExt,
{
    let schema = openapi_schema::<K>().map_err(|e| ManifestError::one(source_name, "", e))?;
    Validator::new().validate(&schema, new, Some(old)).map_err(|errors| ManifestError {
        source_name: source_name.to_owned(),
        problems: errors.into_vec().into_iter().map(|e| Problem::new(e.field_path, e.message)).collect(),
    })
}

/// The `openAPIV3Schema` of `K`'s CRD as JSON.
pub fn openapi_schema<K: CustomResourceExt>() -> Result<Value, String> {
    schema_json(&K::crd())
}

/// The `openAPIV3Schema` of a CRD's first version as JSON.
pub fn schema_json(crd: &CustomResourceDefinition) -> Result<Value, String> {
    let kind = &crd.spec.names.kind;
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or_else(|| format!("the {kind} CRD has no openAPIV3Schema"))?;
    serde_json::to_value(schema).map_err(|e| format!("cannot serialize the {kind} schema: {e}"))
}

fn read_yaml(text: &str, source_name: &str) -> Result<Value, ManifestError> {
    if text.trim().is_empty() {
        return Err(ManifestError::one(source_name, "", "the manifest is empty"));
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) => Err(ManifestError::one(source_name, "", "the manifest is empty")),
        Ok(value) => Ok(value),
        Err(e) if e.to_string().contains("more than one document") => Err(ManifestError::one(
            source_name,
            "",
            "expected one YAML document, found several (split them into one file each)",
        )),
        Err(e) => Err(ManifestError::one(source_name, "", format!("not valid YAML: {e}"))),
    }
}

fn check_metadata(metadata: Option<&Value>, problems: &mut Vec<Problem>) {
    let Some(metadata) = metadata.and_then(Value::as_object) else {
        problems.push(Problem::new("metadata.name", "Required value: name is required"));
        return;
    };
    let name_re = regex::Regex::new(OBJECT_NAME_PATTERN).ok();
    for key in ["name", "namespace"] {
        match metadata.get(key) {
            None if key == "namespace" => {}
            None => problems.push(Problem::new("metadata.name", "Required value: name is required")),
            Some(Value::String(s)) if s.len() <= 253 && name_re.as_ref().is_some_and(|re| re.is_match(s)) => {}
            Some(v) => problems.push(Problem::new(
                format!("metadata.{key}"),
                format!(
                    "Invalid value: {v}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backtest, Reconciliation, TradingSession};

    const BACKTEST: &str = r#"
apiVersion: kuant.dev/v1alpha1
kind: Backtest
metadata: {name: bt-1}
spec:
  strategy: {name: sma-crossover, params: {fast: 10, slow: 30}}
  market: {symbols: [BTCUSDT], timeframe: 1h}
  portfolio: {initialCash: "10000"}
"#;

    const SESSION: &str = r#"
apiVersion: kuant.dev/v1alpha1
kind: TradingSession
metadata: {name: ts-1}
spec:
  mode: paper
  exchange: {name: binance}
  symbols: [BTCUSDT]
  strategies: [{name: sma-crossover, allocationPct: 100}]
  budget: {amount: "1000"}
"#;

    /// Applies `edit` (a `path=yaml` assignment, or `-path` to delete) to a manifest.
    fn edited(base: &str, edits: &[&str]) -> String {
        let mut value: Value = serde_yaml::from_str(base).expect("base manifest is valid YAML");
        for edit in edits {
            if let Some(path) = edit.strip_prefix('-') {
                let (parent, key) = path.rsplit_once('.').expect("path has a parent");
                pointer(&mut value, parent).as_object_mut().expect("parent is an object").remove(key);
            } else {
                let (path, yaml) = edit.split_once('=').expect("edit is path=value");
                *pointer(&mut value, path) = serde_yaml::from_str(yaml).expect("edit value is YAML");
            }
        }
        serde_yaml::to_string(&value).expect("re-serializes")
    }

    fn pointer<'a>(value: &'a mut Value, path: &str) -> &'a mut Value {
        path.split('.').fold(value, |v, key| {
            let map = v.as_object_mut().expect("path goes through objects");
            map.entry(key.to_owned()).or_insert(Value::Object(Default::default()))
        })
    }

    fn backtest_error(edits: &[&str]) -> String {
        parse::<Backtest>(&edited(BACKTEST, edits), "bt.yaml")
            .expect_err("manifest must be refused")
            .to_string()
    }

    fn session_error(edits: &[&str]) -> String {
        parse::<TradingSession>(&edited(SESSION, edits), "ts.yaml")
            .expect_err("manifest must be refused")
            .to_string()
    }

    #[test]
    fn a_minimal_backtest_parses_with_the_schema_defaults() {
        let bt = parse::<Backtest>(BACKTEST, "bt.yaml").expect("valid");
        assert_eq!(bt.spec.execution.fee_bps, 10.0);
        assert_eq!(bt.spec.market.exchange, "binance");
        assert_eq!(bt.spec.portfolio.quote_asset, "USDT");
        assert_eq!(bt.spec.data.source, crate::backtest::DataSource::Synthetic);
        assert_eq!(bt.spec.portfolio.initial_cash.to_string(), "10000");
    }

    #[test]
    fn broken_backtests_name_the_field_and_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["spec.market.timeframe=2h"],
                "bt.yaml: spec.market.timeframe: Unsupported value: \"2h\": supported values: \"1m\", \"5m\", \"15m\", \"1h\", \"4h\", \"1d\"",
            ),
            (
                &["spec.strategy.parms={fast: 1}"],
                "bt.yaml: spec.strategy.parms: unknown field (not in the schema; check the spelling)",
            ),
            (
                &["spec.strategy.name=macd"],
                "bt.yaml: spec.strategy.name: Unsupported value: \"macd\": supported values: \"sma-crossover\", \"ema-crossover\", \"rsi-mean-reversion\", \"donchian-breakout\"",
            ),
            (
                &["spec.market.symbols=[btc usdt]"],
                "bt.yaml: spec.market.symbols[0]: Invalid value: \"btc usdt\": spec.market.symbols[0] in body should match '^[A-Z0-9]{1,20}([-/_][A-Z0-9]{1,20})?$'",
            ),
            (
                &["spec.market.symbols=[]"],
                "bt.yaml: spec.market.symbols: Invalid value: 0: must have at least 1 item",
            ),
            (
                &["spec.market.symbols=[BTCUSDT, BTCUSDT]"],
                "bt.yaml: spec.market.symbols[1]: Duplicate value: \"BTCUSDT\"",
            ),
            (
                &["spec.portfolio.initialCash=10000"],
                "bt.yaml: spec.portfolio.initialCash: Invalid value: 10000: must be of type string (quote it: \"10000\")",
            ),
            (
                &["spec.portfolio.initialCash='-5'"],
                "bt.yaml: spec.portfolio.initialCash: Invalid value: \"-5\": spec.portfolio.initialCash in body should match '^[0-9]{1,15}(\\.[0-9]{1,12})?$'",
            ),
            (
                &["spec.portfolio.initialCash='0'"],
                "bt.yaml: spec.portfolio.initialCash: portfolio.initialCash must be greater than 0",
            ),
            (&["-spec.portfolio"], "bt.yaml: spec.portfolio: Required value"),
            (
                &["spec.execution.feeBps=-1"],
                "bt.yaml: spec.execution.feeBps: Invalid value: -1: spec.execution.feeBps in body should be greater than or equal to 0",
            ),
            (
                &["spec.execution.fill=vwap"],
                "bt.yaml: spec.execution.fill: Unsupported value: \"vwap\": supported values: \"next-open\", \"close\"",
            ),
            (
                &["spec.risk.maxPositionPct=0"],
                "bt.yaml: spec.risk.maxPositionPct: risk.maxPositionPct must be greater than 0",
            ),
            (&["spec.data.source=csv"], "bt.yaml: spec.data: data.csv is required when data.source is csv"),
            (
                &[
                    "spec.data={source: csv, csv: {path: /tmp/x.csv}, volume: {claimName: pvc, mountPath: /data}}",
                ],
                "bt.yaml: spec.data: data.csv.path must lie under data.volume.mountPath",
            ),
            (
                &["spec.data={source: csv, csv: {path: /data/x.csv}, volume: {claimName: a, configMap: b}}"],
                "bt.yaml: spec.data.volume: data.volume needs exactly one of claimName or configMap",
            ),
            (
                &["spec.market.start='2020-01-02T00:00:00Z'", "spec.market.end='2020-01-01T00:00:00Z'"],
                "bt.yaml: spec.market: market.start must be before market.end",
            ),
            (
                &["spec.market.start='2020-01-02'"],
                "bt.yaml: spec.market.start: Invalid value: \"2020-01-02\": must be an RFC 3339 date-time such as \"2024-01-31T00:00:00Z\"",
            ),
            (
                &["spec.data.synthetic.bars=1.5"],
                "bt.yaml: spec.data.synthetic.bars: Invalid value: 1.5: must be of type integer",
            ),
            (
                &["spec.runner.activeDeadlineSeconds=0"],
                "bt.yaml: spec.runner.activeDeadlineSeconds: Invalid value: 0: spec.runner.activeDeadlineSeconds in body should be greater than or equal to 1",
            ),
            (&["kind=Backtests"], "bt.yaml: kind: Unsupported value: \"Backtests\": expected \"Backtest\""),
            (
                &["apiVersion=kuant.dev/v1"],
                "bt.yaml: apiVersion: Unsupported value: \"kuant.dev/v1\": expected \"kuant.dev/v1alpha1\"",
            ),
            (&["-metadata.name"], "bt.yaml: metadata.name: Required value: name is required"),
            (
                &["metadata.name=My_Backtest"],
                "bt.yaml: metadata.name: Invalid value: \"My_Backtest\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ),
        ];
        for (edits, expected) in cases {
            assert_eq!(backtest_error(edits), *expected, "edits {edits:?}");
        }
    }

    #[test]
    fn several_problems_are_reported_together_on_one_line() {
        let err = backtest_error(&["spec.market.timeframe=2h", "spec.execution.slippageBps=-3"]);
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("spec.execution.slippageBps: Invalid value: -3"), "{err}");
        assert!(err.contains("; spec.market.timeframe: Unsupported value"), "{err}");
    }

    #[test]
    fn yaml_syntax_errors_and_empty_or_multi_document_files_are_refused() {
        let err = parse::<Backtest>("spec: [unclosed", "bad.yaml").expect_err("broken YAML");
        assert!(err.to_string().starts_with("bad.yaml: not valid YAML: "), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse::<Backtest>("  \n", "empty.yaml").expect_err("empty");
        assert_eq!(err.to_string(), "empty.yaml: the manifest is empty");
        let two = format!("{BACKTEST}\n---\n{BACKTEST}");
        let err = parse::<Backtest>(&two, "two.yaml").expect_err("two documents");
        assert_eq!(
            err.to_string(),
            "two.yaml: expected one YAML document, found several (split them into one file each)"
        );
        let err = parse::<Backtest>("- a\n- b\n", "list.yaml").expect_err("a list");
        assert_eq!(
            err.to_string(),
            "list.yaml: expected a YAML mapping with apiVersion, kind, metadata and spec"
        );
    }

    #[test]
    fn a_live_session_without_acknowledgement_is_refused_by_the_cel_rule() {
        let err = session_error(&[
            "spec.mode=live",
            "spec.exchange.credentialsSecretRef={name: binance-credentials}",
        ]);
        assert_eq!(
            err,
            "ts.yaml: spec.liveTradingAcknowledged: live trading needs spec.liveTradingAcknowledged: true (real orders with real money)"
        );
    }

    #[test]
    fn a_live_session_needs_credentials_too() {
        let err = session_error(&["spec.mode=live", "spec.liveTradingAcknowledged=true"]);
        assert_eq!(
            err,
            "ts.yaml: spec.exchange: live trading needs spec.exchange.credentialsSecretRef naming the Secret with the exchange API key"
        );
        let ok = edited(
            SESSION,
            &[
                "spec.mode=live",
                "spec.liveTradingAcknowledged=true",
                "spec.exchange.credentialsSecretRef={name: binance-credentials}",
            ],
        );
        let ts = parse::<TradingSession>(&ok, "ts.yaml").expect("acknowledged live session is valid");
        let secret = ts.spec.exchange.credentials_secret_ref.expect("secret ref kept");
        assert_eq!((secret.api_key_key.as_str(), secret.api_secret_key.as_str()), ("apiKey", "apiSecret"));
    }

    #[test]
    fn session_rules_cover_allocations_judge_and_bounds() {
        let two = "spec.strategies=[{name: sma-crossover, allocationPct: 70}, {name: ema-crossover, allocationPct: 40}]";
        assert_eq!(
            session_error(&[two]),
            "ts.yaml: spec.strategies: strategy allocations (allocationPct) must sum to at most 100"
        );
        assert_eq!(
            session_error(&["spec.judge={mode: llm}"]),
            "ts.yaml: spec.judge: judge.llm is required when judge.mode is llm"
        );
        assert_eq!(
            session_error(&["spec.risk.maxDailyLossPct=150"]),
            "ts.yaml: spec.risk.maxDailyLossPct: Invalid value: 150: spec.risk.maxDailyLossPct in body should be less than or equal to 100"
        );
        assert_eq!(
            session_error(&["spec.mode=real"]),
            "ts.yaml: spec.mode: Unsupported value: \"real\": supported values: \"paper\", \"live\""
        );
        assert_eq!(
            session_error(&["spec.strategies=[{name: sma-crossover, allocationPct: 0}]"]),
            "ts.yaml: spec.strategies[0].allocationPct: allocationPct must be greater than 0"
        );
    }

    #[test]
    fn session_defaults_are_filled_in() {
        let ts = parse::<TradingSession>(SESSION, "ts.yaml").expect("valid");
        assert_eq!(ts.spec.market_data.stale_after_seconds, 30);
        assert!(ts.spec.market_data.rest_fallback);
        assert_eq!(ts.spec.risk.max_orders_per_minute, 30);
        assert!(!ts.spec.suspend);
        assert!(!ts.spec.live_trading_acknowledged);
    }

    #[test]
    fn reconciliation_schedule_and_assets_are_checked() {
        let base = r#"
apiVersion: kuant.dev/v1alpha1
kind: Reconciliation
metadata: {name: r}
spec:
  sessionRef: {name: live-btc}
"#;
        let r = parse::<Reconciliation>(base, "r.yaml").expect("minimal reconciliation is valid");
        assert_eq!(r.spec.threshold.relative_pct, 0.1);
        assert_eq!(r.spec.on_drift, crate::reconciliation::OnDrift::Alert);
        let err = parse::<Reconciliation>(&edited(base, &["spec.schedule=every hour"]), "r.yaml")
            .expect_err("not cron")
            .to_string();
        assert!(err.starts_with("r.yaml: spec.schedule: Invalid value: \"every hour\""), "{err}");
        let err = parse::<Reconciliation>(&edited(base, &["spec.onDrift=panic"]), "r.yaml")
            .expect_err("bad enum")
            .to_string();
        assert_eq!(
            err,
            "r.yaml: spec.onDrift: Unsupported value: \"panic\": supported values: \"alert\", \"haltSession\""
        );
        assert!(parse::<Reconciliation>(&edited(base, &["spec.schedule='@hourly'"]), "r.yaml").is_ok());
    }

    #[test]
    fn a_backtest_spec_cannot_change_once_created() {
        let old: Value = serde_yaml::from_str(BACKTEST).expect("yaml");
        let new: Value =
            serde_yaml::from_str(&edited(BACKTEST, &["spec.market.timeframe=4h"])).expect("yaml");
        let err = check_update::<Backtest>(&new, &old, "bt.yaml").expect_err("spec is immutable");
        assert_eq!(
            err.to_string(),
            "bt.yaml: spec: Backtest spec is immutable: create a new Backtest to run with other settings"
        );
        let relabelled: Value =
            serde_yaml::from_str(&edited(BACKTEST, &["metadata.labels={team: quant}"])).expect("yaml");
        assert!(check_update::<Backtest>(&relabelled, &old, "bt.yaml").is_ok(), "metadata may change");
    }

    #[test]
    fn a_session_spec_can_change() {
        let old: Value = serde_yaml::from_str(SESSION).expect("yaml");
        let new: Value = serde_yaml::from_str(&edited(SESSION, &["spec.suspend=true"])).expect("yaml");
        assert!(
            check_update::<TradingSession>(&new, &old, "ts.yaml").is_ok(),
            "the kill switch is a spec change"
        );
    }
}
