//! Shapes of the generated schema table (`schema.rs`).

/// A protobuf message: its fields in field-number order, which is also the Go struct order
/// kube-apiserver serializes JSON in.
#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

#[derive(Debug)]
pub struct Field {
    pub number: u32,
    /// JSON name; empty for `Kind::Inline`.
    pub json: &'static str,
    pub kind: Kind,
    pub repeated: bool,
    /// A non-pointer `omitempty` scalar in Go: always on the wire, its zero is not in JSON.
    pub omit_zero: bool,
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
