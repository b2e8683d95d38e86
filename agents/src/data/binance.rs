//! Candles downloaded from Binance's public klines endpoint (`GET /api/v3/klines`), page by page
//! (1000 candles a request), with backoff when rate-limited, and cached on disk so a backtest run
//! twice downloads once. Only closed candles are kept. The base URL can point at a mirror, a
//! testnet or the kuant exchange simulator.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kuant_crds::Timeframe;
use serde_json::Value;

use super::{DataError, DataSource, Span};
use crate::candles::{Bar, Series};
use crate::price::Price;

/// Binance spot's public REST API.
pub const DEFAULT_BASE_URL: &str = "https://api.binance.com";
/// Candles per request (Binance's maximum).
pub const PAGE_SIZE: usize = 1000;
/// Requests tried before giving up on one page.
pub const MAX_ATTEMPTS: u32 = 6;
/// Longest wait a rate limit may ask for before the download gives up instead.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Downloads candles from Binance (or anything that speaks its klines API).
#[derive(Clone, Debug)]
pub struct BinanceSource {
    base_url: String,
    cache_dir: Option<PathBuf>,
    backoff: Duration,
    agent: ureq::Agent,
}

impl BinanceSource {
    /// A source for `base_url` (default: Binance spot), caching under `cache_dir` when given.
    pub fn new(base_url: Option<&str>, cache_dir: Option<PathBuf>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent("kuant")
            .build()
            .into();
        let base_url = base_url.unwrap_or(DEFAULT_BASE_URL).trim_end_matches('/').to_owned();
        Self { base_url, cache_dir, backoff: Duration::from_millis(500), agent }
    }

    /// Sets the first retry delay (doubled on each further retry).
    pub fn with_backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// The default cache folder: `$KUANT_CACHE_DIR`, else `$XDG_CACHE_HOME/kuant`, else
    /// `~/.cache/kuant`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("KUANT_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("kuant"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("kuant"))
    }

    fn error(&self, problem: impl Into<String>) -> DataError {
        DataError::Source { source_name: format!("{}/api/v3/klines", self.base_url), problem: problem.into() }
    }

    /// One page of raw klines, retried on rate limits, server errors and network failures.
    fn page(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        start: i64,
        end: i64,
    ) -> Result<Vec<Value>, DataError> {
        let url = format!("{}/api/v3/klines", self.base_url);
        let mut wait = self.backoff;
        let mut last_problem = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let response = self
                .agent
                .get(&url)
                .query("symbol", symbol)
                .query("interval", timeframe.as_str())
                .query("startTime", start.to_string())
                .query("endTime", (end - 1).to_string())
                .query("limit", PAGE_SIZE.to_string())
                .call();
            match response {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = r.body_mut().read_to_string().unwrap_or_default();
                    match status {
                        200 => {
                            return match serde_json::from_str::<Value>(&body) {
                                Ok(Value::Array(rows)) => Ok(rows),
                                _ => Err(self.error(format!(
                                    "expected a JSON array of klines, got: {}",
                                    excerpt(&body)
                                ))),
                            };
                        }
                        429 | 418 | 500..=599 => {
                            last_problem = format!("HTTP {status} {}", excerpt(&body));
                            if let Some(after) = retry_after {
                                if after > MAX_WAIT {
                                    return Err(self.error(format!(
                                        "rate-limited (HTTP {status}): the exchange asks to wait {}s; try again later",
                                        after.as_secs()
                                    )));
                                }
                                wait = after;
                            }
                        }
                        _ => return Err(self.error(format!("HTTP {status}: {}", excerpt(&body)))),
                    }
                }
                Err(e) => last_problem = format!("cannot reach the exchange: {e}"),
            }
            if attempt < MAX_ATTEMPTS {
                tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, "{last_problem}; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(MAX_WAIT);
            }
        }
        Err(self.error(format!("{last_problem} (gave up after {MAX_ATTEMPTS} attempts)")))
    }

    fn cache_path(&self, symbol: &str, timeframe: Timeframe, start: i64, end: i64) -> Option<PathBuf> {
        let host: String = self
            .base_url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        let safe_symbol: String = symbol.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        self.cache_dir.as_ref().map(|d| {
            d.join("klines")
                .join(host)
                .join(safe_symbol)
                .join(timeframe.as_str())
                .join(format!("{start}-{end}.csv"))
        })
    }
}

