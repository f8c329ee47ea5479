//! Resource quantities (`500m`, `1Gi`, `1e3`), enough to compare them and print them in
//! Kubernetes' canonical form, as `k8s.io/apimachinery/pkg/api/resource.Quantity` does.

use std::cmp::Ordering;

/// The suffix family a quantity was written in; the canonical form keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// A parsed quantity, held exactly in billionths (`n`, the smallest unit Kubernetes keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    pub nanos: i128,
    pub format: Format,
}

/// The message Kubernetes gives for a string that is no quantity.
pub const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parses a quantity string or returns [`QUANTITY_FORMAT_ERROR`].
    pub fn parse(s: &str) -> Result<Quantity, &'static str> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(split);
        let (negative, digits) = match num.as_bytes().first() {
            Some(b'-') => (true, &num[1..]),
            Some(b'+') => (false, &num[1..]),
            _ => (false, num),
        };
        if digits.is_empty()
            || digits.contains(['+', '-'])
            || digits.matches('.').count() > 1
            || digits == "."
        {
            return Err(QUANTITY_FORMAT_ERROR);
        }
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        let (format, mult_num, mult_den): (Format, i128, i128) = match suffix {
            "" => (Format::DecimalSi, 1, 1),
            "n" => (Format::DecimalSi, 1, NANO),
            "u" => (Format::DecimalSi, 1, 1_000_000),
            "m" => (Format::DecimalSi, 1, 1_000),
            "k" => (Format::DecimalSi, 1_000, 1),
            "M" => (Format::DecimalSi, 1_000_000, 1),
            "G" => (Format::DecimalSi, 1_000_000_000, 1),
            "T" => (Format::DecimalSi, 1_000_000_000_000, 1),
            "P" => (Format::DecimalSi, 1_000_000_000_000_000, 1),
            "E" => (Format::DecimalSi, 1_000_000_000_000_000_000, 1),
            "Ki" => (Format::BinarySi, 1 << 10, 1),
            "Mi" => (Format::BinarySi, 1 << 20, 1),
            "Gi" => (Format::BinarySi, 1 << 30, 1),
            "Ti" => (Format::BinarySi, 1 << 40, 1),
            "Pi" => (Format::BinarySi, 1 << 50, 1),
            "Ei" => (Format::BinarySi, 1 << 60, 1),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| QUANTITY_FORMAT_ERROR)?;
                if !(-9..=18).contains(&exp) {
                    return Err(QUANTITY_FORMAT_ERROR);
                }
                if exp >= 0 {
                    (Format::DecimalExponent, 10i128.pow(exp as u32), 1)
                } else {
                    (Format::DecimalExponent, 1, 10i128.pow((-exp) as u32))
                }
            }
            _ => return Err(QUANTITY_FORMAT_ERROR),
        };
        // value = int.frac * mult_num / mult_den, in nanos, rounded up like Kubernetes.
        let frac_digits = frac_part.len().min(30) as u32;
        let mantissa: i128 = format!("{int_part}{}", &frac_part[..frac_digits as usize])
            .trim_start_matches('0')
            .parse::<i128>()
            .or_else(|e| {
                if int_part.trim_start_matches('0').is_empty()
                    && frac_part.trim_start_matches('0').is_empty()
                {
                    Ok(0)
                } else {
                    Err(e)
                }
            })
            .map_err(|_| QUANTITY_FORMAT_ERROR)?;
        let den = 10i128
            .checked_pow(frac_digits)
            .ok_or(QUANTITY_FORMAT_ERROR)?
            * mult_den;
        let num = mantissa
            .checked_mul(mult_num)
            .and_then(|v| v.checked_mul(NANO))
            .ok_or(QUANTITY_FORMAT_ERROR)?;
        let mut nanos = num / den;
        if num % den != 0 {
            nanos += 1;
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// The value in thousandths of its unit, rounded up as `Quantity.MilliValue()` rounds
    /// (`0.5m` is `1m`): millicores for `cpu`.
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.nanos, NANO / 1_000)
    }

    /// The value in whole units, rounded up as `Quantity.Value()` rounds (half a byte is a
    /// byte): bytes for `memory`, counts for everything but `cpu`.
    pub fn value(&self) -> i128 {
        ceil_div(self.nanos, NANO)
    }

    /// The canonical form Kubernetes prints (`0.5` → `500m`, `1024Mi` → `1Gi`, `1000` → `1k`).
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        if self.format == Format::BinarySi && abs % NANO == 0 && abs / NANO >= 1024 {
            let units = abs / NANO;
            for (shift, suffix) in [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ] {
                if units % (1i128 << shift) == 0 {
                    return format!("{sign}{}{suffix}", units >> shift);
                }
            }
            return format!("{sign}{units}");
        }
        // Largest power of 1000 that divides the value exactly.
        let decimal = [
            (18, "E"),
            (15, "P"),
            (12, "T"),
            (9, "G"),
            (6, "M"),
            (3, "k"),
            (0, ""),
            (-3, "m"),
            (-6, "u"),
            (-9, "n"),
        ];
        for (exp, suffix) in decimal {
            let unit = 10i128.pow((exp + 9) as u32);
            if abs % unit == 0 {
                let v = abs / unit;
                return if self.format == Format::DecimalExponent {
                    if exp == 0 {
                        format!("{sign}{v}")
                    } else {
                        format!("{sign}{v}e{exp}")
                    }
                } else {
                    format!("{sign}{v}{suffix}")
                };
            }
        }
        format!("{sign}{abs}n")
    }
}

