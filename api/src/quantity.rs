//! Kubernetes resource quantities ("128Mi", "1024M", "500m", "1e3"), parsed exactly.
//!
//! The wire types keep quantities as text so they round-trip; this module turns them into
//! numbers when a rule or the domain builder needs one. Arithmetic is exact (integers only) and
//! rounds up, as `resource.Quantity.Value()` does, so "1.5" CPUs is 2 and "0.5Ki" is 512 bytes.

use std::fmt;

/// A parsed quantity: `sign · mantissa / 10^frac_digits · suffix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    frac_digits: u32,
    suffix: Suffix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suffix {
    /// A power of 1024 (Ki = 1, Mi = 2, …).
    Binary(u32),
    /// A power of ten (m = -3, k = 3, e5 = 5, …).
    Decimal(i32),
}

/// Why a quantity did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Syntax,
    #[error("quantity has too many digits")]
    TooLong,
}

/// The longest quantity text accepted; anything longer is hostile or a mistake.
const MAX_LEN: usize = 40;

impl Quantity {
    /// Parses a quantity in Kubernetes' syntax.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        if text.len() > MAX_LEN {
            return Err(QuantityError::TooLong);
        }
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(QuantityError::Syntax);
        }
        let mut mantissa: u128 = 0;
        for digit in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(digit - b'0')))
                .ok_or(QuantityError::TooLong)?;
        }
        let frac_digits = u32::try_from(frac_part.len()).map_err(|_| QuantityError::TooLong)?;
        Ok(Quantity {
            negative,
            mantissa,
            frac_digits,
            suffix: parse_suffix(suffix)?,
        })
    }

    /// True for quantities below zero (zero itself is not negative).
    pub fn is_negative(&self) -> bool {
        self.negative && self.mantissa != 0
    }

    /// The value times `10^scale`, rounded up (away from zero for positive values); `None` when
    /// it does not fit in an `i128`.
    fn scaled_ceil(&self, scale: i32) -> Option<i128> {
        // value·10^scale = mantissa · mult · 10^(scale + dec_exp - frac_digits)
        let (mult, dec_exp) = match self.suffix {
            Suffix::Binary(p) => (1024u128.checked_pow(p)?, 0i32),
            Suffix::Decimal(e) => (1, e),
        };
        let numerator = self.mantissa.checked_mul(mult)?;
        let exp = scale
            .checked_add(dec_exp)?
            .checked_sub(i32::try_from(self.frac_digits).ok()?)?;
        let magnitude = if exp >= 0 {
            numerator.checked_mul(10u128.checked_pow(u32::try_from(exp).ok()?)?)?
        } else {
            let divisor = 10u128.checked_pow(exp.unsigned_abs())?;
            numerator / divisor + u128::from(numerator % divisor != 0)
        };
        let magnitude = i128::try_from(magnitude).ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }

    /// The value in whole units (bytes for memory), rounded up; `None` if negative or too large.
    pub fn to_units(&self) -> Option<u64> {
        if self.is_negative() {
            return None;
        }
        u64::try_from(self.scaled_ceil(0)?).ok()
    }

    /// The value in thousandths (millicores for CPU), rounded up; `None` if negative or too large.
    pub fn to_millis(&self) -> Option<u64> {
        if self.is_negative() {
            return None;
        }
        u64::try_from(self.scaled_ceil(3)?).ok()
    }
}

fn parse_suffix(suffix: &str) -> Result<Suffix, QuantityError> {
    Ok(match suffix {
        "" => Suffix::Decimal(0),
        "Ki" => Suffix::Binary(1),
        "Mi" => Suffix::Binary(2),
        "Gi" => Suffix::Binary(3),
        "Ti" => Suffix::Binary(4),
        "Pi" => Suffix::Binary(5),
        "Ei" => Suffix::Binary(6),
        "n" => Suffix::Decimal(-9),
        "u" => Suffix::Decimal(-6),
        "m" => Suffix::Decimal(-3),
        "k" => Suffix::Decimal(3),
        "M" => Suffix::Decimal(6),
        "G" => Suffix::Decimal(9),
        "T" => Suffix::Decimal(12),
        "P" => Suffix::Decimal(15),
        "E" => Suffix::Decimal(18),
        other => {
            let exponent = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or(QuantityError::Syntax)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Syntax);
            }
            Suffix::Decimal(exponent.parse().map_err(|_| QuantityError::TooLong)?)
        }
    })
}

/// Formats a byte count the way Kubernetes prints binary quantities: the largest exact
/// binary suffix (`128Mi`, `1Gi`, `1536Ki`), or plain bytes.
pub fn format_bytes(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
    for (i, suffix) in SUFFIXES.iter().enumerate() {
        let unit = 1u64 << (10 * (6 - i));
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{}", bytes / unit, suffix);
        }
    }
    bytes.to_string()
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_units() {
            Some(bytes) => write!(f, "{bytes}"),
            None => write!(f, "<out of range>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_like_kubernetes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("128Mi", Some(128 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1024M", Some(1_024_000_000)),
            ("0.5Ki", Some(512)),
            ("1.5", Some(2)),
            ("500m", Some(1)),
            ("1e3", Some(1000)),
            ("1E3", Some(1000)),
            ("2E", Some(2_000_000_000_000_000_000)),
            ("+7", Some(7)),
            ("0", Some(0)),
            ("-1", None),
            ("16Ei", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                Quantity::parse(text).map(|q| q.to_units()),
                Ok(*want),
                "{text}"
            );
        }
    }

    #[test]
    fn millis() {
        for (text, want) in [
            ("500m", 500),
            ("2", 2000),
            ("0.1", 100),
            ("1u", 1),
            ("1.5k", 1_500_000),
        ] {
            assert_eq!(
                Quantity::parse(text).ok().and_then(|q| q.to_millis()),
                Some(want),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        for text in [
            "", "Mi", "1..2", "1.2.3", "12Q", "1Mii", "1e", "1e+", "abc", ".", "1 Gi", "--1",
        ] {
            assert!(Quantity::parse(text).is_err(), "{text:?} should not parse");
        }
        assert_eq!(
            Quantity::parse(&"9".repeat(41)),
            Err(QuantityError::TooLong)
        );
        assert_eq!(
            Quantity::parse(&"9".repeat(40)),
            Err(QuantityError::TooLong)
        );
    }

    #[test]
    fn formats_binary_suffixes() {
        assert_eq!(format_bytes(128 << 20), "128Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1536 << 10), "1536Ki");
        assert_eq!(format_bytes(1_024_000_000), "1000000Ki");
        assert_eq!(format_bytes(1000), "1000");
    }
}
