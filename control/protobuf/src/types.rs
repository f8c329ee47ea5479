//! Shapes of the generated schema table (`schema.rs`).

/// A protobuf message: its fields in field-number order, which is also the Go struct order
/// kube-apiserver serializes JSON in.
#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
    /// Whether a field of this message, or of one it holds, has a zero Go always writes:
    /// the zero-value fill walks only into messages that do.
    pub fills: bool,
}

#[derive(Debug)]
pub struct Field {
    pub number: u32,
    /// JSON name; empty for `Kind::Inline`.
    pub json: &'static str,
    pub kind: Kind,
    pub repeated: bool,
    /// What Go writes for the field at its zero value, from the Go types' tags.
    pub unset: Unset,
}

/// What Go's `encoding/json` (kube-apiserver's encoder) writes for a field left at its zero
/// value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// Nothing: a pointer, slice, map or `[]byte`, a `Time` (whose zero is `null`), a
    /// `RawExtension`, or a field the Go types read do not declare. Go writes `null` for a nil
    /// slice or map without `omitempty`; every client reads `null` as absent, so Skiff writes
    /// neither.
    Nothing,
    /// Nothing: a non-pointer scalar tagged `omitempty`. Go still puts its zero on the
    /// protobuf wire, so the transcoder drops it.
    OmitEmpty,
    /// Its zero: a non-pointer scalar without `omitempty` (`""`, `0`, `false`), a `Quantity`
    /// (`"0"`), an `IntOrString` (`0`), a `Duration` (`"0s"`), or a struct (`omitempty` never
    /// omits one): `{}` with the struct's own zeros.
    Zero,
}

#[derive(Debug)]
pub enum Kind {
    String,
    /// JSON: base64 string.
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message(&'static Message),
    /// A Go struct embedded with `json:",inline"`: its fields join the parent's JSON object.
    Inline(&'static Message),
    /// map<string, value>.
    Map(&'static Kind),
    /// meta/v1 Time: RFC 3339 seconds.
    Time,
    /// meta/v1 MicroTime: RFC 3339 with microseconds.
    MicroTime,
    /// meta/v1 Duration: Go duration string.
    Duration,
    /// resource.Quantity: its canonical string.
    Quantity,
    /// intstr.IntOrString: number or string.
    IntOrString,
    /// runtime.RawExtension: the embedded object.
    RawExtension,
    /// meta/v1 FieldsV1: the embedded JSON.
    FieldsV1,
}

/// A top-level kind: `api_version` empty means any group version.
#[derive(Debug)]
pub struct Root {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub message: &'static Message,
}
