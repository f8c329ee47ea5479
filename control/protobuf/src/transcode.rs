//! Schema-driven protobuf → JSON.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::Error;
use crate::schema::ROOTS;
use crate::types::{Field, Kind, Message, Unset};
use crate::wire::{Reader, Value as Wire};

/// Bounds recursion on hostile input (nested RawExtensions, self-similar messages).
const MAX_DEPTH: usize = 64;

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// `k8s\0` + runtime.Unknown → JSON object with apiVersion and kind.
pub fn envelope(body: &[u8], depth: usize) -> Result<Value, Error> {
    let rest = body.strip_prefix(crate::MAGIC).ok_or(Error::BadMagic)?;
    let (mut api_version, mut kind) = (String::new(), String::new());
    let (mut raw, mut encoding, mut content_type): (&[u8], _, _) =
        (&[], String::new(), String::new());
    let mut reader = Reader::new(rest);
    while let Some((number, value)) = reader.next_field()? {
        match (number, value) {
            (1, Wire::Len(type_meta)) => {
                let mut tm = Reader::new(type_meta);
                while let Some((n, v)) = tm.next_field()? {
                    match (n, v) {
                        (1, Wire::Len(s)) => api_version = utf8(s)?.to_owned(),
                        (2, Wire::Len(s)) => kind = utf8(s)?.to_owned(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(bytes)) => raw = bytes,
            (3, Wire::Len(s)) => encoding = utf8(s)?.to_owned(),
            (4, Wire::Len(s)) => content_type = utf8(s)?.to_owned(),
            (1..=4, _) => return Err(invalid("runtime.Unknown field has the wrong wire type")),
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(Error::UnsupportedEncoding(encoding));
    }
    let unknown = || Error::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.clone()));
    out.insert("kind".into(), Value::String(kind.clone()));
    if content_type.starts_with("application/json") {
        // An Unknown may carry JSON; pass it through with typeMeta filling any gaps.
        let Value::Object(object) = parse_json(raw)? else {
            return Err(invalid("embedded json is not an object"));
        };
        out.extend(object);
        return Ok(Value::Object(out));
    }
    if !content_type.is_empty() && !content_type.starts_with(crate::CONTENT_TYPE) {
        return Err(Error::UnsupportedEncoding(content_type));
    }
    let root = ROOTS
        .iter()
        .find(|r| r.kind == kind && (r.api_version.is_empty() || r.api_version == api_version))
        .ok_or_else(unknown)?;
    message(root.message, raw, &mut out, depth + 1)?;
    Ok(Value::Object(out))
}

enum Slot {
    One(Value),
    Many(Vec<Value>),
    Entries(Map<String, Value>),
}

/// Decode `bytes` as `msg`, appending its JSON fields to `out` in field-number order.
fn message(
    msg: &'static Message,
    bytes: &[u8],
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(invalid("message nesting too deep"));
    }
    let mut slots: Vec<Option<Slot>> = msg.fields.iter().map(|_| None).collect();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        // Fields this table does not know (newer Kubernetes) are skipped, as Go would.
        let Ok(i) = msg.fields.binary_search_by_key(&number, |f| f.number) else {
            continue;
        };
        let field = &msg.fields[i];
        let slot = &mut slots[i];
        match &field.kind {
            Kind::Map(value_kind) => {
                let Wire::Len(entry) = value else {
                    return Err(mismatch(msg, field));
                };
                let (k, v) = map_entry(msg, field, value_kind, entry, depth)?;
                match slot.get_or_insert_with(|| Slot::Entries(Map::new())) {
                    Slot::Entries(map) => {
                        map.insert(k, v);
                    }
                    _ => unreachable!("map fields only hold entries"),
                }
            }
            Kind::Inline(child) => {
                let Wire::Len(b) = value else {
                    return Err(mismatch(msg, field));
                };
                match slot.get_or_insert_with(|| Slot::Entries(Map::new())) {
                    Slot::Entries(map) => message(child, b, map, depth + 1)?,
                    _ => unreachable!("inline fields only hold entries"),
                }
            }
            kind if field.repeated => {
                let Slot::Many(list) = slot.get_or_insert_with(|| Slot::Many(Vec::new())) else {
                    unreachable!("repeated fields only hold lists")
                };
                match (kind, value) {
                    // Packed scalars, which proto2 parsers must also accept.
                    (Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Double, Wire::Len(b)) => {
                        let mut packed = Reader::new(b);
                        while !packed.is_empty() {
                            let item = match kind {
                                Kind::Double => Wire::Fixed64(packed.fixed64()?),
                                _ => Wire::Varint(packed.varint()?),
                            };
                            list.push(single(msg, field, kind, item, depth)?);
                        }
                    }
                    (_, value) => list.push(single(msg, field, kind, value, depth)?),
                }
            }
            kind => {
                let new = single(msg, field, kind, value, depth)?;
                // A repeated occurrence of a message field merges into the first, per protobuf.
                match (slot.as_mut(), new) {
                    (Some(Slot::One(Value::Object(old))), Value::Object(new)) => old.extend(new),
                    (_, new) => *slot = Some(Slot::One(new)),
                }
            }
        }
    }
    let object_meta = msg.name == "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    for (field, slot) in msg.fields.iter().zip(slots) {
        match slot {
            None => {}
            Some(Slot::Entries(map)) if field.json.is_empty() => out.extend(map),
            Some(Slot::Entries(map)) => {
                out.insert(field.json.into(), Value::Object(map));
            }
            Some(Slot::Many(list)) if !list.is_empty() => {
                out.insert(field.json.into(), Value::Array(list));
            }
            Some(Slot::Many(_)) => {}
            Some(Slot::One(value)) => {
                // Go's encoder writes every non-pointer string, so "" means unset (an
                // `omitempty` field kube would not print); keeping it would defeat defaulting
                // that tests for absence (Secret type, imagePullPolicy, ...).
                let empty = matches!(&value, Value::String(s) if s.is_empty())
                    && matches!(field.kind, Kind::String);
                // Likewise a zero in a non-pointer `omitempty` number or bool (`hostPort: 0`,
                // `stdin: false`): Go wrote it because it cannot tell, kube would not print it.
                let zero = matches!(&value, Value::Bool(false)) || value.as_f64() == Some(0.0);
                let meta_zero = object_meta
                    && value.as_i64() == Some(0)
                    && field.json != "deletionGracePeriodSeconds";
                if empty || (zero && field.unset == Unset::OmitEmpty) || meta_zero {
                    continue;
                }
                out.insert(field.json.into(), value);
            }
        }
    }
    Ok(())
}

