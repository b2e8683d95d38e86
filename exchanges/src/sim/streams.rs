//! The simulator's market streams in Binance's format: `<symbol>@trade`, `<symbol>@bookTicker`
//! and `<symbol>@kline_<interval>`, raw (`/ws/<stream>`) or combined (`/stream?streams=a/b`,
//! each message wrapped as `{"stream": …, "data": …}`).

use std::sync::OnceLock;

use axum::extract::ws::Utf8Bytes;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::model::Kline;

/// One move of a symbol's market: a trade at the new price, the book around it and the candle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketTick {
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// The candles' interval, e.g. `1h`.
    pub interval: String,
    /// Simulated time of the move, Unix ms.
    pub time_ms: i64,
    /// A sequence number (trade id and book update id).
    pub id: u64,
    /// The trade's price.
    pub price: Decimal,
    /// The trade's quantity.
    pub quantity: Decimal,
    /// Whether the buyer was the maker (a fall).
    pub buyer_maker: bool,
    /// Best bid (price, quantity).
    pub bid: (Decimal, Decimal),
    /// Best ask (price, quantity).
    pub ask: (Decimal, Decimal),
    /// The candle as formed by now.
    pub kline: Kline,
    /// Its messages, rendered once for every connection that sends them.
    pub rendered: Rendered,
}

/// A tick's messages as text, made on first use (a cache: equal whatever it holds).
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    trade: OnceLock<Utf8Bytes>,
    book: OnceLock<Utf8Bytes>,
    kline: OnceLock<Utf8Bytes>,
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

/// The text of stream `kind`'s message for `tick` (rendered once per tick however many
/// connections send it; a clone shares it), or `None` when the stream is not for it.
pub fn text(tick: &MarketTick, symbol: &str, kind: &StreamKind) -> Option<Utf8Bytes> {
    let cell = match kind {
        StreamKind::Trade => &tick.rendered.trade,
        StreamKind::BookTicker => &tick.rendered.book,
        StreamKind::Kline(_) => &tick.rendered.kline,
    };
    if let Some(done) = cell.get() {
        // A kline cell holds the tick's own interval; other intervals have no message.
        return match kind {
            StreamKind::Kline(i) if *i != tick.interval => None,
            _ if tick.symbol != symbol => None,
            _ => Some(done.clone()),
        };
    }
    let rendered = Utf8Bytes::from(message(tick, symbol, kind)?.to_string());
    Some(cell.get_or_init(|| rendered).clone())
}

/// What a stream name asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `<symbol>@trade`.
    Trade,
    /// `<symbol>@bookTicker`.
    BookTicker,
    /// `<symbol>@kline_<interval>`.
    Kline(String),
}

/// A parsed stream name: the symbol (upper case) and the kind.
pub fn parse_stream(name: &str) -> Result<(String, StreamKind), String> {
    let (symbol, kind) = name.split_once('@').ok_or_else(|| format!("{name:?} is not <symbol>@<stream>"))?;
    let kind = match kind {
        "trade" => StreamKind::Trade,
        "bookTicker" => StreamKind::BookTicker,
        k => match k.strip_prefix("kline_") {
            Some(interval) => StreamKind::Kline(interval.to_owned()),
            None => {
                return Err(format!(
                    "{name:?}: the simulator streams @trade, @bookTicker and @kline_<interval>"
                ));
            }
        },
    };
    Ok((symbol.to_uppercase(), kind))
}

