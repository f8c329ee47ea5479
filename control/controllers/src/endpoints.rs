//! The Endpoints and EndpointSlice controllers: for every Service with a selector, the
//! pods it selects, where each listens, and whether each is ready, serving or
//! terminating, as kube-controller-manager's `endpoints-controller` and
//! `endpointslice-controller` write them. The node proxy and cluster DNS read the slices.
//!
//! A pod counts once it has an IP and until it ends (Succeeded or Failed). Ready is its
//! Ready condition (so its readiness probe) while it is not being deleted; serving is the
//! Ready condition even while it terminates, so a proxy can keep draining connections to
//! it. A named `targetPort` is looked up among each pod's container ports, so pods of two
//! versions may listen on different numbers: each set of resolved ports gets subsets
//! (Endpoints) or slices (EndpointSlices) of its own, a pod without the name in none.
//! Services without a selector, and ExternalName Services, are left to their owners.
//!
//! Slices hold at most 100 endpoints (`--max-endpoints-per-slice`); an endpoint stays in the
//! slice it is in while it lasts, new ones fill slices with room before a slice is made,
//! and a Service with no endpoints keeps one empty slice, as kube's reconciler does. The
//! informer may not yet show a slice this controller just wrote: a sync then waits for it
//! (kube's endpoint slice tracker) rather than writing from a stale view.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Node, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use skiff_selectors::LabelSelector as Selector;

use crate::events::Recorder;
use crate::informer::{Change, Informer, key_of, split_key};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers, util};

pub const ENDPOINTS: &str = "endpoints-controller";
pub const SLICES: &str = "endpointslice-controller";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "endpointslice-controller.k8s.io";
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
const HEADLESS: &str = "service.kubernetes.io/headless";
const ZONE: &str = "topology.kubernetes.io/zone";
const MAX_PER_SLICE: usize = 100;
/// How long a sync waits for the informer to show this controller's own writes.
const STALE_RETRY: Duration = Duration::from_millis(20);

/// One pod as an endpoint of a Service, with the ports its targetPorts resolve to.
#[derive(Debug, Clone, PartialEq)]
struct Backend {
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<String>,
    zone: Option<String>,
    hostname: Option<String>,
    pod: ObjectReference,
}

/// The resolved ports of one pod: (name, port, protocol, appProtocol), in the Service's order.
type PortSet = Vec<(String, i32, String, Option<String>)>;

/// What a Service's selector picks now, grouped by resolved ports.
fn backends(
    svc: &Service,
    pods: &[Arc<Pod>],
    nodes: &Informer<Node>,
) -> BTreeMap<PortSetKey, (PortSet, Vec<Backend>)> {
    let mut out: BTreeMap<PortSetKey, (PortSet, Vec<Backend>)> = BTreeMap::new();
    let spec = svc.spec.clone().unwrap_or_default();
    let name = svc.name_any();
    for pod in pods {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let pod_ready = util::is_ready(pod);
        let ports: PortSet = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let port = resolve(pod, p.target_port.as_ref(), p.port, &protocol)?;
                Some((
                    p.name.clone().unwrap_or_default(),
                    port,
                    protocol,
                    p.app_protocol.clone(),
                ))
            })
            .collect();
        if ports.is_empty() && !spec.ports.as_ref().is_none_or(|p| p.is_empty()) {
            // Listens on none of the Service's ports.
            continue;
        }
        let pod_spec = pod.spec.as_ref();
        let node = pod_spec.and_then(|s| s.node_name.clone());
        let zone = node
            .as_deref()
            .and_then(|n| nodes.get(n))
            .and_then(|n| n.labels().get(ZONE).cloned());
        let hostname = pod_spec
            .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty());
        let backend = Backend {
            ip,
            ready: pod_ready && !terminating,
            serving: pod_ready,
            terminating,
            node,
            zone,
            hostname,
            pod: ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
        };
        out.entry(port_key(&ports))
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(backend);
    }
    for (_, list) in out.values_mut() {
        list.sort_by(|a, b| a.ip.cmp(&b.ip));
    }
    out
}

type PortSetKey = String;

