//! Building blocks shared by the three custom resources: timeframes, symbols, decimal amounts,
//! strategy references, secret references and the pod settings of agent runners.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A trading pair as the exchange names it: `BTCUSDT`, `BTC-USD` or `BTC/USD`.
pub const SYMBOL_PATTERN: &str = r"^[A-Z0-9]{1,20}([-/_][A-Z0-9]{1,20})?$";
/// An asset ticker: `BTC`, `USDT`.
pub const ASSET_PATTERN: &str = r"^[A-Z0-9]{1,20}$";
/// An exchange name as kuant knows it: lower case, e.g. `binance`, `paper`, `simulator`.
pub const EXCHANGE_PATTERN: &str = r"^[a-z][a-z0-9-]{0,31}$";
/// A Kubernetes object name (DNS-1123 subdomain).
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key inside a Secret or ConfigMap.
pub const DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// An http(s) URL.
pub const HTTP_URL_PATTERN: &str = r"^https?://[^\s]+$";
/// A ws(s) URL.
pub const WS_URL_PATTERN: &str = r"^wss?://[^\s]+$";
/// A non-negative decimal number written as a string: at most 15 integer and 12 fraction digits.
pub const DECIMAL_PATTERN: &str = r"^[0-9]{1,15}(\.[0-9]{1,12})?$";
/// A decimal number that may be negative (P&L, drift), written as a string.
pub const SIGNED_DECIMAL_PATTERN: &str = r"^-?[0-9]{1,15}(\.[0-9]{1,12})?$";

/// Candle length of a market-data series.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Timeframe {
    /// One minute.
    #[serde(rename = "1m")]
    M1,
    /// Five minutes.
    #[serde(rename = "5m")]
    M5,
    /// Fifteen minutes.
    #[serde(rename = "15m")]
    M15,
    /// One hour.
    #[serde(rename = "1h")]
    #[default]
    H1,
    /// Four hours.
    #[serde(rename = "4h")]
    H4,
    /// One day.
    #[serde(rename = "1d")]
    D1,
}

impl Timeframe {
    /// Every timeframe, shortest first.
    pub const ALL: [Timeframe; 6] = [Self::M1, Self::M5, Self::M15, Self::H1, Self::H4, Self::D1];

    /// The name used in manifests and exchange APIs (`1h`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::M1 => "1m",
            Self::M5 => "5m",
            Self::M15 => "15m",
            Self::H1 => "1h",
            Self::H4 => "4h",
            Self::D1 => "1d",
        }
    }

    /// Length of one candle in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Self::M1 => 60,
            Self::M5 => 300,
            Self::M15 => 900,
            Self::H1 => 3_600,
            Self::H4 => 14_400,
            Self::D1 => 86_400,
        }
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// Long when the fast simple moving average is above the slow one (params `fast`, `slow`).
    SmaCrossover,
    /// Long when the fast exponential moving average is above the slow one (params `fast`, `slow`).
    EmaCrossover,
    /// Buy when RSI falls below `lower`, sell when it rises above `upper` (params `period`, `lower`, `upper`).
    RsiMeanReversion,
    /// Buy on a close above the highest high of `period` bars, sell below the lowest low (param `period`).
    DonchianBreakout,
}

impl StrategyName {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SmaCrossover => "sma-crossover",
            Self::EmaCrossover => "ema-crossover",
            Self::RsiMeanReversion => "rsi-mean-reversion",
            Self::DonchianBreakout => "donchian-breakout",
        }
    }
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Numeric strategy parameters by name, e.g. `{fast: 10, slow: 30}`; absent ones take the
/// strategy's defaults, and the strategy rejects names it does not know.
pub type StrategyParams = BTreeMap<String, f64>;

/// Which built-in strategy to run and with which parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyRef {
    /// Built-in strategy: sma-crossover, ema-crossover, rsi-mean-reversion or donchian-breakout.
    pub name: StrategyName,
    /// Numeric parameters of the strategy (e.g. `fast: 10`, `slow: 30`); absent ones take defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub params: StrategyParams,
}

macro_rules! decimal_string {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $signed:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub rust_decimal::Decimal);

        impl $name {
            /// The decimal value.
            pub fn value(self) -> rust_decimal::Decimal {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_decimal(s, $signed).map(Self)
            }
        }

        impl From<rust_decimal::Decimal> for $name {
            fn from(d: rust_decimal::Decimal) -> Self {
                Self(d)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(DecimalVisitor { signed: $signed }).map(Self)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "maxLength": 29 })
            }
        }
    };
}

decimal_string!(
    /// A non-negative decimal amount (money or quantity) written as a string, e.g. `"10000"` or
    /// `"0.015"`. Strings, not YAML numbers, so that no value passes through a binary float.
    Amount,
    DECIMAL_PATTERN,
    false
);

