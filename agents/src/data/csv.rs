//! Candles from CSV files: kuant's layout `timestamp_ms,open,high,low,close,volume` (header
//! optional; with a header, columns are found by name), or Binance's 12-column kline layout
//! (`open_time,open,high,low,close,volume,close_time,...`, no header).
//!
//! Timestamps are the bar's open time. Values below 1e11 are read as seconds and values of 1e14
//! and more as microseconds (Binance's dumps since 2025); everything else as milliseconds.

use std::path::{Path, PathBuf};

use kuant_crds::Timeframe;

use super::{DataError, DataSource, Span};
use crate::candles::{Bar, Series};
use crate::price::Price;

/// A CSV file holding one symbol's candles.
#[derive(Clone, Debug)]
pub struct CsvSource {
    path: PathBuf,
}

impl CsvSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl DataSource for CsvSource {
    fn load(&self, _symbol: &str, timeframe: Timeframe, span: Span) -> Result<Series, DataError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| DataError::Source {
            source_name: self.path.display().to_string(),
            problem: format!("cannot read: {e}"),
        })?;
        parse(&text, &self.path, timeframe, span)
    }
}

/// Column positions of the fields kuant reads.
#[derive(Clone, Copy, Debug)]
struct Columns {
    time: usize,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
    min_fields: usize,
}

const KUANT_LAYOUT: Columns =
    Columns { time: 0, open: 1, high: 2, low: 3, close: 4, volume: 5, min_fields: 6 };
const BINANCE_LAYOUT: Columns =
    Columns { time: 0, open: 1, high: 2, low: 3, close: 4, volume: 5, min_fields: 12 };

/// Parses CSV text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path, timeframe: Timeframe, span: Span) -> Result<Series, DataError> {
    let name = path.display().to_string();
    let row_error = |line: usize, problem: String| DataError::Row { path: name.clone(), line, problem };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty());
    let Some((first_no, first)) = lines.next() else {
        return Err(DataError::Source { source_name: name, problem: "the file has no rows".into() });
    };
    let first_field = first.split(',').next().unwrap_or_default().trim();
    let (columns, pending_first) = if first_field.parse::<i64>().is_ok() {
        (layout_of(first, first_no).map_err(|p| row_error(first_no, p))?, Some((first_no, first)))
    } else {
        (columns_from_header(first).map_err(|p| row_error(first_no, p))?, None)
    };
    let mut series = Series::with_capacity(text.len() / 48);
    for (line_no, line) in pending_first.into_iter().chain(lines) {
        let bar = parse_row(line, columns).map_err(|p| row_error(line_no, p))?;
        if span.contains(bar.time_ms) {
            series.push_checked(bar, timeframe).map_err(|p| row_error(line_no, p))?;
        }
    }
    if series.is_empty() {
        let problem = if span == Span::default() {
            "the file has no rows".to_owned()
        } else {
            "no rows inside market.start/market.end".to_owned()
        };
        return Err(DataError::Source { source_name: name, problem });
    }
    Ok(series)
}

fn layout_of(first: &str, _line: usize) -> Result<Columns, String> {
    match first.split(',').count() {
        6 => Ok(KUANT_LAYOUT),
        n if n >= 12 => Ok(BINANCE_LAYOUT),
        n => Err(format!(
            "expected 6 columns (timestamp_ms,open,high,low,close,volume) or Binance's 12-column kline layout, found {n}"
        )),
    }
}

fn columns_from_header(header: &str) -> Result<Columns, String> {
    let names: Vec<String> =
        header.split(',').map(|h| h.trim().trim_matches('"').to_ascii_lowercase()).collect();
    let find = |candidates: &[&str]| names.iter().position(|n| candidates.contains(&n.as_str()));
    let need = |what: &str, candidates: &[&str]| {
        find(candidates)
            .ok_or_else(|| format!("the header has no {what} column (found: {})", names.join(", ")))
    };
    Ok(Columns {
        time: need("timestamp", &["timestamp_ms", "timestamp", "time", "open_time", "unix"])?,
        open: need("open", &["open"])?,
        high: need("high", &["high"])?,
        low: need("low", &["low"])?,
        close: need("close", &["close"])?,
        volume: need("volume", &["volume"])?,
        min_fields: names.len(),
    })
}