fn port_key(ports: &PortSet) -> PortSetKey {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|(n, p, proto, app)| format!("{n}/{p}/{proto}/{}", app.as_deref().unwrap_or("")))
        .collect();
    parts.sort();
    parts.join(",")
}

/// The port a pod listens on for a Service port: a number as it is; a name looked up among
/// the pod's container ports with the same protocol (kube's `podutil.FindPort`).
fn resolve(pod: &Pod, target: Option<&IntOrString>, port: i32, protocol: &str) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn selector_of(svc: &Service) -> Option<Selector> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let labels = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    Selector::from_parts(labels, &[]).ok()
}

fn selected_pods(svc: &Service, sel: &Selector, pods: &Informer<Pod>) -> Vec<Arc<Pod>> {
    let ns = svc.namespace().unwrap_or_default();
    pods.list_namespace(&ns)
        .into_iter()
        .filter(|p| sel.matches(util::labels(&**p)))
        .collect()
}

/// Queues the Services in a changed pod's namespace whose selector matches it, before or
/// after the change.
fn follow_pods(pods: &Informer<Pod>, services: &Arc<Informer<Service>>, queue: &Arc<WorkQueue>) {
    let (services, queue) = (services.clone(), queue.clone());
    pods.subscribe(move |change| {
        let (old, new, batched) = match change {
            Change::Added(p) | Change::Deleted(p) => (None, *p, false),
            Change::Updated { old, new } => (Some(*old), *new, true),
        };
        let ns = new.metadata.namespace.as_deref().unwrap_or_default();
        for svc in services.list_namespace(ns) {
            let Some(sel) = selector_of(&svc) else {
                continue;
            };
            if sel.matches(util::labels(&**new))
                || old.is_some_and(|o| sel.matches(util::labels(&**o)))
            {
                if batched {
                    queue.add_batched(key_of(&*svc));
                } else {
                    queue.add(key_of(&*svc));
                }
            }
        }
    });
}

/// Queues the key of every object of `informer` that comes, changes or goes.
pub(crate) fn follow<K>(informer: &Informer<K>, queue: &Arc<WorkQueue>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let queue = queue.clone();
    informer.subscribe(move |change| {
        let (Change::Added(o) | Change::Deleted(o) | Change::Updated { new: o, .. }) = change;
        queue.add(key_of(&***o));
    });
}

// ---- Endpoints ---------------------------------------------------------------------------

struct EndpointsController {
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    endpoints: Arc<Informer<Endpoints>>,
    client: kube::Client,
}

