//! OpenAPI v3 documents for Skiff's built-in resources, built from the `k8s-openapi` types'
//! JSON schemas, so that `kubectl apply` leaves validation to the server
//! (`fieldValidation=Strict`) and `kubectl explain` works.
//!
//! Like kube-apiserver's `/openapi/v3`, there is an index naming one document per
//! group-version (`api/v1`, `apis/apps/v1`, ...), each holding that group-version's paths and
//! exactly the component schemas they reach. Building every document takes a while (see the
//! crate's tests), so a server should build them once, with [`Documents::build`], and keep them.

mod patch_meta;
mod paths;
mod schemas;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub use schemas::all_component_schemas;

/// One resource the server serves.
#[derive(Debug, Clone)]
pub struct Resource {
    /// `""` for core.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// URL name, e.g. `deployments`.
    pub plural: &'static str,
    pub namespaced: bool,
    /// Subresources served, e.g. `["status", "scale"]`.
    pub subresources: &'static [&'static str],
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}, "apis/apps/v1": ...}}`.
///
/// The hashes are of the documents' content, so this builds every document; a server that
/// also serves the documents should use [`Documents::build`] to build them only once.
pub fn index(resources: &[Resource]) -> Value {
    Documents::build(resources).index
}

/// The document for one group-version path (`"api/v1"`, `"apis/apps/v1"`), or `None`.
pub fn group_version_document(path: &str, resources: &[Resource]) -> Option<Value> {
    let (group, version) = parse_group_version_path(path)?;
    let served: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    Some(document(&served))
}

/// Every document and the index that points at them, built in one go.
#[derive(Debug, Clone)]
pub struct Documents {
    /// The `/openapi/v3` index.
    pub index: Value,
    /// Group-version path (`api/v1`) to its document.
    pub documents: BTreeMap<String, Value>,
}

impl Documents {
    pub fn build(resources: &[Resource]) -> Documents {
        let mut documents = BTreeMap::new();
        for path in group_version_paths(resources) {
            if let Some(doc) = group_version_document(&path, resources) {
                documents.insert(path, doc);
            }
        }
        let entries: serde_json::Map<String, Value> = documents
            .iter()
            .map(|(path, doc)| {
                let url = format!("/openapi/v3/{path}?hash={}", content_hash(doc));
                (path.clone(), json!({ "serverRelativeURL": url }))
            })
            .collect();
        Documents {
            index: json!({ "paths": entries }),
            documents,
        }
    }

    /// The document for a group-version path, as [`group_version_document`] builds it.
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.documents.get(path)
    }
}

/// The group-version paths of `resources`, core first, each once: `api/v1`, `apis/apps/v1`.
pub fn group_version_paths(resources: &[Resource]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in resources {
        let path = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// `api/v1` -> `("", "v1")`, `apis/apps/v1` -> `("apps", "v1")`.
fn parse_group_version_path(path: &str) -> Option<(&str, &str)> {
    let path = path.trim_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["api", version] if !version.is_empty() => Some(("", version)),
        ["apis", group, version] if !group.is_empty() && !version.is_empty() => {
            Some((group, version))
        }
        _ => None,
    }
}

fn document(served: &[&Resource]) -> Value {
    let mut schemas = schemas::SchemaSet::new();
    let mut paths = BTreeMap::new();
    for r in served {
        paths::add_resource(&mut paths, &mut schemas, r);
    }
    let paths: serde_json::Map<String, Value> = paths.into_iter().collect();
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.33.0" },
        "paths": paths,
        "components": { "schemas": schemas.finish() },
    })
}

/// A hash of the document's JSON, upper-case hex like upstream's. The hash only tells clients
/// when to fetch again, so a fast non-cryptographic one (128-bit FNV-1a) is enough; it is fixed
/// here rather than taken from `std`, whose hasher may change between Rust releases.
fn content_hash(doc: &Value) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME));
    format!("{hash:032X}")
}
