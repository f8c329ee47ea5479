//! Resource quantities (`500m`, `1.5Gi`, `2e3`) as integers, and the sums of them the
//! scheduler keeps per pod and per node.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity in thousandths of its unit, rounded up (Kubernetes rounds requests up too:
/// `0.5m` of cpu is `1m`). `None` when the string is not a quantity.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    // Digits beyond these cannot change a request that fits in an i64.
    if whole.len() + fraction.len() > 30 {
        return None;
    }
    let mut mantissa: i128 = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa * 10 + i128::from(d - b'0');
    }
    let (binary_shift, decimal_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            (0, exp.parse::<i32>().ok().filter(|e| e.abs() <= 40)?)
        }
    };
    let value = mantissa.saturating_mul(1i128 << binary_shift);
    let exp10 = decimal_exp + 3 - fraction.len() as i32;
    let milli = if exp10 >= 0 {
        value.saturating_mul(10i128.saturating_pow(exp10 as u32))
    } else {
        let div = 10i128.checked_pow((-exp10) as u32)?;
        (value + div - 1) / div
    };
    Some(if negative { -milli } else { milli })
}

/// Resource amounts by name in the units the scheduler compares: millicores for `cpu`,
/// whole units (bytes, devices) for everything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(pub BTreeMap<String, i64>);

/// The amount of one resource in the scheduler's units.
pub fn amount(name: &str, q: &Quantity) -> i64 {
    let milli = parse_milli(&q.0).unwrap_or(0);
    let units = if name == "cpu" {
        milli
    } else {
        // Round up: half a byte of memory is a byte.
        (milli + 999).div_euclid(1000)
    };
    units.clamp(0, i64::MAX as i128) as i64
}

impl Resources {
    pub fn from_map(map: Option<&BTreeMap<String, Quantity>>) -> Resources {
        Resources(
            map.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), amount(k, v)))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Each resource at the larger of the two amounts.
    pub fn max(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            let e = self.0.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_quantity_forms() {
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("250m"), Some(250));
        assert_eq!(parse_milli("0.5"), Some(500));
        assert_eq!(parse_milli(".5"), Some(500));
        assert_eq!(parse_milli("1.5Gi"), Some(1536 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("128Mi"), Some(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("1k"), Some(1_000_000));
        assert_eq!(parse_milli("2e3"), Some(2_000_000));
        assert_eq!(parse_milli("1E-3"), Some(1));
        assert_eq!(parse_milli("100n"), Some(1), "rounded up to a thousandth");
        assert_eq!(parse_milli("-1"), Some(-1000));
        assert_eq!(parse_milli(""), None);
        assert_eq!(parse_milli("1Qi"), None);
        assert_eq!(parse_milli("1..2"), None);
    }

    #[test]
    fn amounts_are_millicores_for_cpu_and_units_otherwise() {
        assert_eq!(amount("cpu", &Quantity("1500m".into())), 1500);
        assert_eq!(amount("memory", &Quantity("1Ki".into())), 1024);
        assert_eq!(amount("memory", &Quantity("1500m".into())), 2);
        assert_eq!(amount("pods", &Quantity("110".into())), 110);
    }
}
