//! Where candles come from. Every source yields checked [`Series`]: ascending, gap-free, with
//! consistent OHLC; a problem is reported with the file, line and what is wrong.

pub mod binance;
pub mod csv;
pub mod synthetic;

use kuant_crds::Timeframe;

use crate::candles::Series;

/// Why candles could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A row of a file is wrong.
    #[error("{path}:{line}: {problem}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A whole file or source is wrong.
    #[error("{source_name}: {problem}")]
    Source {
        /// The file or endpoint.
        source_name: String,
        /// What is wrong.
        problem: String,
    },
}

/// A time span `[start, end)` in Unix milliseconds; either bound optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// First bar open time to keep (inclusive).
    pub start_ms: Option<i64>,
    /// Bar open time to stop before (exclusive).
    pub end_ms: Option<i64>,
}

impl Span {
    /// Whether a bar opening at `t` is inside the span.
    pub fn contains(&self, t: i64) -> bool {
        self.start_ms.is_none_or(|s| t >= s) && self.end_ms.is_none_or(|e| t < e)
    }
}

/// A source of candles.
pub trait DataSource {
    /// Loads the candles of `symbol` at `timeframe` within `span`.
    fn load(&self, symbol: &str, timeframe: Timeframe, span: Span) -> Result<Series, DataError>;
}
