//! YAML request bodies read into JSON with a bound on what aliases may expand to.
//!
//! YAML's anchors and aliases let a few kilobytes name gigabytes ("billion laughs": an
//! anchor of ten aliases of an anchor of ten aliases ...). serde_yaml bounds the number of
//! alias jumps, not what they expand to, so one large anchor repeated a hundred thousand
//! times still builds a value thousands of times the size of the body. Here every node and
//! every byte of every string built counts against a budget: four times the body, and at
//! least a million (as go-yaml, kube-apiserver's, lets small documents be mostly aliases).
//! A document without aliases always fits; one whose aliases expand past the budget is a
//! 400 that says so, before the memory is taken.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// How much a value built from a body of `len` bytes may hold: each node costs one, each
/// string its length. A document without aliases costs at most about twice its size; a
/// small one may repeat an anchor up to a million nodes and bytes in all (some tens of
/// MB of memory at worst).
fn budget_for(len: usize) -> usize {
    len.saturating_mul(4).max(1 << 20)
}

pub fn parse(body: &[u8]) -> ApiResult<Value> {
    let budget = Budget {
        left: Cell::new(budget_for(body.len())),
        exceeded: Cell::new(false),
    };
    let de = serde_yaml::Deserializer::from_slice(body);
    match (ValueSeed(&budget)).deserialize(de) {
        Ok(v) => Ok(v),
        // serde_yaml's own bound on alias jumps may stop a document first: the same
        // cause, said the same way.
        Err(e) if budget.exceeded.get() || e.to_string().contains("repetition limit") => {
            Err(ApiError::bad_request(format!(
                "error converting YAML to JSON: the document's aliases expand to more than {} nodes and bytes; \
             write it without anchors and aliases",
                budget_for(body.len())
            )))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error converting YAML to JSON: {e}"
        ))),
    }
}

struct Budget {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn spend<E: de::Error>(&self, cost: usize) -> Result<(), E> {
        match self.left.get().checked_sub(cost.saturating_add(1)) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("the document expands past its budget"))
            }
        }
    }
}

struct ValueSeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor(self.0))
    }
}

struct ValueVisitor<'b>(&'b Budget);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.0.spend(key.len())?;
            let value = map.next_value_seed(ValueSeed(self.0))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_read_as_serde_yaml_reads_them() {
        let doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {a: b}\ndata:\n  n: \"1\"\n  list: |\n    x\n    y\nx: [1, 2.5, true, null, ~]\n";
        let ours = parse(doc).unwrap();
        let theirs: Value = serde_yaml::from_slice(doc).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn modest_aliases_are_fine() {
        let doc = b"a: &x {k: v}\nb: *x\nc: *x\n";
        let v = parse(doc).unwrap();
        assert_eq!(v["c"]["k"], "v");
    }

    #[test]
    fn billion_laughs_are_refused() {
        let mut doc = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 9].join(",");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse(doc.as_bytes()).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("aliases expand"), "{}", err.message);
    }

    #[test]
    fn an_anchor_used_a_few_times_is_fine() {
        let anchor = format!("{{a: {}}}", "x".repeat(2048));
        let refs = ["*a"; 10].join(",");
        let doc = format!("x: &a {anchor}\ny: [{refs}]\n");
        let v = parse(doc.as_bytes()).unwrap();
        assert_eq!(v["y"].as_array().unwrap().len(), 10);
    }

    #[test]
    fn one_large_anchor_repeated_is_refused() {
        // Fewer alias jumps than serde_yaml's own limit allows, each expanding 64 KiB.
        let big = "x".repeat(64 * 1024);
        let refs = vec!["*big"; 1000].join(",");
        let doc = format!("a: &big \"{big}\"\nb: [{refs}]\n");
        let err = parse(doc.as_bytes()).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{}", err.message);
    }
}
