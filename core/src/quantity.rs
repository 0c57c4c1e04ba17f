//! Kubernetes resource quantities (`k8s.io/apimachinery/pkg/api/resource`).
//!
//! A quantity is held exactly as a signed count of nano-units, which is the
//! finest precision Kubernetes keeps: finer inputs are rounded away from zero
//! to the next nano-unit exactly as `ParseQuantity` does, so "you asked for
//! some, you get some". Accepted syntax matches Kubernetes, including its
//! lenient corners (`1.`, `.5`, and a bare sign meaning zero).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a string is not a quantity. Each variant names the input and carries
/// Kubernetes' own error text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the shape number + suffix.
    #[error("invalid quantity {input:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format {
        /// The rejected input.
        input: String,
    },
    /// The shape is right but the suffix is not a known unit or exponent.
    #[error("invalid quantity {input:?}: unable to parse quantity's suffix")]
    Suffix {
        /// The rejected input.
        input: String,
    },
}

/// An exact resource amount such as `500m`, `64Mi` or `1e3`. Equality and
/// ordering compare amounts, so `1.5Gi == 1536Mi`; `Display` writes the text
/// it was parsed from. Amounts beyond about ±1.7e29 saturate.
#[derive(Debug, Clone)]
pub struct Quantity {
    nanos: i128,
    original: String,
}

enum Suffix {
    /// Multiply by 10^exponent.
    Decimal(i64),
    /// Multiply by 2^exponent.
    Binary(u32),
}

impl Quantity {
    /// Parses Kubernetes quantity syntax: an optionally signed decimal number
    /// followed by a binary SI suffix (Ki Mi Gi Ti Pi Ei), a decimal SI suffix
    /// (n u m k M G T P E, or none) or a decimal exponent (`e3`, `E-2`).
    /// Never panics; huge magnitudes saturate instead of overflowing.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let format_error = || QuantityError::Format { input: s.to_string() };
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return Err(format_error());
        }

        // Hand-rolled scanner with the same acceptance as Kubernetes'
        // parseQuantityString; all split points are at ASCII bytes.
        let mut pos = 0;
        let negative = bytes[0] == b'-';
        if matches!(bytes[0], b'-' | b'+') {
            pos += 1;
        }
        while pos < bytes.len() && bytes[pos] == b'0' {
            pos += 1;
        }
        let scan_digits = |mut i: usize| {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        let int_start = pos;
        pos = scan_digits(pos);
        let int_digits = &s[int_start..pos];
        let mut frac_digits = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            let frac_start = pos + 1;
            pos = scan_digits(frac_start);
            frac_digits = &s[frac_start..pos];
        }
        let suffix_start = pos;
        while pos < bytes.len() && b"eEinumkKMGTP".contains(&bytes[pos]) {
            pos += 1;
        }
        if pos < bytes.len() && matches!(bytes[pos], b'-' | b'+') {
            pos += 1;
        }
        pos = scan_digits(pos);
        if pos != bytes.len() {
            return Err(format_error());
        }

        let suffix =
            interpret_suffix(&s[suffix_start..]).ok_or_else(|| QuantityError::Suffix { input: s.to_string() })?;
        let magnitude = match suffix {
            Suffix::Decimal(exponent) => decimal_nanos(int_digits, frac_digits, exponent),
            Suffix::Binary(exponent) => binary_nanos(int_digits, frac_digits, exponent),
        };
        let magnitude = i128::try_from(magnitude).unwrap_or(i128::MAX);
        Ok(Quantity {
            nanos: if negative { -magnitude } else { magnitude },
            original: s.to_string(),
        })
    }

    /// The amount in thousandths, rounded away from zero to a whole number,
    /// as Kubernetes' `MilliValue` (`100m` -> 100, `1.5` -> 1500, `0.1m` -> 1).
    /// Saturates at the `i64` bounds.
    pub fn milli_value(&self) -> i64 {
        scaled(self.nanos, 1_000_000)
    }

    /// The amount rounded away from zero to a whole number, as Kubernetes'
    /// `Value` (`64Mi` -> 67108864, `500m` -> 1). Saturates at the `i64`
    /// bounds.
    pub fn value(&self) -> i64 {
        scaled(self.nanos, 1_000_000_000)
    }

    /// Whether the amount is below zero (`-0` is not).
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether the amount is exactly zero, whatever suffix was written.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

