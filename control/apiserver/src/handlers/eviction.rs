//! `pods/eviction` (kube-apiserver's `EvictionREST`): a pod deleted only if the
//! PodDisruptionBudget that covers it allows one more disruption, which the eviction
//! takes from the budget's status in the same step. What `kubectl drain` calls.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, parse_delete_options};
use crate::json_response;
use crate::object::{self, meta_mut};
use crate::registry;
use crate::status::{ApiError, ApiResult};
use skiff_store::ListOptions;

/// More disruptions recorded in a budget than this and evictions stop (kube's
/// `MaxDisruptedPodSize`): the disruption controller has fallen behind.
const MAX_DISRUPTED_PODS: usize = 2000;
/// Rounds of read, check and write before giving up on a budget others keep changing.
const ATTEMPTS: usize = 16;

fn too_many_requests(message: &str, cause: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
    e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}));
    e
}

const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A budget's selector; nil and empty select nothing here (kube's eviction code says so).
fn selects(pdb: &Value, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return false;
    };
    skiff_printers::parse_label_selector(sel).is_ok_and(|s| !s.is_empty() && s.matches(labels))
}

impl Ctx<'_> {
    pub(super) async fn evict(&self, body: &[u8]) -> ApiResult<Response> {
        let eviction = crate::decode::body_object(self.headers, body)?;
        let named = object::meta_str(&eviction, "name").unwrap_or("");
        if named != self.name() {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let opts = match eviction.get("deleteOptions").filter(|o| !o.is_null()) {
            Some(o) => parse_delete_options(true, o, self.query)?,
            None => parse_delete_options(false, &json!({}), &crate::request::Query::default())?,
        };
        let ctx = Ctx {
            state: self.state,
            info: self.info,
            query: self.query,
            headers: self.headers,
            format: self.format,
            dry_run: self.dry_run || opts.dry_run,
        };
        for _ in 0..ATTEMPTS {
            let (kv, pod) = ctx.read().await?;
            let phase = pod
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            // A pod that is finished, not started or already going costs no budget.
            let free =
                object::is_deleting(&pod) || matches!(phase, "Succeeded" | "Failed" | "Pending");
            if !free && let Some((pdb_key, pdb_kv, pdb)) = ctx.budget_of(&pod).await? {
                match ctx
                    .take_disruption(&pod, &pdb_key, pdb_kv.mod_revision, pdb)
                    .await?
                {
                    Taken::Yes | Taken::NotNeeded => {}
                    Taken::Raced => continue,
                }
            }
            // The disruption is taken (or none was needed): only the delete is retried,
            // as kube-apiserver does, never the budget.
            ctx.delete_retrying(kv, pod, &opts).await?;
            return Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "code": 201}),
            ));
        }
        Err(ApiError::conflict(self.resource(), self.name()))
    }

    /// The one PodDisruptionBudget that selects `pod`, if any: its key, its store entry
    /// and its object.
    async fn budget_of(
        &self,
        pod: &Value,
    ) -> ApiResult<Option<(String, skiff_store::KeyValue, Value)>> {
        let pdbs = registry::find("policy", "v1", "poddisruptionbudgets").expect("PDBs served");
        let ns = object::meta_str(pod, "namespace").unwrap_or("");
        let labels = object::labels(pod);
        let page = self
            .state
            .store
            .list(&pdbs.prefix(Some(ns)), ListOptions::default())
            .await?;
        let mut found = Vec::new();
        for kv in page.items {
            let pdb = object::decode(pdbs, &kv)?;
            if selects(&pdb, &labels) {
                found.push((kv.key.clone(), kv, pdb));
            }
        }
        if found.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        Ok(found.pop())
    }

    /// Takes one disruption from the budget (noting the pod in `disruptedPods`), or says
    /// why not.
    async fn take_disruption(
        &self,
        pod: &Value,
        pdb_key: &str,
        revision: i64,
        mut pdb: Value,
    ) -> ApiResult<Taken> {
        let name = object::name(&pdb).to_string();
        let generation = int(&pdb, "/metadata/generation");
        if int(&pdb, "/status/observedGeneration") < generation {
            return Err(too_many_requests(
                VIOLATES,
                format!("The disruption budget {name} is still being processed by the server."),
            ));
        }
        let healthy = int(&pdb, "/status/currentHealthy");
        let desired = int(&pdb, "/status/desiredHealthy");
        // An unready pod takes nothing from a budget that is met (IfHealthyBudget, the
        // default) or at all (AlwaysAllow).
        if !pod_ready(pod) {
            let policy = pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("IfHealthyBudget");
            if policy == "AlwaysAllow" || healthy >= desired {
                return Ok(Taken::NotNeeded);
            }
        }
        let allowed = int(&pdb, "/status/disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::forbidden(
                self.resource(),
                self.name(),
                "pdb disruptions allowed is negative",
            ));
        }
        let disrupted = pdb
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(ApiError::forbidden(
                self.resource(),
                self.name(),
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            return Err(too_many_requests(
                VIOLATES,
                format!(
                    "The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"
                ),
            ));
        }
        if self.dry_run {
            return Ok(Taken::Yes);
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        let status = pdb["status"].as_object_mut().expect("status is an object");
        let pods = status.entry("disruptedPods").or_insert_with(|| json!({}));
        if !pods.is_object() {
            *pods = json!({});
        }
        pods[object::name(pod)] = json!(object::now_rfc3339());
        meta_mut(&mut pdb).remove("resourceVersion");
        let pdbs = registry::find("policy", "v1", "poddisruptionbudgets").expect("PDBs served");
        match self
            .state
            .store
            .update(pdb_key, revision, object::encode(pdbs, &pdb))
            .await
        {
            Ok(_) => Ok(Taken::Yes),
            Err(skiff_store::Error::Conflict { .. }) => Ok(Taken::Raced),
            Err(e) => Err(e.into()),
        }
    }
}

enum Taken {
    Yes,
    NotNeeded,
    /// The budget changed under us: read everything again.
    Raced,
}
