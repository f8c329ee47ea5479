//! The EndpointSlice mirroring controller (kube-controller-manager's
//! `endpointslice-mirroring-controller`): a Service without a selector is left to its
//! owner, who writes its Endpoints by hand (the classic way to give a name and a cluster
//! IP to something outside the cluster); the proxy and the cluster DNS read EndpointSlices,
//! so those Endpoints are mirrored into slices, as Kubernetes does.
//!
//! Each subset becomes one slice per address family (at most 100 endpoints a slice):
//! `addresses` ready, `notReadyAddresses` not, with their hostnames, node names and target
//! references; the subset's ports as they are. The slices carry the Endpoints' labels, the
//! Service's name and this controller as their manager, and are owned by the Endpoints, so
//! that they go with it. Endpoints labelled `endpointslice.kubernetes.io/skip-mirror:
//! "true"` (the `kubernetes` Service's, whose slice the API server writes) and those of
//! Services with a selector (the endpoints controller's) are not mirrored.
//!
//! Slices are named after the Endpoints and their place (`<name>-mirror-<n>`), not
//! generated: a sync that runs before the informer shows its last write then fails on a
//! conflict and is retried, instead of creating a second copy.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use crate::endpoints::{MANAGED_BY, SERVICE_NAME, follow};
use crate::events::Recorder;
use crate::informer::{Change, Informer, split_key};
use crate::{Informers, SyncResult, WorkQueue, run_workers, util};

pub const MIRRORING: &str = "endpointslice-mirroring-controller";
pub const MIRROR_MANAGER: &str = "endpointslicemirroring-controller.k8s.io";
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
const MAX_PER_SLICE: usize = 100;
const RETRY: Duration = Duration::from_millis(50);

struct Controller {
    services: Arc<Informer<Service>>,
    endpoints: Arc<Informer<Endpoints>>,
    slices: Arc<Informer<EndpointSlice>>,
    client: kube::Client,
}

pub fn start(informers: &Arc<Informers>, _events: &Recorder, workers: usize) {
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        services: informers.services(),
        endpoints: informers.endpoints(),
        slices: informers.endpointslices(),
        client: informers.client().clone(),
    });
    follow(&c.services, &queue);
    follow(&c.endpoints, &queue);
    {
        // A mirrored slice changed or gone by someone else's hand is put back.
        let q = queue.clone();
        c.slices.subscribe(move |change| {
            let (Change::Added(s) | Change::Deleted(s) | Change::Updated { new: s, .. }) = change;
            if s.labels().get(MANAGED_BY).map(String::as_str) == Some(MIRROR_MANAGER)
                && let Some(svc) = s.labels().get(SERVICE_NAME)
            {
                q.add(format!("{}/{svc}", s.namespace().unwrap_or_default()));
            }
        });
    }
    let ready = {
        let c = c.clone();
        async move {
            c.services.synced().await;
            c.endpoints.synced().await;
            c.slices.synced().await;
        }
    };
    run_workers(MIRRORING, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

/// Whether `ep` of `svc` is mirrored: the Service is there and has no selector (kube's
/// test, whatever the Service's type).
fn mirrored(svc: Option<&Service>, ep: &Endpoints) -> bool {
    svc.is_some_and(|svc| {
        let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
        selector.is_none_or(|s| s.is_empty())
    }) && ep.labels().get(SKIP_MIRROR).map(String::as_str) != Some("true")
}

fn endpoint(a: &EndpointAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![a.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        hostname: a.hostname.clone(),
        node_name: a.node_name.clone(),
        target_ref: a.target_ref.clone(),
        ..Default::default()
    }
}

/// The slices that mirror `ep` (named, without owner or resourceVersion).
pub fn desired(ep: &Endpoints) -> Vec<EndpointSlice> {
    let name = ep.name_any();
    let mut labels: BTreeMap<String, String> = ep
        .labels()
        .iter()
        .filter(|(k, _)| k.as_str() != SKIP_MIRROR)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), MIRROR_MANAGER.into());
    let mut out = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Option<Vec<EndpointPort>> = subset.ports.as_ref().map(|ports| {
            ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.clone().unwrap_or_default()),
                    port: Some(p.port),
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect()
        });
        let all = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        // By family; an address that is no IP is not mirrored.
        let mut by_family: BTreeMap<&str, Vec<Endpoint>> = BTreeMap::new();
        for (a, ready) in all {
            let family = match a.ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => "IPv4",
                Ok(IpAddr::V6(_)) => "IPv6",
                Err(_) => continue,
            };
            by_family
                .entry(family)
                .or_default()
                .push(endpoint(a, ready));
        }
        for (family, eps) in by_family {
            for chunk in eps.chunks(MAX_PER_SLICE) {
                out.push(EndpointSlice {
                    metadata: ObjectMeta {
                        name: Some(format!("{name}-mirror-{}", out.len())),
                        namespace: ep.namespace(),
                        labels: Some(labels.clone()),
                        ..Default::default()
                    },
                    address_type: family.into(),
                    endpoints: chunk.to_vec(),
                    ports: ports.clone(),
                });
            }
        }
    }
    out
}

