//! Transcode Kubernetes protobuf request bodies into the JSON kube-apiserver would serialize.
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
//! (`hostPort`, `stdin`, `paused`; the table marks them `omit_zero`, taken from the Go types).
//! A zero in a pointer field (`replicas: 0`, `automountServiceAccountToken: false`) is a
//! choice and is kept. In ObjectMeta, whose numbers are all `omitempty` non-pointers except
//! `deletionGracePeriodSeconds`, zero numbers are dropped too.

mod schema;
mod transcode;
mod types;
mod wire;

pub use types::{Field, Kind, Message, Root};

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
