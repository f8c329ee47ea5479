//! Kubernetes label and field selectors: parsing and matching.
//!
//! Syntax as `k8s.io/apimachinery/pkg/labels` and `pkg/fields` accept it.

use std::collections::BTreeMap;

/// A parse error whose message names what is wrong, in the words Kubernetes uses
/// (for example `unable to parse requirement: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A parsed label selector: a conjunction of requirements. The empty selector matches all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector { /* private */ }

impl LabelSelector {
    /// Parses the string form: `a=b,c!=d,e in (f,g),h notin (i),j,!k,l==m`, also `x>1`/`x<1`.
    pub fn parse(s: &str) -> Result<Self, ParseError> { todo!() }
    /// Builds from the structured `metav1.LabelSelector` parts (`matchLabels`,
    /// `matchExpressions` with operators In, NotIn, Exists, DoesNotExist).
    pub fn from_parts(match_labels: &BTreeMap<String, String>, match_expressions: &[(String, String, Vec<String>)]) -> Result<Self, ParseError> { todo!() }
    pub fn is_empty(&self) -> bool { todo!() }
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool { todo!() }
}

/// A parsed field selector: `metadata.name=x,status.phase!=Running` (`=`, `==`, `!=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector { /* private */ }

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, ParseError> { todo!() }
    pub fn is_empty(&self) -> bool { todo!() }
    /// The field names used, so a server can refuse unsupported ones.
    pub fn fields(&self) -> Vec<&str> { todo!() }
    /// If the selector requires `field` to equal one value, that value
    /// (lets a server narrow a list, e.g. `metadata.name`).
    pub fn exact(&self, field: &str) -> Option<&str> { todo!() }
    /// `get(field)` returns the object's value for a field (`None`: empty string).
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool { todo!() }
}
