//! Exact prices: fixed-point integers with 8 decimal places (the finest tick any major exchange
//! quotes). Prices are parsed from decimal text without passing through a float, so indicator sums
//! over them are exact and a crossover at exactly zero is decided exactly.

use std::fmt;

use rust_decimal::Decimal;

/// Decimal places of a [`Price`].
pub const PRICE_DECIMALS: u32 = 8;
/// Units of a [`Price`] per 1.0.
pub const PRICE_SCALE: i64 = 100_000_000;

/// A price in units of 1e-8 of the quote asset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

impl Price {
    /// The price in fixed-point units.
    pub fn units(self) -> i64 {
        self.0
    }

    /// The price as a float, for indicator math.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / PRICE_SCALE as f64
    }

    /// The price as an exact decimal, for accounting, at its natural scale (2505.56, not
    /// 2505.56000000): products with quantities then stay within the decimal's 96-bit mantissa
    /// and never need rescaling.
    pub fn to_decimal(self) -> Decimal {
        let (mut units, mut scale) = (self.0, PRICE_DECIMALS);
        while scale > 0 && units % 10 == 0 {
            units /= 10;
            scale -= 1;
        }
        Decimal::new(units, scale)
    }

    /// The nearest price to a float (synthetic data); `None` for NaN, infinities and overflow.
    pub fn from_f64(x: f64) -> Option<Self> {
        let units = (x * PRICE_SCALE as f64).round();
        (units.is_finite() && units.abs() < i64::MAX as f64).then_some(Self(units as i64))
    }

    /// Parses decimal text such as `2505.56`, `1e3` or `0.00001234` exactly. More than 8 decimal
    /// places are refused rather than silently rounded.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty price".to_owned());
        }
        let lower = t.to_ascii_lowercase();
        if lower.contains("nan") || lower.contains("inf") {
            return Err(format!("{t:?} is not a number"));
        }
        let (mantissa, exponent) = match lower.split_once('e') {
            Some((m, e)) => (m, e.parse::<i32>().map_err(|_| format!("{t:?} is not a number"))?),
            None => (lower.as_str(), 0),
        };
        let (negative, digits) = match mantissa.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if int_part.is_empty() && frac_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("{t:?} is not a number"));
        }
        // Trailing zeros of the fraction carry no value; without them the digits stay short.
        let frac_part = frac_part.trim_end_matches('0');
        if int_part.bytes().chain(frac_part.bytes()).all(|b| b == b'0') {
            return Ok(Self(0));
        }
        // Shift the decimal point by the exponent, then require at most 8 decimals.
        let all_digits = format!("{int_part}{frac_part}");
        let point = int_part.len() as i64 + i64::from(exponent);
        let decimals = all_digits.len() as i64 - point;
        let significant = all_digits.trim_end_matches('0');
        let decimals_needed = significant.len() as i64 - point;
        if decimals_needed > i64::from(PRICE_DECIMALS) {
            return Err(format!("{t:?} has more than {PRICE_DECIMALS} decimal places"));
        }
        let mut value: i128 = 0;
        for b in all_digits.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(b - b'0')))
                .ok_or_else(too_large(t))?;
        }
        let shift = i64::from(PRICE_DECIMALS) - decimals;
        if shift >= 0 {
            let factor = 10i128.checked_pow(shift as u32).ok_or_else(too_large(t))?;
            value = value.checked_mul(factor).ok_or_else(too_large(t))?;
        } else {
            // Only trailing zeros are dropped here: decimals_needed <= 8 was checked above.
            let factor =
                u32::try_from(-shift).ok().and_then(|e| 10i128.checked_pow(e)).ok_or_else(too_large(t))?;
            value /= factor;
        }
        let value = i64::try_from(value).map_err(|_| too_large(t)())?;
        Ok(Self(if negative { -value } else { value }))
    }
}

fn too_large(t: &str) -> impl Fn() -> String + '_ {
    move || format!("{t:?} is too large")
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_decimal().normalize(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_text_exactly() {
        assert_eq!(Price::parse("2505.56"), Ok(Price(250_556_000_000)));
        assert_eq!(Price::parse("0.00001234"), Ok(Price(1234)));
        assert_eq!(Price::parse("17"), Ok(Price(1_700_000_000)));
        assert_eq!(Price::parse("1.5e3"), Ok(Price(150_000_000_000)));
        assert_eq!(Price::parse("2505.560000000000"), Ok(Price(250_556_000_000)));
        assert_eq!(Price::parse("-3.25"), Ok(Price(-325_000_000)));
    }

    #[test]
    fn refuses_what_is_not_an_exact_price() {
        for bad in ["", "abc", "NaN", "inf", "1.2.3", "0.000000001", "1e-9", "99999999999999999999", "."] {
            assert!(Price::parse(bad).is_err(), "{bad:?} must be refused");
        }
        // Long runs of zeros never panic: they are zero, or refused.
        assert_eq!(Price::parse(&format!("0.{}", "0".repeat(300))), Ok(Price(0)));
        assert_eq!(Price::parse(&format!("{}e-200", "0".repeat(300))), Ok(Price(0)));
        assert_eq!(Price::parse(&format!("1.{}", "0".repeat(300))), Ok(Price(100_000_000)));
        assert!(Price::parse(&format!("1{}e-300", "0".repeat(300))).is_err());
    }

    #[test]
    fn converts_to_decimal_and_float() {
        let p = Price::parse("2505.56").expect("valid");
        assert_eq!(p.to_decimal().to_string(), "2505.56");
        assert_eq!(Price(1_700_000_000).to_decimal().to_string(), "17");
        assert_eq!(Price(1).to_decimal().to_string(), "0.00000001");
        assert_eq!(p.to_string(), "2505.56");
        assert!((p.to_f64() - 2505.56).abs() < 1e-9);
        assert_eq!(Price::from_f64(2505.56), Some(p));
        assert_eq!(Price::from_f64(f64::NAN), None);
    }
}