/// A write that lost to a newer one, or to the informer's lag: try again shortly.
fn stale(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let ep = self.endpoints.get(key);
        let svc = self.services.get(key);
        let wanted = match &ep {
            Some(ep) if mirrored(svc.as_deref(), ep) => desired(ep),
            _ => Vec::new(),
        };
        let current: BTreeMap<String, Arc<EndpointSlice>> = self
            .slices
            .indexed(name)
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(ns))
            .filter(|s| s.labels().get(MANAGED_BY).map(String::as_str) == Some(MIRROR_MANAGER))
            .map(|s| (s.name_any(), s))
            .collect();
        let mut retry = false;
        for mut slice in wanted.iter().cloned() {
            let slice_name = slice.name_any();
            if let Some(ep) = &ep {
                slice.metadata.owner_references = Some(vec![util::controller_ref(&**ep)]);
            }
            let result = match current.get(&slice_name) {
                Some(have)
                    if have.address_type == slice.address_type
                        && have.endpoints == slice.endpoints
                        && have.ports == slice.ports
                        && have.metadata.labels == slice.metadata.labels =>
                {
                    continue;
                }
                // The address type cannot change: a new slice instead.
                Some(have) if have.address_type != slice.address_type => api
                    .delete(&slice_name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
                Some(have) => {
                    slice.metadata.resource_version = have.metadata.resource_version.clone();
                    slice.metadata.uid = have.metadata.uid.clone();
                    api.replace(&slice_name, &PostParams::default(), &slice)
                        .await
                        .map(|_| ())
                }
                None => api.create(&PostParams::default(), &slice).await.map(|_| ()),
            };
            match result {
                Ok(()) => {}
                Err(e) if stale(&e) => retry = true,
                Err(e) => return Err(e.into()),
            }
        }
        for (slice_name, _) in current
            .iter()
            .filter(|(n, _)| !wanted.iter().any(|w| w.name_any() == **n))
        {
            match api.delete(slice_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if stale(&e) => retry = true,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(retry.then_some(RETRY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(json: serde_json::Value) -> Endpoints {
        serde_json::from_value(json).expect("endpoints")
    }

    #[test]
    fn subsets_become_slices_by_family_with_readiness_and_ports() {
        let ep = endpoints(serde_json::json!({
            "metadata": {"name": "db", "namespace": "prod", "labels": {"team": "data"}},
            "subsets": [
                {"addresses": [{"ip": "192.0.2.10", "hostname": "db-0"}, {"ip": "2001:db8::10"}],
                 "notReadyAddresses": [{"ip": "192.0.2.11"}, {"ip": "not-an-ip"}],
                 "ports": [{"name": "sql", "port": 5432}]},
                {"addresses": [{"ip": "192.0.2.20"}], "ports": [{"port": 9187, "protocol": "TCP"}]},
            ],
        }));
        let slices = desired(&ep);
        type Summary = (String, String, Vec<(String, bool)>);
        let summary: Vec<Summary> = slices
            .iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.address_type.clone(),
                    s.endpoints
                        .iter()
                        .map(|e| {
                            (
                                e.addresses[0].clone(),
                                e.conditions.as_ref().unwrap().ready.unwrap(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "db-mirror-0".to_string(),
                    "IPv4".to_string(),
                    vec![
                        ("192.0.2.10".to_string(), true),
                        ("192.0.2.11".into(), false)
                    ]
                ),
                (
                    "db-mirror-1".into(),
                    "IPv6".into(),
                    vec![("2001:db8::10".into(), true)]
                ),
                (
                    "db-mirror-2".into(),
                    "IPv4".into(),
                    vec![("192.0.2.20".into(), true)]
                ),
            ]
        );
        assert_eq!(slices[0].endpoints[0].hostname.as_deref(), Some("db-0"));
        let port = &slices[0].ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("sql"), Some(5432), Some("TCP"))
        );
        let labels = slices[0].labels();
        assert_eq!(labels[SERVICE_NAME], "db");
        assert_eq!(labels[MANAGED_BY], MIRROR_MANAGER);
        assert_eq!(labels["team"], "data");
    }

    #[test]
    fn only_endpoints_of_services_without_selectors_are_mirrored() {
        let ep = endpoints(serde_json::json!({"metadata": {"name": "db"}}));
        let svc = |selector: serde_json::Value| -> Service {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "db"}, "spec": {"selector": selector}}),
            )
            .unwrap()
        };
        assert!(mirrored(Some(&svc(serde_json::Value::Null)), &ep));
        assert!(!mirrored(Some(&svc(serde_json::json!({"app": "db"}))), &ep));
        assert!(!mirrored(None, &ep));
        let skip = endpoints(serde_json::json!({
            "metadata": {"name": "db", "labels": {SKIP_MIRROR: "true"}}
        }));
        assert!(!mirrored(Some(&svc(serde_json::Value::Null)), &skip));
    }
}
