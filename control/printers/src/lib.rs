//! Server-side printing: the `meta.k8s.io/v1` Table columns and cells real clusters print
//! for each built-in kind (`kubectl get`), computed from the stored JSON object.

use serde_json::Value;

/// One column definition as `metav1.TableColumnDefinition` serializes it:
/// `{"name","type","format","description","priority"}`.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> { todo!() }

/// The cells of one object's row, in the order of `column_definitions`, as JSON values
/// (strings, integers). `now` is the time AGE is measured against.
pub fn row_cells(group: &str, kind: &str, object: &Value, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> { todo!() }