fn parse_row(line: &str, c: Columns) -> Result<Bar, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() < c.min_fields {
        return Err(format!("expected {} columns, found {}", c.min_fields, fields.len()));
    }
    let price = |i: usize, name: &str| Price::parse(fields[i]).map_err(|e| format!("{name}: {e}"));
    let raw_time: i64 =
        fields[c.time].parse().map_err(|_| format!("timestamp {:?} is not an integer", fields[c.time]))?;
    let time_ms = match raw_time {
        t if t < 100_000_000_000 => t.checked_mul(1000).ok_or("timestamp out of range")?,
        t if t >= 100_000_000_000_000 => t / 1000,
        t => t,
    };
    let volume: f64 =
        fields[c.volume].parse().map_err(|_| format!("volume {:?} is not a number", fields[c.volume]))?;
    Ok(Bar {
        time_ms,
        open: price(c.open, "open")?,
        high: price(c.high, "high")?,
        low: price(c.low, "low")?,
        close: price(c.close, "close")?,
        volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Series, String> {
        parse(text, Path::new("btc.csv"), Timeframe::H1, Span::default()).map_err(|e| e.to_string())
    }

    const H: i64 = 3_600_000;

    /// Open time of hour `i` after 2017-07-14 02:00 UTC, in milliseconds.
    fn t(i: i64) -> i64 {
        (416_667 + i) * H
    }

    #[test]
    fn reads_the_kuant_layout_with_and_without_header() {
        let body = format!("{},1,2,0.5,1.5,10\n{},1.5,2,1,1.8,11\n", t(0), t(1));
        let a = load(&format!("timestamp_ms,open,high,low,close,volume\n{body}")).expect("with header");
        let b = load(&body).expect("without header");
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.bar(1).close, Price::parse("1.8").expect("price"));
    }

    #[test]
    fn finds_columns_by_header_name_in_any_order() {
        let text = format!("close,volume,open,high,low,timestamp\n1.5,10,1,2,0.5,{}\n", t(0));
        let s = load(&text).expect("reordered columns");
        assert_eq!(s.bar(0).open, Price::parse("1").expect("price"));
        assert_eq!(s.bar(0).close, Price::parse("1.5").expect("price"));
    }

    #[test]
    fn reads_binance_klines_in_milli_and_microseconds() {
        let row =
            |t: i64| format!("{t},42000.01,42100,41900.5,42050,12.5,{},525000,100,6,252000,0", t + H - 1);
        let ms = load(&format!(
            "{}\n{}\n",
            row(1_700_000_000_000 - 1_700_000_000_000 % H),
            row(1_700_000_000_000 - 1_700_000_000_000 % H + H)
        ))
        .expect("milliseconds");
        let us = load(&format!(
            "{}\n{}\n",
            row((1_700_000_000_000 - 1_700_000_000_000 % H) * 1000),
            row((1_700_000_000_000 - 1_700_000_000_000 % H + H) * 1000)
        ))
        .expect("microseconds");
        assert_eq!(ms.times(), us.times());
    }

    #[test]
    fn bad_rows_name_the_file_line_and_problem() {
        let header = "timestamp_ms,open,high,low,close,volume\n";
        let ok = format!("{},1,2,0.5,1.5,10\n", t(0));
        let cases = [
            (format!("{header}{ok}{},1,2,3,1.5,10\n", t(1)), "btc.csv:3: high 2 < low 3".to_owned()),
            (format!("{header}{ok}{ok}"), format!("btc.csv:3: duplicate timestamp {}", t(0))),
            (format!("{header}{ok}{},1,2,0.5,1.5,10\n", t(-1)), format!("btc.csv:3: timestamp {} is before the previous row's {} (rows must be ascending)", t(-1), t(0))),
            (format!("{header}{ok}{},1,2,0.5,1.5,10\n", t(3)), format!("btc.csv:3: gap: 2 missing 1h bars before timestamp {} (previous row {})", t(3), t(0))),
            (format!("{header}{},NaN,2,0.5,1.5,10\n", t(0)), "btc.csv:2: open: \"NaN\" is not a number".to_owned()),
            (format!("{header}{},-1,2,0.5,1.5,10\n", t(0)), "btc.csv:2: open -1 is not a positive price".to_owned()),
            (format!("{header}{},1,2,0.5\n", t(0)), "btc.csv:2: expected 6 columns, found 4".to_owned()),
            (format!("{header}2024-01-01,1,2,0.5,1.5,10\n"), "btc.csv:2: timestamp \"2024-01-01\" is not an integer".to_owned()),
            ("time,open,high,low,close\n1,2,3,4,5\n".to_owned(), "btc.csv:1: the header has no volume column (found: time, open, high, low, close)".to_owned()),
            ("1,2,3\n".to_owned(), "btc.csv:1: expected 6 columns (timestamp_ms,open,high,low,close,volume) or Binance's 12-column kline layout, found 3".to_owned()),
            (header.to_owned(), "btc.csv: the file has no rows".to_owned()),
            ("".to_owned(), "btc.csv: the file has no rows".to_owned()),
        ];
        for (text, expected) in cases {
            assert_eq!(load(&text).expect_err(&expected), expected);
        }
    }

    #[test]
    fn honours_the_span() {
        let text: String = (0..10).map(|i| format!("{},1,2,0.5,1.5,10\n", t(i))).collect();
        let span = Span { start_ms: Some(t(2)), end_ms: Some(t(5)) };
        let s = parse(&text, Path::new("x.csv"), Timeframe::H1, span).expect("span");
        assert_eq!(s.times(), &[t(2), t(3), t(4)]);
        let none = Span { start_ms: Some(t(1000)), end_ms: None };
        let err = parse(&text, Path::new("x.csv"), Timeframe::H1, none).expect_err("empty span");
        assert_eq!(err.to_string(), "x.csv: no rows inside market.start/market.end");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = CsvSource::new("/nonexistent/btc.csv")
            .load("BTCUSDT", Timeframe::H1, Span::default())
            .expect_err("missing file")
            .to_string();
        assert!(err.starts_with("/nonexistent/btc.csv: cannot read: "), "{err}");
    }
}