/// `n / d` rounded toward positive infinity (`d > 0`).
pub fn ceil_div(n: i128, d: i128) -> i128 {
    n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0)
}

/// The milli-value of a quantity string, `None` when it is no quantity.
pub fn parse_milli(s: &str) -> Option<i128> {
    Quantity::parse(s).ok().map(|q| q.milli_value())
}

/// The whole-unit value of a quantity string, `None` when it is no quantity.
pub fn parse_value(s: &str) -> Option<i128> {
    Quantity::parse(s).ok().map(|q| q.value())
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.nanos.cmp(&other.nanos))
    }
}

/// Reads a quantity from JSON, where it may be a string or a number.
pub fn from_json(v: &serde_json::Value) -> Option<Result<Quantity, &'static str>> {
    match v {
        serde_json::Value::String(s) => Some(Quantity::parse(s)),
        serde_json::Value::Number(n) => Some(Quantity::parse(&n.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        Quantity::parse(s).unwrap().canonical()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(c("0.5"), "500m");
        assert_eq!(c("1024Mi"), "1Gi");
        assert_eq!(c("1000"), "1k");
        assert_eq!(c("1500m"), "1500m");
        assert_eq!(c("100Mi"), "100Mi");
        assert_eq!(c("2"), "2");
        assert_eq!(c("1e3"), "1e3");
        assert_eq!(c("0.5Gi"), "512Mi");
    }

    #[test]
    fn comparison_crosses_suffixes() {
        assert!(Quantity::parse("1").unwrap() > Quantity::parse("999m").unwrap());
        assert!(Quantity::parse("1Gi").unwrap() > Quantity::parse("1G").unwrap());
        assert!(Quantity::parse("128Mi").unwrap() < Quantity::parse("0.5Gi").unwrap());
    }

    #[test]
    fn values_round_up_as_kubernetes_does() {
        let m = |s: &str| parse_milli(s).unwrap();
        let v = |s: &str| parse_value(s).unwrap();
        assert_eq!(m("1"), 1000);
        assert_eq!(m("250m"), 250);
        assert_eq!(m("0.5"), 500);
        assert_eq!(m(".5"), 500);
        assert_eq!(m("1.5m"), 2);
        assert_eq!(m("100n"), 1);
        assert_eq!(m("2e3"), 2_000_000);
        assert_eq!(m("1E-3"), 1);
        assert_eq!(m("-1"), -1000);
        assert_eq!(v("1.5Gi"), 1536 << 20);
        assert_eq!(v("1.5Ki"), 1536);
        assert_eq!(v("129e6"), 129_000_000);
        assert_eq!(v("1G"), 1_000_000_000);
        assert_eq!(v("0.1"), 1);
        assert_eq!(v("1500m"), 2);
        // Past f64's 53 bits: exact, as Kubernetes keeps it.
        assert_eq!(v("9007199254740993"), 9_007_199_254_740_993);
        assert_eq!(v("8Ei"), 8 << 60);
        assert_eq!(parse_milli("1Qi"), None);
        assert_eq!(parse_value(""), None);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1x", "1..2", "--1", "Mi"] {
            assert_eq!(Quantity::parse(bad), Err(QUANTITY_FORMAT_ERROR), "{bad}");
        }
    }
}
