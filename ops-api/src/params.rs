//! Query parameters, checked one by one so that an error names the parameter at fault (a typed
//! query struct would only say that the query string is wrong), and unknown parameters are
//! refused rather than ignored (a typo in a filter must not silently return everything).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::{ApiError, FieldError};

/// Largest page.
pub const MAX_LIMIT: u32 = 1000;

/// The query string of a request.
pub struct Params {
    pairs: Vec<(String, String)>,
    errors: Vec<FieldError>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(parts.uri.query().unwrap_or("")))
    }
}

impl Params {
    /// Parses a query string.
    pub fn parse(query: &str) -> Self {
        let mut params = Self { pairs: Vec::new(), errors: Vec::new() };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if params.pairs.iter().any(|(k, _)| *k == key) {
                params.error(&key, "given more than once");
            } else {
                params.pairs.push((key.into_owned(), value.into_owned()));
            }
        }
        params
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.to_owned(), message: message.into() });
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(k, _)| k == name)?;
        Some(self.pairs.remove(at).1)
    }

    /// A text parameter; an empty one counts as absent.
    pub fn text(&mut self, name: &str, max_len: usize) -> Option<String> {
        let value = self.take(name).filter(|v| !v.is_empty())?;
        if value.len() > max_len {
            self.error(name, format!("at most {max_len} characters"));
            return None;
        }
        Some(value)
    }

    /// A whole number in `min..=max`, `default` when absent.
    pub fn number(&mut self, name: &str, default: u32, min: u32, max: u32) -> u32 {
        let Some(text) = self.take(name) else { return default };
        match text.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.error(name, format!("must be a whole number from {min} to {max}, not {text:?}"));
                default
            }
        }
    }

    /// A time in Unix milliseconds.
    pub fn time(&mut self, name: &str) -> Option<i64> {
        let text = self.take(name).filter(|v| !v.is_empty())?;
        match text.parse::<i64>() {
            Ok(ms) if (kuant_store::MIN_TIME_MS..=kuant_store::MAX_TIME_MS).contains(&ms) => Some(ms),
            _ => {
                self.error(name, format!("must be a time in Unix milliseconds, not {text:?}"));
                None
            }
        }
    }

    /// A required text parameter.
    pub fn required(&mut self, name: &str, max_len: usize) -> Option<String> {
        let value = self.text(name, max_len);
        if value.is_none() && !self.errors.iter().any(|e| e.field == name) {
            self.error(name, "required");
        }
        value
    }

    /// `limit` (1..=[`MAX_LIMIT`], `default` when absent).
    pub fn limit(&mut self, default: u32) -> u32 {
        self.number("limit", default, 1, MAX_LIMIT)
    }

    /// A one-of parameter.
    pub fn choice(&mut self, name: &str, allowed: &[&'static str]) -> Option<&'static str> {
        let value = self.take(name).filter(|v| !v.is_empty())?;
        match allowed.iter().find(|a| **a == value) {
            Some(a) => Some(a),
            None => {
                self.error(name, format!("must be one of {}, not {value:?}", allowed.join(", ")));
                None
            }
        }
    }

    /// `cursor`, decoded.
    pub fn cursor(&mut self) -> Option<(i64, String)> {
        let text = self.take("cursor").filter(|v| !v.is_empty())?;
        match decode_cursor(&text) {
            Some(c) => Some(c),
            None => {
                self.error("cursor", "not a cursor this API returned");
                None
            }
        }
    }

    /// Ends checking: the errors found, with one for each parameter nobody asked for.
    pub fn finish(mut self) -> Result<(), ApiError> {
        for (key, _) in std::mem::take(&mut self.pairs) {
            self.error(&key, "unknown parameter");
        }
        if self.errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(self.errors)) }
    }
}

/// An opaque cursor for a `(time, id)` position.
pub fn encode_cursor(at_ms: i64, id: &str) -> String {
    hex::encode(format!("{at_ms}|{id}"))
}

fn decode_cursor(text: &str) -> Option<(i64, String)> {
    let bytes = hex::decode(text).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ms, id) = text.split_once('|')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_parameter_is_named_and_unknown_ones_are_refused() {
        let mut p = Params::parse("limit=0&phase=Running&bogus=1&cursor=zz&limit2=");
        assert_eq!(p.limit(50), 50);
        assert_eq!(p.choice("phase", &["Succeeded", "Failed"]), None);
        assert_eq!(p.cursor(), None);
        let err = p.finish().expect_err("errors");
        let fields: Vec<&str> = err.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["limit", "phase", "cursor", "bogus", "limit2"]);
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);

        let cursor = encode_cursor(1_700_000_000_123, "ns/bt|1");
        let mut p = Params::parse(&format!("cursor={cursor}&limit=10"));
        assert_eq!(p.cursor(), Some((1_700_000_000_123, "ns/bt|1".into())));
        assert_eq!(p.limit(50), 10);
        assert!(p.finish().is_ok());
        assert!(Params::parse("limit=1&limit=2").finish().is_err(), "a repeated parameter is an error");
    }
}