impl DataSource for BinanceSource {
    fn load(&self, symbol: &str, timeframe: Timeframe, span: Span) -> Result<Series, DataError> {
        let step = timeframe.seconds() as i64 * 1000;
        let Some(start) = span.start_ms else {
            return Err(self.error("data.source exchange needs market.start: how far back to download"));
        };
        let start = start + (step - start.rem_euclid(step)) % step;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        // The candle still open now is not final: stop before it.
        let end = span.end_ms.unwrap_or(i64::MAX).min(now - now.rem_euclid(step));
        if end <= start {
            return Err(self.error("no closed candles between market.start and market.end"));
        }
        let cache = self.cache_path(symbol, timeframe, start, end);
        if let Some(path) = cache.as_deref().filter(|p| p.is_file())
            && let Ok(text) = std::fs::read_to_string(path)
        {
            return super::csv::parse(&text, path, timeframe, Span::default());
        }
        let mut series = Series::with_capacity(((end - start) / step).clamp(0, 10_000_000) as usize);
        let mut cursor = start;
        let mut filled = 0u64;
        while cursor < end {
            let rows = self.page(symbol, timeframe, cursor, end)?;
            for row in &rows {
                let bar = parse_kline(row).map_err(|p| self.error(format!("{symbol}: {p}")))?;
                if bar.time_ms < cursor || bar.time_ms >= end {
                    continue;
                }
                filled += fill_gap(&mut series, bar.time_ms, step);
                series.push_checked(bar, timeframe).map_err(|p| self.error(format!("{symbol}: {p}")))?;
            }
            // Only an empty page (or one that does not move forward) ends the download: a mirror
            // may serve pages shorter than Binance's.
            let Some(last) = series.times().last().copied().filter(|&t| t >= cursor) else { break };
            cursor = last + step;
        }
        if filled > 0 {
            tracing::warn!(
                symbol,
                filled,
                "the exchange had no candles for {filled} {timeframe} intervals (an outage): filled with flat, zero-volume candles at the previous close"
            );
        }
        if series.is_empty() {
            return Err(self.error(format!("{symbol}: the exchange returned no candles for that span")));
        }
        if let Some(path) = &cache
            && let Err(e) = write_cache(path, &series)
        {
            tracing::warn!("cannot cache the candles at {}: {e}", path.display());
        }
        Ok(series)
    }
}

/// Before a candle opening at `time_ms`, adds flat zero-volume candles at the last close for every
/// interval the exchange skipped (an outage: nothing traded), so the series stays gap-free.
/// Returns how many it added.
fn fill_gap(series: &mut Series, time_ms: i64, step: i64) -> u64 {
    let Some(last) = series.len().checked_sub(1).map(|i| series.bar(i)) else { return 0 };
    let mut added = 0;
    let mut t = last.time_ms + step;
    while t < time_ms {
        let c = last.close;
        series.push(Bar { time_ms: t, open: c, high: c, low: c, close: c, volume: 0.0 });
        t += step;
        added += 1;
    }
    added
}

/// `[openTime, "open", "high", "low", "close", "volume", closeTime, …]`
fn parse_kline(row: &Value) -> Result<Bar, String> {
    let field = |i: usize| {
        row.get(i).ok_or_else(|| format!("a kline has no field {i}: {}", excerpt(&row.to_string())))
    };
    let time_ms = field(0)?.as_i64().ok_or("a kline's open time is not an integer")?;
    let text = |i: usize, name: &str| -> Result<Price, String> {
        let v = field(i)?;
        let s = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
        Price::parse(&s).map_err(|e| format!("{name} at {time_ms}: {e}"))
    };
    let volume_text = field(5)?;
    let volume = volume_text
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .or_else(|| volume_text.as_f64())
        .ok_or_else(|| format!("volume at {time_ms} is not a number"))?;
    Ok(Bar {
        time_ms,
        open: text(1, "open")?,
        high: text(2, "high")?,
        low: text(3, "low")?,
        close: text(4, "close")?,
        volume,
    })
}