pub fn start_endpoints(informers: &Arc<Informers>, _events: &Recorder, workers: usize) {
    let queue = WorkQueue::new();
    let c = Arc::new(EndpointsController {
        services: informers.services(),
        pods: informers.pods(),
        nodes: informers.nodes(),
        endpoints: informers.endpoints(),
        client: informers.client().clone(),
    });
    follow(&c.services, &queue);
    follow_pods(&c.pods, &c.services, &queue);
    {
        // Someone else's change to an Endpoints of a selector Service is put back.
        let q = queue.clone();
        c.endpoints.subscribe(move |change| {
            if let Change::Updated { new, .. } | Change::Deleted(new) = change {
                q.add(key_of(&***new));
            }
        });
    }
    let ready = {
        let c = c.clone();
        async move {
            c.services.synced().await;
            c.pods.synced().await;
            c.nodes.synced().await;
            c.endpoints.synced().await;
        }
    };
    run_workers(ENDPOINTS, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

impl EndpointsController {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let current = self.endpoints.get(key);
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: so are its Endpoints (kube deletes them, no owner ref).
            if let Some(ep) = current
                && ep.labels().get(MANAGED_BY).is_none()
            {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(None);
        };
        let Some(sel) = selector_of(&svc) else {
            return Ok(None);
        };
        let publish_not_ready = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let pods = selected_pods(&svc, &sel, &self.pods);
        let groups = backends(&svc, &pods, &self.nodes);
        let mut subsets = Vec::new();
        for (ports, list) in groups.values() {
            let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
            for b in list {
                // Terminating pods are not endpoints here (EndpointSlices say terminating).
                if b.terminating && !publish_not_ready {
                    continue;
                }
                let addr = EndpointAddress {
                    ip: b.ip.clone(),
                    node_name: b.node.clone(),
                    hostname: b.hostname.clone(),
                    target_ref: Some(b.pod.clone()),
                };
                if b.ready || publish_not_ready {
                    ready.push(addr);
                } else {
                    not_ready.push(addr);
                }
            }
            if ready.is_empty() && not_ready.is_empty() {
                continue;
            }
            subsets.push(EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto, app)| CorePort {
                            name: (!n.is_empty()).then(|| n.clone()),
                            port: *p,
                            protocol: Some(proto.clone()),
                            app_protocol: app.clone(),
                        })
                        .collect(),
                ),
            });
        }
        let mut labels = svc.labels().clone();
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
            labels.insert(HEADLESS.into(), String::new());
        }
        let subsets = (!subsets.is_empty()).then_some(subsets);
        match current {
            Some(ep) => {
                if ep.subsets == subsets && ep.metadata.labels.clone().unwrap_or_default() == labels
                {
                    return Ok(None);
                }
                let mut ep = (*ep).clone();
                ep.subsets = subsets;
                ep.metadata.labels = Some(labels);
                api.replace(name, &PostParams::default(), &ep).await?;
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(ns.to_string()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    subsets,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => {}
                    // Not in the informer yet: the next sync sees it.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Ok(Some(STALE_RETRY));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(None)
    }
}

// ---- EndpointSlices ----------------------------------------------------------------------

struct SliceController {
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
    client: kube::Client,
    /// What this controller wrote and the informer may not show yet, per Service key:
    /// slice name → the resourceVersion written, or `None` for a delete.
    written: Mutex<HashMap<String, HashMap<String, Option<i64>>>>,
}

pub fn start_slices(informers: &Arc<Informers>, _events: &Recorder, workers: usize) {
    let queue = WorkQueue::new();
    let c = Arc::new(SliceController {
        services: informers.services(),
        pods: informers.pods(),
        nodes: informers.nodes(),
        slices: informers.endpointslices(),
        client: informers.client().clone(),
        written: Mutex::new(HashMap::new()),
    });
    follow(&c.services, &queue);
    follow_pods(&c.pods, &c.services, &queue);
    {
        // A managed slice changed or gone by someone else's hand is put back.
        let q = queue.clone();
        c.slices.subscribe(move |change| {
            let slice = match change {
                Change::Added(s) | Change::Deleted(s) => *s,
                Change::Updated { new, .. } => *new,
            };
            if slice.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
                && let Some(svc) = slice.labels().get(SERVICE_NAME)
            {
                let ns = slice.namespace().unwrap_or_default();
                q.add(format!("{ns}/{svc}"));
            }
        });
    }
    {
        // A node's zone label is copied onto its endpoints.
        let (q, services, pods) = (queue.clone(), c.services.clone(), c.pods.clone());
        c.nodes.subscribe(move |change| {
            let Change::Updated { old, new } = change else {
                return;
            };
            if old.labels().get(ZONE) == new.labels().get(ZONE) {
                return;
            }
            let node = new.name_any();
            let namespaces: HashSet<String> = pods
                .indexed(&node)
                .iter()
                .filter_map(|p| p.namespace())
                .collect();
            for ns in namespaces {
                for svc in services.list_namespace(&ns) {
                    q.add(key_of(&*svc));
                }
            }
        });
    }
    let ready = {
        let c = c.clone();
        async move {
            c.services.synced().await;
            c.pods.synced().await;
            c.nodes.synced().await;
            c.slices.synced().await;
        }
    };
    run_workers(SLICES, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

fn rv(meta: &ObjectMeta) -> i64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl SliceController {
    /// This Service's managed slices as the informer shows them, or `None` while it does
    /// not show this controller's last writes yet.
    fn current(&self, key: &str, ns: &str, name: &str) -> Option<Vec<Arc<EndpointSlice>>> {
        let slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .indexed(name)
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(ns))
            .filter(|s| s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER))
            .collect();
        let mut written = self.written.lock().expect("written lock");
        if let Some(pending) = written.get_mut(key) {
            pending.retain(|slice, version| {
                let seen = slices.iter().find(|s| s.name_any() == *slice);
                match (version, seen) {
                    (None, None) => false,
                    (None, Some(_)) => true,
                    (Some(v), Some(s)) => rv(&s.metadata) < *v,
                    (Some(_), None) => true,
                }
            });
            if !pending.is_empty() {
                return None;
            }
            written.remove(key);
        }
        Some(slices)
    }

    fn wrote(&self, key: &str, slice: &str, version: Option<i64>) {
        self.written
            .lock()
            .expect("written lock")
            .entry(key.to_string())
            .or_default()
            .insert(slice.to_string(), version);
    }

    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(current) = self.current(key, ns, name) else {
            return Ok(Some(STALE_RETRY));
        };
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let svc = self.services.get(key);
        let sel = svc.as_deref().and_then(selector_of);
        let (Some(svc), Some(sel)) = (svc, sel) else {
            // No Service, or one left to its owner: the slices this controller made go
            // (with the Service, garbage collection takes them too).
            for s in current {
                self.delete(&api, key, &s).await?;
            }
            return Ok(None);
        };
        let pods = selected_pods(&svc, &sel, &self.pods);
        let groups = backends(&svc, &pods, &self.nodes);
        let mut labels = svc.labels().clone();
        labels.insert(SERVICE_NAME.into(), name.to_string());
        labels.insert(MANAGED_BY.into(), MANAGER.into());
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
            labels.insert(HEADLESS.into(), String::new());
        }
        let owner = util::controller_ref(&*svc);
        // Existing slices by the port set they carry.
        let mut by_ports: HashMap<PortSetKey, Vec<Arc<EndpointSlice>>> = HashMap::new();
        for s in current {
            by_ports.entry(slice_port_key(&s)).or_default().push(s);
        }
        let mut plans: Vec<(Option<Arc<EndpointSlice>>, PortSet, Vec<Endpoint>)> = Vec::new();
        for (pkey, (ports, list)) in &groups {
            let mut wanted: BTreeMap<&str, Endpoint> =
                list.iter().map(|b| (b.ip.as_str(), endpoint(b))).collect();
            let mut existing = by_ports.remove(pkey).unwrap_or_default();
            existing.sort_by_key(|s| s.name_any());
            let mut kept: Vec<(Option<Arc<EndpointSlice>>, PortSet, Vec<Endpoint>)> = Vec::new();
            for s in existing {
                // Endpoints stay in the slice they are in while they last.
                let eps: Vec<Endpoint> = s
                    .endpoints
                    .iter()
                    .filter_map(|e| wanted.remove(e.addresses.first()?.as_str()))
                    .collect();
                kept.push((Some(s), ports.clone(), eps));
            }
            let mut rest: Vec<Endpoint> = wanted.into_values().collect();
            for (_, _, eps) in kept.iter_mut() {
                let room = MAX_PER_SLICE.saturating_sub(eps.len());
                let take = room.min(rest.len());
                eps.extend(rest.drain(..take));
            }
            while !rest.is_empty() {
                let take = MAX_PER_SLICE.min(rest.len());
                kept.push((None, ports.clone(), rest.drain(..take).collect()));
            }
            plans.extend(kept);
        }
        // Slices whose port set no pod has now: emptied (deleted below).
        for (_, slices) in by_ports {
            for s in slices {
                plans.push((Some(s), Vec::new(), Vec::new()));
            }
        }
        // A Service with no endpoints keeps one empty slice, without ports.
        let any = plans.iter().any(|(_, _, eps)| !eps.is_empty());
        if !any {
            let mut existing: Vec<Arc<EndpointSlice>> =
                plans.into_iter().filter_map(|(s, _, _)| s).collect();
            existing.sort_by_key(|s| s.name_any());
            let keep = (!existing.is_empty()).then(|| existing.remove(0));
            for s in existing {
                self.delete(&api, key, &s).await?;
            }
            plans = vec![(keep, Vec::new(), Vec::new())];
        }
        for (existing, ports, eps) in plans {
            if eps.is_empty() && any {
                if let Some(s) = existing {
                    self.delete(&api, key, &s).await?;
                }
                continue;
            }
            let ports = (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|(n, p, proto, app)| EndpointPort {
                        name: Some(n.clone()),
                        port: Some(*p),
                        protocol: Some(proto.clone()),
                        app_protocol: app.clone(),
                    })
                    .collect::<Vec<_>>()
            });
            match existing {
                Some(s) => {
                    if s.endpoints == eps
                        && s.ports == ports
                        && s.metadata.labels.as_ref() == Some(&labels)
                    {
                        continue;
                    }
                    let mut s = (*s).clone();
                    s.endpoints = eps;
                    s.ports = ports;
                    s.metadata.labels = Some(labels.clone());
                    let slice = s.name_any();
                    match api.replace(&slice, &PostParams::default(), &s).await {
                        Ok(w) => self.wrote(key, &slice, Some(rv(&w.metadata))),
                        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                            return Ok(Some(STALE_RETRY));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    let s = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(format!("{name}-")),
                            namespace: Some(ns.to_string()),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        address_type: "IPv4".into(),
                        endpoints: eps,
                        ports,
                    };
                    let w = api.create(&PostParams::default(), &s).await?;
                    self.wrote(key, &w.name_any(), Some(rv(&w.metadata)));
                }
            }
        }
        Ok(None)
    }

    async fn delete(
        &self,
        api: &Api<EndpointSlice>,
        key: &str,
        s: &EndpointSlice,
    ) -> Result<(), Error> {
        let slice = s.name_any();
        match api.delete(&slice, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        self.wrote(key, &slice, None);
        Ok(())
    }
}