fn mismatch(msg: &Message, field: &Field) -> Error {
    invalid(format!("wrong wire type for {}.{}", msg.name, field.json))
}

fn map_entry(
    msg: &'static Message,
    field: &'static Field,
    value_kind: &'static Kind,
    entry: &[u8],
    depth: usize,
) -> Result<(String, Value), Error> {
    let (mut key, mut value) = (String::new(), None);
    let mut reader = Reader::new(entry);
    while let Some((n, v)) = reader.next_field()? {
        match (n, v) {
            (1, Wire::Len(s)) => key = utf8(s)?.to_owned(),
            (1, _) => return Err(mismatch(msg, field)),
            (2, v) => value = Some(single(msg, field, value_kind, v, depth)?),
            _ => {}
        }
    }
    // A missing value is the value type's zero, as Go's decoder leaves it.
    let value = match value {
        Some(v) => v,
        None => match value_kind {
            Kind::String | Kind::Bytes => Value::String(String::new()),
            Kind::Quantity => Value::String("0".into()),
            Kind::Message(_) => Value::Object(Map::new()),
            _ => Value::Null,
        },
    };
    Ok((key, value))
}

/// One non-repeated value of `kind`.
fn single(
    msg: &'static Message,
    field: &'static Field,
    kind: &'static Kind,
    value: Wire,
    depth: usize,
) -> Result<Value, Error> {
    let bad = || mismatch(msg, field);
    Ok(match (kind, value) {
        (Kind::String, Wire::Len(b)) => Value::String(utf8(b)?.to_owned()),
        (Kind::Bytes, Wire::Len(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        // Protobuf truncates int32 varints to their low 32 bits.
        (Kind::Int32, Wire::Varint(v)) => Value::from(v as u32 as i32),
        (Kind::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Kind::Double, Wire::Fixed64(v)) => Number::from_f64(f64::from_bits(v))
            .map(Value::Number)
            .ok_or_else(|| invalid(format!("non-finite number in {}.{}", msg.name, field.json)))?,
        (Kind::Message(child), Wire::Len(b)) => {
            let mut map = Map::new();
            message(child, b, &mut map, depth + 1)?;
            Value::Object(map)
        }
        (Kind::Time | Kind::MicroTime, Wire::Len(b)) => time(b, matches!(kind, Kind::MicroTime))?,
        (Kind::Duration, Wire::Len(b)) => {
            let nanos = scalar_fields(b)?.varint(1).unwrap_or(0);
            Value::String(go_duration(nanos as i64))
        }
        (Kind::Quantity, Wire::Len(b)) => {
            let f = scalar_fields(b)?;
            Value::String(f.string(1)?.unwrap_or_default())
        }
        (Kind::IntOrString, Wire::Len(b)) => {
            let f = scalar_fields(b)?;
            if f.varint(1) == Some(1) {
                Value::String(f.string(3)?.unwrap_or_default())
            } else {
                Value::from(f.varint(2).unwrap_or(0) as u32 as i32)
            }
        }
        (Kind::RawExtension, Wire::Len(b)) => {
            let raw = scalar_fields(b)?.bytes(1).unwrap_or_default();
            if raw.starts_with(crate::MAGIC) {
                envelope(raw, depth + 1)?
            } else if raw.is_empty() {
                Value::Null
            } else {
                parse_json(raw)?
            }
        }
        (Kind::FieldsV1, Wire::Len(b)) => {
            let raw = scalar_fields(b)?.bytes(1).unwrap_or_default();
            if raw.is_empty() {
                Value::Object(Map::new())
            } else {
                parse_json(raw)?
            }
        }
        _ => return Err(bad()),
    })
}

/// Last occurrence of each field of a small well-known message.
struct Fields<'a>(Vec<(u32, Wire<'a>)>);