/// The message of stream `kind` for `tick`, or `None` when the stream is not for it.
pub fn message(tick: &MarketTick, symbol: &str, kind: &StreamKind) -> Option<Value> {
    if tick.symbol != symbol {
        return None;
    }
    Some(match kind {
        StreamKind::Trade => json!({
            "e": "trade", "E": tick.time_ms, "s": tick.symbol, "t": tick.id,
            "p": tick.price.to_string(), "q": tick.quantity.to_string(), "T": tick.time_ms,
            "m": tick.buyer_maker, "M": true,
        }),
        StreamKind::BookTicker => json!({
            "u": tick.id, "s": tick.symbol, "b": tick.bid.0.to_string(), "B": tick.bid.1.to_string(),
            "a": tick.ask.0.to_string(), "A": tick.ask.1.to_string(),
        }),
        StreamKind::Kline(interval) => {
            if *interval != tick.interval {
                return None;
            }
            let k = &tick.kline;
            json!({
                "e": "kline", "E": tick.time_ms, "s": tick.symbol,
                "k": {
                    "t": k.open_ms, "T": k.close_ms, "s": tick.symbol, "i": interval, "f": -1, "L": -1,
                    "o": k.open.to_string(), "c": k.close.round_dp(8).to_string(),
                    "h": k.high.round_dp(8).to_string(), "l": k.low.round_dp(8).to_string(),
                    "v": k.volume.to_string(), "n": 0, "x": k.closed,
                    "q": (k.volume * k.close).round_dp(8).to_string(), "V": "0", "Q": "0", "B": "0",
                },
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::wire::{MarketEvent, market_event};

    fn tick() -> MarketTick {
        let d = |s: &str| s.parse::<Decimal>().expect("decimal");
        MarketTick {
            symbol: "BTCUSDT".into(),
            interval: "1h".into(),
            time_ms: 7_200_000,
            id: 9,
            price: d("60000.5"),
            quantity: d("0.25"),
            buyer_maker: false,
            bid: (d("60000.4"), d("2")),
            ask: (d("60000.6"), d("2")),
            kline: Kline {
                open_ms: 3_600_000,
                open: d("59000"),
                high: d("60001"),
                low: d("58999"),
                close: d("60000.5"),
                volume: d("10"),
                close_ms: 7_199_999,
                closed: true,
            },
            rendered: Rendered::default(),
        }
    }

    #[test]
    fn stream_names_parse_as_binance_spells_them() {
        assert_eq!(parse_stream("btcusdt@trade"), Ok(("BTCUSDT".into(), StreamKind::Trade)));
        assert_eq!(parse_stream("btcusdt@bookTicker"), Ok(("BTCUSDT".into(), StreamKind::BookTicker)));
        assert_eq!(parse_stream("ethusdt@kline_1h"), Ok(("ETHUSDT".into(), StreamKind::Kline("1h".into()))));
        assert!(parse_stream("btcusdt@depth").is_err());
        assert!(parse_stream("btcusdt").is_err());
    }

    #[test]
    fn messages_read_back_with_kuants_binance_parser() {
        let t = tick();
        for (kind, check) in [
            (StreamKind::Trade, "trade"),
            (StreamKind::BookTicker, "book"),
            (StreamKind::Kline("1h".into()), "kline"),
        ] {
            let text = message(&t, "BTCUSDT", &kind).expect("a message").to_string();
            let event = market_event(&text).expect("parsed").expect("an event");
            match (check, event) {
                ("trade", MarketEvent::Trade { id, price, .. }) => assert_eq!((id, price), (9, t.price)),
                ("book", MarketEvent::BookTicker(b)) => assert_eq!((b.bid, b.ask), (t.bid, t.ask)),
                ("kline", MarketEvent::Kline { kline, .. }) => assert_eq!(kline, t.kline),
                (c, e) => panic!("{c}: {e:?}"),
            }
        }
        assert_eq!(message(&t, "ETHUSDT", &StreamKind::Trade), None);
        // Rendered once, and only for the streams it belongs to.
        let trade = text(&t, "BTCUSDT", &StreamKind::Trade).map(|t| t.as_str().to_owned());
        assert_eq!(trade, message(&t, "BTCUSDT", &StreamKind::Trade).map(|v| v.to_string()));
        assert_eq!(text(&t, "BTCUSDT", &StreamKind::Trade).map(|t| t.as_str().to_owned()), trade);
        assert_eq!(text(&t, "ETHUSDT", &StreamKind::Trade), None);
        assert!(text(&t, "BTCUSDT", &StreamKind::Kline("1h".into())).is_some());
        assert_eq!(text(&t, "BTCUSDT", &StreamKind::Kline("1m".into())), None);
        assert_eq!(message(&t, "BTCUSDT", &StreamKind::Kline("1m".into())), None);
    }
}