fn endpoint(b: &Backend) -> Endpoint {
    Endpoint {
        addresses: vec![b.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(b.ready),
            serving: Some(b.serving),
            terminating: Some(b.terminating),
        }),
        hostname: b.hostname.clone(),
        node_name: b.node.clone(),
        target_ref: Some(b.pod.clone()),
        zone: b.zone.clone(),
        ..Default::default()
    }
}

fn slice_port_key(s: &EndpointSlice) -> PortSetKey {
    let ports: PortSet = s
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    port_key(&ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(port_name.into()),
                        container_port: port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: (!ip.is_empty()).then(|| ip.into()),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn service(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn named_ports_resolve_per_pod_and_group_pods() {
        let nodes = Informer::<Node>::new();
        let svc = service(IntOrString::String("http".into()));
        let mut terminating = (*pod("d", "10.0.0.4", true, "http", 8080)).clone();
        terminating.metadata.deletion_timestamp = Some(util::now());
        let mut done = (*pod("e", "10.0.0.5", false, "http", 8080)).clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let pods = vec![
            pod("a", "10.0.0.1", true, "http", 8080),
            pod("b", "10.0.0.2", false, "http", 9090),
            pod("c", "10.0.0.3", true, "other", 7070),
            pod("f", "", true, "http", 8080),
            Arc::new(terminating),
            Arc::new(done),
        ];
        let groups = backends(&svc, &pods, &nodes);
        assert_eq!(groups.len(), 2, "{groups:#?}");
        let by_port: HashMap<i32, Vec<(String, bool, bool, bool)>> = groups
            .values()
            .map(|(ports, list)| {
                (
                    ports[0].1,
                    list.iter()
                        .map(|b| (b.ip.clone(), b.ready, b.serving, b.terminating))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            by_port[&8080],
            vec![
                ("10.0.0.1".to_string(), true, true, false),
                ("10.0.0.4".to_string(), false, true, true)
            ]
        );
        assert_eq!(
            by_port[&9090],
            vec![("10.0.0.2".to_string(), false, false, false)]
        );
        // A number needs no lookup.
        let groups = backends(&service(IntOrString::Int(8080)), &pods, &nodes);
        assert_eq!(groups.len(), 1);
        assert_eq!(
            groups.values().next().unwrap().1.len(),
            4,
            "no IP, Succeeded: out"
        );
    }

    #[test]
    fn services_without_selectors_are_left_alone() {
        let mut svc = service(IntOrString::Int(80));
        svc.spec.as_mut().unwrap().selector = None;
        assert!(selector_of(&svc).is_none());
        let mut ext = service(IntOrString::Int(80));
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(selector_of(&ext).is_none());
    }
}
