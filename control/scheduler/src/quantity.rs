//! Resource amounts (quantities parsed by `skiff_apimachinery::quantity`, the one parser)
//! and the sums of them the scheduler keeps per pod and per node.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_apimachinery::quantity::Quantity as ApiQuantity;

/// Resource amounts by name in the units the scheduler compares: millicores for `cpu`,
/// whole units (bytes, devices) for everything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(pub BTreeMap<String, i64>);

/// The amount of one resource in the scheduler's units.
pub fn amount(name: &str, q: &Quantity) -> i64 {
    // The API server refused anything that does not parse.
    let units = match ApiQuantity::parse(&q.0) {
        Ok(q) if name == "cpu" => q.milli_value(),
        Ok(q) => q.value(),
        Err(_) => 0,
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
    fn amounts_are_millicores_for_cpu_and_units_otherwise() {
        assert_eq!(amount("cpu", &Quantity("1500m".into())), 1500);
        assert_eq!(amount("memory", &Quantity("1Ki".into())), 1024);
        assert_eq!(amount("memory", &Quantity("1500m".into())), 2);
        assert_eq!(amount("pods", &Quantity("110".into())), 110);
    }
}