fn write_cache(path: &Path, series: &Series) -> std::io::Result<()> {
    use std::fmt::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::from("timestamp_ms,open,high,low,close,volume\n");
    for bar in series.iter() {
        let _ = writeln!(
            text,
            "{},{},{},{},{},{}",
            bar.time_ms, bar.open, bar.high, bar.low, bar.close, bar.volume
        );
    }
    // Written aside and renamed, so a crash never leaves a half file that a later run would trust.
    let partial = path.with_extension("csv.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, path)
}

fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.len() < text.len() { format!("{t}…") } else { t }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const H: i64 = 3_600_000;
    const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % H;

    /// A local stand-in for Binance: serves klines for any span (a close that wanders with the
    /// hour), pages of at most `limit`, and answers the first `rate_limited` requests with 429.
    fn fake_binance(rate_limited: usize) -> (String, Arc<AtomicUsize>) {
        fake_binance_with(rate_limited, usize::MAX, None)
    }

    /// As [`fake_binance`], serving at most `page_cap` candles a page and none in `outage`.
    fn fake_binance_with(
        rate_limited: usize,
        page_cap: usize,
        outage: Option<(i64, i64)>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let query = request_line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.split_once('?'))
                    .map(|(_, q)| q.to_owned())
                    .unwrap_or_default();
                let param = |k: &str| {
                    query.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap_or("").to_owned()
                };
                let (status, extra, body) = if n < rate_limited {
                    (
                        "429 Too Many Requests",
                        "Retry-After: 0\r\n",
                        r#"{"code":-1003,"msg":"Too many requests."}"#.to_owned(),
                    )
                } else if param("symbol") != "BTCUSDT" {
                    ("400 Bad Request", "", r#"{"code":-1121,"msg":"Invalid symbol."}"#.to_owned())
                } else {
                    let start: i64 = param("startTime").parse().unwrap_or(T0);
                    let end: i64 = param("endTime").parse().unwrap_or(i64::MAX);
                    let limit: usize = param("limit").parse().unwrap_or(500);
                    let rows: Vec<String> = (0..)
                        .map(|k| start + k * H)
                        .take_while(|&t| t <= end)
                        .filter(|&t| outage.is_none_or(|(a, b)| t < a || t >= b))
                        .take(limit.min(page_cap))
                        .map(|t| {
                            let c = 100 + (t / H) % 7;
                            format!(r#"[{t},"{c}.00","{}.50","{}.50","{c}.00","1.5",{},"150.0",10,"0.7","70.0","0"]"#, c, c - 1, t + H - 1)
                        })
                        .collect();
                    ("200 OK", "", format!("[{}]", rows.join(",")))
                };
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (format!("http://{addr}"), requests)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kuant-binance-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn downloads_every_page_retries_rate_limits_and_caches() {
        let (url, requests) = fake_binance(1);
        let cache = temp_dir("pages");
        let source =
            BinanceSource::new(Some(&url), Some(cache.clone())).with_backoff(Duration::from_millis(1));
        let span = Span { start_ms: Some(T0), end_ms: Some(T0 + 2_500 * H) };
        let series = source.load("BTCUSDT", Timeframe::H1, span).expect("downloads");
        assert_eq!(series.len(), 2_500);
        assert_eq!(series.times().first(), Some(&T0));
        assert_eq!(series.times().last(), Some(&(T0 + 2_499 * H)));
        // One 429, then three pages of 1000, 1000 and 500.
        assert_eq!(requests.load(Ordering::SeqCst), 4);
        let again = source.load("BTCUSDT", Timeframe::H1, span).expect("from the cache");
        assert_eq!(again, series);
        assert_eq!(requests.load(Ordering::SeqCst), 4, "the second load reads the cache");
        let _ = std::fs::remove_dir_all(cache);
    }

    #[test]
    fn short_pages_do_not_end_the_download_and_outages_are_filled_flat() {
        let outage = (T0 + 100 * H, T0 + 103 * H);
        let (url, _) = fake_binance_with(0, 300, Some(outage));
        let source = BinanceSource::new(Some(&url), None);
        let span = Span { start_ms: Some(T0), end_ms: Some(T0 + 1_000 * H) };
        let series = source.load("BTCUSDT", Timeframe::H1, span).expect("downloads");
        assert_eq!(series.len(), 1_000, "all pages of 300, and the 3 missing hours filled");
        let before = series.bar(99);
        for i in 100..103 {
            let b = series.bar(i);
            assert_eq!((b.open, b.close, b.volume), (before.close, before.close, 0.0), "bar {i}");
        }
        assert!(series.bar(103).volume > 0.0);
    }

    #[test]
    fn exchange_errors_and_persistent_rate_limits_are_reported() {
        let (url, _) = fake_binance(0);
        let source = BinanceSource::new(Some(&url), None);
        let span = Span { start_ms: Some(T0), end_ms: Some(T0 + 10 * H) };
        let err = source.load("NOPE", Timeframe::H1, span).expect_err("invalid symbol").to_string();
        assert!(err.ends_with(r#"HTTP 400: {"code":-1121,"msg":"Invalid symbol."}"#), "{err}");

        let (url, requests) = fake_binance(usize::MAX);
        let source = BinanceSource::new(Some(&url), None).with_backoff(Duration::from_millis(1));
        let err = source.load("BTCUSDT", Timeframe::H1, span).expect_err("always 429").to_string();
        assert!(err.contains("HTTP 429") && err.contains("gave up after 6 attempts"), "{err}");
        assert_eq!(requests.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn needs_a_start_and_an_unreachable_exchange_is_named() {
        let source =
            BinanceSource::new(Some("http://127.0.0.1:9"), None).with_backoff(Duration::from_millis(1));
        let err = source.load("BTCUSDT", Timeframe::H1, Span::default()).expect_err("no start").to_string();
        assert!(err.contains("needs market.start"), "{err}");
        let span = Span { start_ms: Some(T0), end_ms: Some(T0 + 10 * H) };
        let err = source.load("BTCUSDT", Timeframe::H1, span).expect_err("nothing listens").to_string();
        assert!(
            err.contains("cannot reach the exchange")
                && err.starts_with("http://127.0.0.1:9/api/v3/klines: "),
            "{err}"
        );
    }
}
