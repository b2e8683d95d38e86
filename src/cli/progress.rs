//! A progress bar on stderr, shown only when stderr is a terminal and the work is long.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Draws `[=====>    ]  45%  450000/1000000 candles`, at most ten times a second.
pub struct ProgressBar {
    enabled: bool,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl ProgressBar {
    /// A bar for `total` units, shown when stderr is a terminal and `total >= min_total`.
    pub fn new(total: u64, min_total: u64) -> Self {
        Self { enabled: total >= min_total && std::io::stderr().is_terminal(), last_draw: None, drawn: false }
    }

    /// Reports `done` of `total`.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.enabled || self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let fraction = if total == 0 { 1.0 } else { done as f64 / total as f64 };
        let width = 30usize;
        let filled = ((fraction * width as f64) as usize).min(width);
        let arrow = if filled < width { ">" } else { "" };
        let bar = format!("{}{arrow}{}", "=".repeat(filled), " ".repeat(width - filled - arrow.len()));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r[{bar}] {:>3.0}%  {done}/{total} candles", fraction * 100.0);
        let _ = err.flush();
        self.drawn = true;
    }

    /// Shows a one-line status (e.g. while loading) until the next update or `finish`.
    pub fn status(&mut self, message: &str) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{message:<72}");
            let _ = err.flush();
            self.drawn = true;
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\r", " ".repeat(72));
            let _ = err.flush();
        }
    }
}
