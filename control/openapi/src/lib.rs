//! OpenAPI v3 documents for Skiff's built-in resources, built from the `k8s-openapi` types'
//! JSON schemas, so that `kubectl apply` leaves validation to the server
//! (`fieldValidation=Strict`) and `kubectl explain` works.

use serde_json::Value;

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
pub fn index(resources: &[Resource]) -> Value { todo!() }

/// The document for one group-version path (`"api/v1"`, `"apis/apps/v1"`), or `None`.
pub fn group_version_document(path: &str, resources: &[Resource]) -> Option<Value> { todo!() }