decimal_string!(
    /// A decimal that may be negative (P&L, drift), written as a string, e.g. `"-12.5"`.
    SignedAmount,
    SIGNED_DECIMAL_PATTERN,
    true
);

fn parse_decimal(s: &str, signed: bool) -> Result<rust_decimal::Decimal, String> {
    static UNSIGNED: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(DECIMAL_PATTERN).ok());
    static SIGNED: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(SIGNED_DECIMAL_PATTERN).ok());
    let shape = if signed { &*SIGNED } else { &*UNSIGNED };
    if !shape.as_ref().is_some_and(|re| re.is_match(s)) {
        let sign = if signed { "" } else { "non-negative " };
        return Err(format!(
            "invalid decimal {s:?}: expected a {sign}decimal string such as \"10000\" or \"0.25\""
        ));
    }
    rust_decimal::Decimal::from_str(s).map_err(|e| format!("invalid decimal {s:?}: {e}"))
}

struct DecimalVisitor {
    signed: bool,
}

impl DecimalVisitor {
    fn number<E: de::Error>(&self, n: impl fmt::Display) -> Result<rust_decimal::Decimal, E> {
        Err(E::custom(format!(
            "expected a decimal string, found the number {n}: quote it (\"{n}\") so it is read exactly"
        )))
    }
}

impl de::Visitor<'_> for DecimalVisitor {
    type Value = rust_decimal::Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal string such as \"10000\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_decimal(v, self.signed).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.number(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.number(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.number(v)
    }
}

/// Reference to a key in a Secret in the resource's own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace as this resource).
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_api_key_key")]
    #[schemars(pattern(DATA_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
}

fn default_api_key_key() -> String {
    "apiKey".to_owned()
}

/// Where the exchange API credentials live: a Secret with an API key and an API secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret (same namespace as this resource). Its two keys reach the agent pod as
    /// files of a Secret volume (never environment variables); kuant never copies them into
    /// status, events or logs.
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(min = 1, max = 253))]
    pub name: String,
    /// Key of the API key inside the Secret.
    #[serde(default = "default_api_key_key")]
    #[schemars(pattern(DATA_KEY_PATTERN), length(min = 1, max = 253))]
    pub api_key_key: String,
    /// Key of the API secret inside the Secret.
    #[serde(default = "default_api_secret_key")]
    #[schemars(pattern(DATA_KEY_PATTERN), length(min = 1, max = 253))]
    pub api_secret_key: String,
}

fn default_api_secret_key() -> String {
    "apiSecret".to_owned()
}

/// Pod settings of a long-running agent (a TradingSession's StatefulSet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Runner {
    /// Container image of the agent; defaults to the image the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory requests and limits of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Pod settings of a finite agent run (a Backtest's Job).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRunner {
    /// Container image of the agent; defaults to the image the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory requests and limits of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Seconds after the run finishes before the Job and its pod are deleted (results stay in
    /// status). Absent: kept until the resource is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Wall-clock limit of the run in seconds; the run fails with reason DeadlineExceeded after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub active_deadline_seconds: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_reads_decimal_strings_exactly() {
        let a: Amount = serde_json::from_str("\"10000.10\"").expect("valid decimal");
        assert_eq!(a.to_string(), "10000.10");
        assert_eq!(serde_json::to_string(&a).expect("serializes"), "\"10000.10\"");
    }

    #[test]
    fn amount_refuses_yaml_numbers_with_advice_to_quote() {
        let err = serde_json::from_str::<Amount>("10000").expect_err("numbers are refused");
        assert!(err.to_string().contains("quote it (\"10000\")"), "{err}");
    }

    #[test]
    fn amount_refuses_negative_and_garbage() {
        for bad in ["\"-1\"", "\"1e5\"", "\"abc\"", "\"\"", "\"1.\""] {
            let err = serde_json::from_str::<Amount>(bad).expect_err(bad);
            assert!(err.to_string().contains("non-negative decimal string"), "{bad}: {err}");
        }
    }

    #[test]
    fn signed_amount_accepts_negative() {
        let a: SignedAmount = serde_json::from_str("\"-12.5\"").expect("valid");
        assert_eq!(a.value(), rust_decimal::Decimal::new(-125, 1));
    }

    #[test]
    fn timeframe_names_round_trip() {
        for tf in Timeframe::ALL {
            let json = serde_json::to_string(&tf).expect("serializes");
            assert_eq!(json, format!("\"{}\"", tf.as_str()));
            let back: Timeframe = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, tf);
        }
        assert_eq!(Timeframe::H4.seconds(), 4 * 3600);
    }
}
