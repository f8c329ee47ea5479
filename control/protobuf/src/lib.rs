//! Transcode Kubernetes protobuf request bodies into the JSON kube-apiserver would serialize,
//! and fill in the zero values kube-apiserver's JSON always carries.
//!
//! kubectl 1.32+ posts imperative creates (`kubectl create configmap`, `run`, `expose`, ...) as
//! `application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a `runtime.Unknown` whose
//! `raw` holds the object's protobuf message. Skiff stores JSON, so [`to_json`] walks that
//! message with a generated field table (`schema.rs`, see `generate.py`) and produces the object
//! with Kubernetes' JSON names, `apiVersion` and `kind` first.
//!
//! Presence follows the wire, with Go's encoder in mind: a field absent on the wire is absent
//! in the JSON. Go writes non-pointer fields even when zero, and kube-apiserver's JSON drops
//! the zero of those marked `omitempty`; so an empty singular string is treated as unset, and
//! a zero number or `false` is dropped where the Go field is a non-pointer `omitempty` scalar
//! (`hostPort`, `stdin`, `paused`; the table marks them [`Unset::OmitEmpty`], from the Go types).
//! A zero in a pointer field (`replicas: 0`, `automountServiceAccountToken: false`) is a
//! choice and is kept. In ObjectMeta, whose numbers are all `omitempty` non-pointers except
//! `deletionGracePeriodSeconds`, zero numbers are dropped too.
//!
//! The same table knows the reverse: the fields Go writes even at their zero value
//! ([`Unset::Zero`]), which [`fill_go_zero_values`] adds to an object that lacks them.

mod schema;
mod transcode;
mod types;
mod wire;
mod zero;

pub use types::{Field, Kind, Message, Root, Unset};

/// The media type kubectl uses for protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("body does not start with the kubernetes protobuf magic k8s\\0")]
    BadMagic,
    #[error("truncated protobuf data")]
    Truncated,
    #[error("invalid protobuf data: {0}")]
    Invalid(String),
    #[error("unsupported kind {kind:?} in {api_version:?} for protobuf bodies")]
    UnknownKind { api_version: String, kind: String },
    #[error("unsupported protobuf content encoding {0:?}")]
    UnsupportedEncoding(String),
}

/// Decode a protobuf body (`k8s\0` + `runtime.Unknown`) into the object's JSON.
pub fn to_json(body: &[u8]) -> Result<serde_json::Value, Error> {
    transcode::envelope(body, 0)
}

/// The top-level kinds [`to_json`] understands.
pub fn supported_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    schema::ROOTS.iter().map(|r| (r.api_version, r.kind))
}

/// Adds to `object`, a `kind` of `api_version` as JSON, every field kube-apiserver's Go
/// encoder would write that it lacks: non-`omitempty` scalars as their zero (`0`, `""`,
/// `false`), non-pointer structs as `{}` with their own such fields, at any depth (in lists
/// and maps too). Fields already present are kept as they are. Nil slices and maps and zero
/// times, which Go writes as `null`, are left out: clients read `null` and absence alike.
///
/// Returns false, leaving `object` as it is, for a kind the table does not know.
pub fn fill_go_zero_values(api_version: &str, kind: &str, object: &mut serde_json::Value) -> bool {
    let Some(message) = zero::root(api_version, kind) else {
        return false;
    };
    if let serde_json::Value::Object(map) = object {
        zero::fill(message, map);
    }
    true
}

/// What Go's encoder writes for a top-level `field` of a `kind` left at its zero (a
/// DaemonSet's `status`: its four counts), for a caller that resets that one field and
/// need not walk the rest of the object again. `None` for a kind or field the table does
/// not know, or one Go writes nothing for.
pub fn go_zero_field(api_version: &str, kind: &str, field: &str) -> Option<serde_json::Value> {
    zero::root(api_version, kind).and_then(|message| zero::field_zero(message, field))
}