/// A byte count as Kubernetes writes it in canonical binary form: the
/// largest binary suffix that divides it exactly (`1073741824` -> `1Gi`,
/// `1536` -> `1536`, as `1.5Ki` is not canonical).
pub fn format_bytes(n: i64) -> String {
    for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        let unit = 1i64 << shift;
        if n != 0 && n % unit == 0 {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

impl FromStr for Quantity {
    type Err = QuantityError;

    /// Same as [`Quantity::parse`].
    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    /// Writes the string the quantity was parsed from, unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl PartialEq for Quantity {
    /// Compares amounts, not spellings.
    fn eq(&self, other: &Quantity) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    /// Orders by amount.
    fn partial_cmp(&self, other: &Quantity) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    /// Orders by amount.
    fn cmp(&self, other: &Quantity) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

fn interpret_suffix(suffix: &str) -> Option<Suffix> {
    Some(match suffix {
        "n" => Suffix::Decimal(-9),
        "u" => Suffix::Decimal(-6),
        "m" => Suffix::Decimal(-3),
        "" => Suffix::Decimal(0),
        "k" => Suffix::Decimal(3),
        "M" => Suffix::Decimal(6),
        "G" => Suffix::Decimal(9),
        "T" => Suffix::Decimal(12),
        "P" => Suffix::Decimal(15),
        "E" => Suffix::Decimal(18),
        "Ki" => Suffix::Binary(10),
        "Mi" => Suffix::Binary(20),
        "Gi" => Suffix::Binary(30),
        "Ti" => Suffix::Binary(40),
        "Pi" => Suffix::Binary(50),
        "Ei" => Suffix::Binary(60),
        // Kubernetes parses the exponent as an int64 too, so out-of-range
        // exponents are suffix errors there as well.
        _ if suffix.len() > 1 && suffix.starts_with(['e', 'E']) => Suffix::Decimal(suffix[1..].parse().ok()?),
        _ => return None,
    })
}

/// Largest number of decimal digits that can still fit in a `u128`.
const U128_DIGITS: usize = 39;

/// Parses ASCII digits, saturating at `u128::MAX`.
fn parse_digits(digits: &str) -> u128 {
    let digits = digits.trim_start_matches('0');
    if digits.len() > U128_DIGITS {
        return u128::MAX;
    }
    digits
        .bytes()
        .try_fold(0u128, |acc, d| acc.checked_mul(10)?.checked_add(u128::from(d - b'0')))
        .unwrap_or(u128::MAX)
}

/// `int.frac * 10^exponent` in nano-units, rounded away from zero. Works on
/// the digit string so no exponent, however large, costs more than the
/// input's length.
fn decimal_nanos(int_digits: &str, frac_digits: &str, exponent: i64) -> u128 {
    let digits = format!("{int_digits}{frac_digits}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return 0;
    }
    // The value is digits * 10^shift nano-units.
    let shift = exponent.saturating_sub(frac_digits.len() as i64).saturating_add(9);
    if shift >= 0 {
        if shift as u64 > U128_DIGITS as u64 {
            return u128::MAX;
        }
        return 10u128
            .checked_pow(shift as u32)
            .and_then(|p| parse_digits(digits).checked_mul(p))
            .unwrap_or(u128::MAX);
    }
    let dropped = shift.unsigned_abs();
    if dropped >= digits.len() as u64 {
        // Non-zero but below one nano-unit: rounds up to one.
        return 1;
    }
    let (kept, rest) = digits.split_at(digits.len() - dropped as usize);
    let round_up = rest.bytes().any(|d| d != b'0');
    parse_digits(kept).saturating_add(u128::from(round_up))
}

/// `int.frac * 2^exponent` in nano-units, rounded away from zero.
fn binary_nanos(int_digits: &str, frac_digits: &str, exponent: u32) -> u128 {
    let factor = 1u128 << exponent;
    // Split at nano precision: `whole` counts nano-units, `below` is the
    // fraction of a nano-unit that still has to be scaled by 2^exponent.
    let (whole, below) = if frac_digits.len() <= 9 {
        let padded = format!("{int_digits}{frac_digits:0<9}");
        (parse_digits(&padded), "")
    } else {
        let (nano, below) = frac_digits.split_at(9);
        (parse_digits(&format!("{int_digits}{nano}")), below)
    };
    let result = whole.saturating_mul(factor);

    // Double the decimal fraction `exponent` times, collecting what carries
    // into whole nano-units; exact, with cost bounded by 60 * input length.
    let mut fraction: Vec<u8> = below.trim_end_matches('0').bytes().map(|d| d - b'0').collect();
    if fraction.is_empty() {
        return result;
    }
    let mut carried: u128 = 0;
    for _ in 0..exponent {
        let mut carry = 0;
        for digit in fraction.iter_mut().rev() {
            let doubled = *digit * 2 + carry;
            *digit = doubled % 10;
            carry = doubled / 10;
        }
        carried = carried * 2 + u128::from(carry);
    }
    let round_up = fraction.iter().any(|&d| d != 0);
    result.saturating_add(carried).saturating_add(u128::from(round_up))
}

/// `nanos / unit`, rounded away from zero, clamped to `i64`.
fn scaled(nanos: i128, unit: i128) -> i64 {
    let quotient = nanos / unit;
    let quotient = match (nanos % unit).cmp(&0) {
        Ordering::Greater => quotient + 1,
        Ordering::Less => quotient - 1,
        Ordering::Equal => quotient,
    };
    i64::try_from(quotient).unwrap_or(if quotient < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_format_with_the_largest_exact_suffix() {
        assert_eq!(super::format_bytes(1 << 30), "1Gi");
        assert_eq!(super::format_bytes(3 << 20), "3Mi");
        assert_eq!(super::format_bytes(1536), "1536");
        assert_eq!(super::format_bytes(0), "0");
        assert_eq!(super::format_bytes(2048), "2Ki");
    }

    use super::*;

    #[test]
    fn parses_values() {
        const MAX: i64 = i64::MAX;
        // (input, value, milli_value)
        let cases: &[(&str, i64, i64)] = &[
            ("0", 0, 0),
            ("-0", 0, 0),
            ("1", 1, 1000),
            ("+1", 1, 1000),
            ("-1", -1, -1000),
            ("1.5", 2, 1500),
            ("-1.5", -2, -1500),
            ("0.1", 1, 100),
            ("500m", 1, 500),
            ("100m", 1, 100),
            ("1500m", 2, 1500),
            ("0.1m", 1, 1),
            ("1u", 1, 1),
            ("1n", 1, 1),
            ("0.1n", 1, 1),
            ("-0.1n", -1, -1),
            ("1Ki", 1024, 1_024_000),
            ("64Mi", 67_108_864, 67_108_864_000),
            ("2Gi", 2_147_483_648, 2_147_483_648_000),
            ("1.5Gi", 1_610_612_736, 1_610_612_736_000),
            ("0.5Ki", 512, 512_000),
            ("1Ti", 1 << 40, (1 << 40) * 1000),
            ("1Pi", 1 << 50, (1 << 50) * 1000),
            ("1Ei", 1 << 60, MAX),
            ("8Ei", MAX, MAX),
            ("-8Ei", i64::MIN, i64::MIN),
            ("1.000000001Ki", 1025, 1_024_001),
            // 1.024e-7 rounds up to 103 nano-units.
            ("0.0000000001Ki", 1, 1),
            ("0.000000000001Ki", 1, 1),
            ("100k", 100_000, 100_000_000),
            ("1M", 1_000_000, 1_000_000_000),
            ("1G", 1_000_000_000, 1_000_000_000_000),
            ("1T", 1_000_000_000_000, 1_000_000_000_000_000),
            ("1P", 1_000_000_000_000_000, 1_000_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000, MAX),
            ("1e3", 1000, 1_000_000),
            ("1E6", 1_000_000, 1_000_000_000),
            ("12e+2", 1200, 1_200_000),
            ("1e-3", 1, 1),
            ("1.5e-3", 1, 2),
            ("1e100", MAX, MAX),
            ("-1e100", i64::MIN, i64::MIN),
            ("1e-100", 1, 1),
            ("0e99999", 0, 0),
            ("9223372036854775807", MAX, MAX),
            ("00012", 12, 12_000),
            (".5", 1, 500),
            ("1.", 1, 1000),
            ("1.G", 1_000_000_000, 1_000_000_000_000),
            (".0001k", 1, 100),
            // Kubernetes reads a bare sign or dot as zero.
            ("-", 0, 0),
            ("+", 0, 0),
            (".", 0, 0),
        ];
        for &(input, value, milli) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!((q.value(), q.milli_value()), (value, milli), "{input:?}");
            assert_eq!(q.to_string(), input);
            assert_eq!(q.is_negative(), value < 0, "{input:?}");
        }
    }

    #[test]
    fn exact_amounts() {
        let q = |s: &str| s.parse::<Quantity>().unwrap();
        assert_eq!(q("64Mi"), q("67108864"));
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1Ki"), q("1.024k"));
        assert_eq!(q("0.1m"), q("100u"));
        assert!(q("1Ki") > q("1k"));
        assert!(q("-1") < q("0"));
        assert!(q("0Mi").is_zero());
        assert!(!q("-0").is_negative());
    }

    #[test]
    fn rejects_garbage() {
        let format = [
            "", " 1", "1 ", "1.1.M", "1+1.0M", "aoeu", "1KiB", "1e3k", "1E3Ki", "1e+-3", "1..5", "1,5", "0.1am",
            "0x10", "1/2", "１", "1\0", "Inf", "NaN", "1e1.5", "1KI",
        ];
        for input in format {
            let err = Quantity::parse(input).unwrap_err();
            assert_eq!(err, QuantityError::Format { input: input.into() }, "{input:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
            assert!(
                msg.contains(
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                ),
                "{msg}"
            );
        }
        let suffix = [
            "0.1mi",
            ".5i",
            "1i",
            "-3.01i",
            "-3.01e-",
            "1K",
            "1e",
            "1e+",
            "1Ee5",
            "1e99999999999999999999",
            "1Mi5",
            "1ki",
            "1-2",
            "++1",
        ];
        for input in suffix {
            let err = Quantity::parse(input).unwrap_err();
            assert_eq!(err, QuantityError::Suffix { input: input.into() }, "{input:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
            assert!(msg.contains("unable to parse quantity's suffix"), "{msg}");
        }
    }
}