impl<'a> Fields<'a> {
    fn last(&self, n: u32) -> Option<&Wire<'a>> {
        self.0.iter().rev().find(|(k, _)| *k == n).map(|(_, v)| v)
    }
    fn varint(&self, n: u32) -> Option<u64> {
        match self.last(n) {
            Some(Wire::Varint(v)) => Some(*v),
            _ => None,
        }
    }
    fn bytes(&self, n: u32) -> Option<&'a [u8]> {
        match self.last(n) {
            Some(Wire::Len(b)) => Some(b),
            _ => None,
        }
    }
    fn string(&self, n: u32) -> Result<Option<String>, Error> {
        self.bytes(n)
            .map(|b| utf8(b).map(str::to_owned))
            .transpose()
    }
}

fn scalar_fields(b: &[u8]) -> Result<Fields<'_>, Error> {
    let mut reader = Reader::new(b);
    let mut fields = Vec::new();
    while let Some(f) = reader.next_field()? {
        fields.push(f);
    }
    Ok(Fields(fields))
}

/// meta/v1 Time and MicroTime: the zero time is JSON null, as Go marshals it.
fn time(b: &[u8], micro: bool) -> Result<Value, Error> {
    let f = scalar_fields(b)?;
    let seconds = f.varint(1).unwrap_or(0) as i64;
    let nanos = f.varint(2).unwrap_or(0) as u32 as i32;
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let nanos = u32::try_from(nanos).map_err(|_| invalid("negative nanoseconds in time"))?;
    let t = chrono::DateTime::from_timestamp(seconds, nanos)
        .ok_or_else(|| invalid("time out of range"))?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(t.format(format).to_string()))
}

/// Go's `time.Duration.String()`, the JSON form of meta/v1 Duration.
pub(crate) fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let frac = |v: u64, div: u64, width: usize| {
        let (int, rem) = (v / div, v % div);
        if rem == 0 {
            int.to_string()
        } else {
            format!("{int}.{}", format!("{rem:0width$}").trim_end_matches('0'))
        }
    };
    const S: u64 = 1_000_000_000;
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000, 3))
    } else if u < S {
        format!("{}ms", frac(u, 1_000_000, 6))
    } else {
        let (h, m, s) = (u / (3600 * S), u / (60 * S) % 60, u % (60 * S));
        let s = frac(s, S, 9);
        if h > 0 {
            format!("{h}h{m}m{s}s")
        } else if m > 0 {
            format!("{m}m{s}s")
        } else {
            format!("{s}s")
        }
    };
    format!("{sign}{body}")
}

fn utf8(b: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(b).map_err(|_| invalid("string is not utf-8"))
}

fn parse_json(b: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(b).map_err(|e| invalid(format!("embedded json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(-2_000), "-2µs");
    }
}
