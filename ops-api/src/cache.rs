//! A short-lived cache of encoded responses about finished runs. A finished backtest's results
//! and curve only change when it is run again, so for a couple of seconds the same bytes can
//! serve every reader: a dashboard of many viewers costs the store one query per run and
//! endpoint per period, not one per request. A re-run shows within [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// How long an entry serves.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most; when full, expired ones go, then all.
const MAX_ENTRIES: usize = 4096;

/// Encoded JSON responses by request.
#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<HashMap<String, (Instant, Bytes)>>,
}

impl ResponseCache {
    /// The fresh entry for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let entries = self.entries.lock().ok()?;
        entries.get(key).filter(|(at, _)| at.elapsed() < TTL).map(|(_, bytes)| bytes.clone())
    }

    /// Keeps `bytes` for `key`.
    pub fn put(&self, key: String, bytes: Bytes) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), bytes));
    }
}

/// A JSON response from already-encoded bytes.
pub fn json_bytes(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Whether a run in `phase` is finished (its outputs no longer change).
pub fn finished(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_serve_until_they_expire() {
        let cache = ResponseCache::default();
        assert!(cache.get("a").is_none());
        cache.put("a".into(), Bytes::from_static(b"{}"));
        assert_eq!(cache.get("a").as_deref(), Some(&b"{}"[..]));
        if let Ok(mut entries) = cache.entries.lock() {
            entries.insert("old".into(), (Instant::now() - TTL - Duration::from_millis(1), Bytes::new()));
        }
        assert!(cache.get("old").is_none(), "expired");
    }
}
