//! The scheduling decision without IO: which nodes a pod may run on (filters) and how much
//! each suits it (scores), after kube-scheduler's default plugins.
//!
//! The scheduler itself works on [`PodInfo`] and [`NodeInfo`], which hold a pod's parsed
//! requests and a node's running sums so that a decision never re-reads the pods already on
//! the node; [`feasible`] and [`score`] build those from plain objects for callers (and
//! tests) that have no cache.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::api::node::v1::RuntimeClass;

use crate::quantity::{Resources, amount};

/// Why a pod cannot run on a node. `Display` is kube-scheduler's wording for the reason,
/// which `kubectl describe` users know and search for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// The pod names a RuntimeClass that does not exist; no node can run it.
    #[error("runtimeclasses.node.k8s.io \"{0}\" not found")]
    RuntimeClassNotFound(String),
    /// `spec.unschedulable` (cordoned) and the pod does not tolerate it.
    #[error("node(s) were unschedulable")]
    Unschedulable,
    /// A NoSchedule or NoExecute taint the pod does not tolerate (the first one found).
    #[error("node(s) had untolerated taint {{{key}: {value}}}")]
    UntoleratedTaint { key: String, value: String },
    /// nodeSelector (the pod's or its RuntimeClass's) or required node affinity.
    #[error("node(s) didn't match Pod's node affinity/selector")]
    NodeAffinity,
    /// A host port the pod asks for is taken on the node (NodePorts).
    #[error("node(s) didn't have free ports for the requested pod ports")]
    NodePorts,
    /// The node lacks room: one reason per resource (`Too many pods`, `Insufficient cpu`).
    #[error("{}", .0.join(", "))]
    Insufficient(Vec<String>),
    /// A claim the pod mounts does not exist; no node can run it (a PreFilter failure).
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimNotFound(String),
    /// A volume the pod mounts is bound to other nodes (a local volume lives on one).
    #[error("node(s) had volume node affinity conflict")]
    VolumeNodeAffinity,
}

impl Unfit {
    /// The reasons as kube-scheduler counts them in its "0/N nodes are available" summary.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Unfit::Insufficient(r) => r.clone(),
            other => vec![other.to_string()],
        }
    }

    /// Whether evicting lower-priority pods could make room, which decides the wording of
    /// the preemption half of the message.
    pub fn resolvable_by_preemption(&self) -> bool {
        matches!(self, Unfit::Insufficient(_) | Unfit::NodePorts)
    }
}

/// What kube-scheduler assumes a container asks for when it requests nothing, for scoring
/// only: without it, pods that request nothing would all pile onto one node.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A pod's scheduling-relevant facts, parsed once per pod version.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodInfo {
    /// Requests for the filter: containers summed, init containers as their peak, overhead.
    pub requests: Resources,
    /// (millicores, bytes) for scoring, with defaults for containers that request nothing.
    pub nonzero: (i64, i64),
    /// Pods with the same key are spread across nodes.
    pub spread_key: Option<String>,
    /// The host ports its containers take: (protocol, host IP, port), `0.0.0.0` for all.
    pub host_ports: Vec<HostPort>,
}

/// A host port a container takes on its node.
pub(crate) type HostPort = (String, String, i32);

/// The host ports of `spec`'s containers and init containers (`hostPort` set), as
/// kube-scheduler's NodePorts plugin reads them.
fn host_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<HostPort> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port))
        })
        .collect()
}

impl PodInfo {
    pub fn new(pod: &Pod) -> PodInfo {
        let Some(spec) = pod.spec.as_ref() else {
            return PodInfo::default();
        };
        // Sidecars (init containers with restartPolicy Always) keep running next to the
        // app containers; plain init containers run one at a time before them.
        let mut sidecars = Resources::default();
        let mut init_peak = Resources::default();
        let (mut sidecar_cpu, mut sidecar_mem) = (0, 0);
        let mut init_nonzero = (0, 0);
        for c in spec.init_containers.iter().flatten() {
            let r = container_requests(c);
            let nz = nonzero(&r);
            if c.restart_policy.as_deref() == Some("Always") {
                sidecars.add(&r);
                sidecar_cpu += nz.0;
                sidecar_mem += nz.1;
            } else {
                let mut during = r;
                during.add(&sidecars);
                init_peak.max(&during);
                init_nonzero.0 = init_nonzero.0.max(nz.0 + sidecar_cpu);
                init_nonzero.1 = init_nonzero.1.max(nz.1 + sidecar_mem);
            }
        }
        let mut requests = sidecars;
        let mut app_nonzero = (sidecar_cpu, sidecar_mem);
        for c in &spec.containers {
            let r = container_requests(c);
            let nz = nonzero(&r);
            requests.add(&r);
            app_nonzero.0 += nz.0;
            app_nonzero.1 += nz.1;
        }
        requests.max(&init_peak);
        let overhead = Resources::from_map(spec.overhead.as_ref());
        requests.add(&overhead);
        let nonzero = (
            app_nonzero.0.max(init_nonzero.0) + overhead.get("cpu"),
            app_nonzero.1.max(init_nonzero.1) + overhead.get("memory"),
        );
        PodInfo {
            requests,
            nonzero,
            spread_key: spread_key(pod),
            host_ports: host_ports(spec),
        }
    }
}

/// A container's requests; a resource with only a limit requests its limit, as the API
/// server's defaulting does.
fn container_requests(c: &Container) -> Resources {
    let Some(res) = c.resources.as_ref() else {
        return Resources::default();
    };
    let mut out = Resources::from_map(res.limits.as_ref());
    for (k, v) in res.requests.iter().flatten() {
        out.0.insert(k.clone(), amount(k, v));
    }
    out
}

fn nonzero(r: &Resources) -> (i64, i64) {
    let cpu = r.0.get("cpu").copied().unwrap_or(DEFAULT_MILLI_CPU);
    let mem = r.0.get("memory").copied().unwrap_or(DEFAULT_MEMORY);
    (cpu, mem)
}

/// Pods of one controller (or, without one, with the same labels in one namespace) are
/// replicas of each other: spreading them is what survives a node failure.
fn spread_key(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        return Some(format!("owner:{}", owner.uid));
    }
    let labels = meta.labels.as_ref().filter(|l| !l.is_empty())?;
    let mut key = format!("labels:{}/", meta.namespace.as_deref().unwrap_or(""));
    for (k, v) in labels {
        key.push_str(k);
        key.push('=');
        key.push_str(v);
        key.push(',');
    }
    Some(key)
}

/// A node and the running sums of the pods on it (bound or assumed).
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeInfo {
    pub requested: Resources,
    pub nonzero: (i64, i64),
    pub pods: usize,
    pub spread: HashMap<String, usize>,
    /// Host ports taken by the pods on it, with how many pods take each.
    pub host_ports: HashMap<HostPort, usize>,
}

impl NodeInfo {
    pub fn add(&mut self, p: &PodInfo) {
        self.requested.add(&p.requests);
        self.nonzero.0 += p.nonzero.0;
        self.nonzero.1 += p.nonzero.1;
        self.pods += 1;
        if let Some(k) = &p.spread_key {
            *self.spread.entry(k.clone()).or_insert(0) += 1;
        }
        for hp in &p.host_ports {
            *self.host_ports.entry(hp.clone()).or_insert(0) += 1;
        }
    }

    /// Whether `wanted` clashes with a host port taken here: the same protocol and port
    /// on the same address, or on all addresses on either side.
    fn port_taken(&self, wanted: &HostPort) -> bool {
        let (proto, ip, port) = wanted;
        self.host_ports.keys().any(|(p, i, n)| {
            p == proto && n == port && (i == ip || i == "0.0.0.0" || ip == "0.0.0.0")
        })
    }

    pub fn remove(&mut self, p: &PodInfo) {
        self.requested.sub(&p.requests);
        self.nonzero.0 -= p.nonzero.0;
        self.nonzero.1 -= p.nonzero.1;
        self.pods = self.pods.saturating_sub(1);
        if let Some(k) = &p.spread_key
            && let Some(n) = self.spread.get_mut(k)
        {
            *n -= 1;
            if *n == 0 {
                self.spread.remove(k);
            }
        }
        for hp in &p.host_ports {
            if let Some(n) = self.host_ports.get_mut(hp) {
                *n -= 1;
                if *n == 0 {
                    self.host_ports.remove(hp);
                }
            }
        }
    }

    fn of(pods: &[&Pod]) -> NodeInfo {
        let mut info = NodeInfo::default();
        for p in pods {
            info.add(&PodInfo::new(p));
        }
        info
    }
}

/// Whether `pod` may run on `node` next to `pods_on_node` (pods bound to it that have not
/// finished). `runtime_class` is the RuntimeClass the pod names, looked up by the caller:
/// `None` for a pod that names one means it does not exist.
pub fn feasible(
    pod: &Pod,
    node: &Node,
    pods_on_node: &[&Pod],
    runtime_class: Option<&RuntimeClass>,
) -> Result<(), Unfit> {
    let requirements = Requirements::new(pod, runtime_class)?;
    feasible_on(
        pod,
        &requirements,
        &PodInfo::new(pod),
        node,
        &NodeInfo::of(pods_on_node),
    )
}

/// Where a DaemonSet's pod belongs (kube's `NodeShouldRunDaemonPod`), by the same filters
/// the scheduler applies: its node name, node selector and required node affinity, and
/// the node's taints. Returns whether it should run on `node`, and whether one already
/// there should keep running (only an untolerated NoExecute taint evicts it).
pub fn daemon_fits(pod: &Pod, node: &Node) -> (bool, bool) {
    let spec = pod.spec.as_ref();
    if let Some(name) = spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
        && Some(name) != node.metadata.name.as_deref()
    {
        return (false, false);
    }
    let labels = node.metadata.labels.as_ref();
    let selector_fits = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        });
    let affinity_fits = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if !selector_fits || !affinity_fits {
        return (false, false);
    }
    let tolerations: Vec<&Toleration> = spec
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let mut fits = (true, true);
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
    {
        if tolerations.iter().any(|t| tolerates(t, taint)) {
            continue;
        }
        match taint.effect.as_str() {
            "NoExecute" => return (false, false),
            "NoSchedule" => fits.0 = false,
            _ => {}
        }
    }
    fits
}

/// How well `node` suits `pod`, higher is better, in thousandths of kube-scheduler's
/// points: preferred node affinity (weight 2), PreferNoSchedule taints (3), least
/// allocated and balanced cpu/memory (1 each), spreading replicas (2). Only meaningful
/// between nodes that passed [`feasible`] for the same pod.
pub fn score(pod: &Pod, node: &Node, pods_on_node: &[&Pod]) -> i64 {
    score_on(pod, &PodInfo::new(pod), node, &NodeInfo::of(pods_on_node))
}

/// The pod's placement constraints with its RuntimeClass's merged in.
pub(crate) struct Requirements<'a> {
    tolerations: Vec<&'a Toleration>,
    selectors: Vec<&'a BTreeMap<String, String>>,
}

impl<'a> Requirements<'a> {
    /// The PreFilter step: fails for every node alike when the RuntimeClass is missing.
    pub fn new(
        pod: &'a Pod,
        runtime_class: Option<&'a RuntimeClass>,
    ) -> Result<Requirements<'a>, Unfit> {
        let spec = pod.spec.as_ref();
        let mut tolerations: Vec<&Toleration> = spec
            .and_then(|s| s.tolerations.as_ref())
            .into_iter()
            .flatten()
            .collect();
        let mut selectors: Vec<&BTreeMap<String, String>> = spec
            .and_then(|s| s.node_selector.as_ref())
            .into_iter()
            .collect();
        if let Some(name) = spec
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            let rc = runtime_class.ok_or_else(|| Unfit::RuntimeClassNotFound(name.into()))?;
            if let Some(s) = rc.scheduling.as_ref() {
                tolerations.extend(s.tolerations.iter().flatten());
                selectors.extend(s.node_selector.as_ref());
            }
        }
        Ok(Requirements {
            tolerations,
            selectors,
        })
    }
}

/// The filters in kube-scheduler's order; the first that fails names the reason.
pub(crate) fn feasible_on(
    pod: &Pod,
    req: &Requirements,
    info: &PodInfo,
    node: &Node,
    on_node: &NodeInfo,
) -> Result<(), Unfit> {
    let spec = node.spec.as_ref();
    // NodeUnschedulable: a cordoned node takes only pods that tolerate the cordon.
    if spec.and_then(|s| s.unschedulable) == Some(true) {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !req.tolerations.iter().any(|t| tolerates(t, &cordon)) {
            return Err(Unfit::Unschedulable);
        }
    }
    // TaintToleration. A node whose Ready condition is not True counts as tainted
    // not-ready (or unreachable when Unknown), as Kubernetes' node lifecycle controller
    // taints it: pods that tolerate that (DaemonSet-like agents) may still go there.
    let readiness = readiness_taint(node);
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .chain(readiness.as_ref());
    for taint in taints {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !req.tolerations.iter().any(|t| tolerates(t, taint))
        {
            return Err(Unfit::UntoleratedTaint {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
            });
        }
    }
    // NodeAffinity: every nodeSelector, and one of the required terms.
    let labels = node.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let selectors_match = req
        .selectors
        .iter()
        .all(|sel| sel.iter().all(|(k, v)| label(k) == Some(v.as_str())));
    let required = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_matches = required.is_none_or(|r| {
        r.node_selector_terms
            .iter()
            .any(|term| term_matches(term, node))
    });
    if !selectors_match || !affinity_matches {
        return Err(Unfit::NodeAffinity);
    }
    // NodePorts: a host port taken on the node by another pod.
    if info.host_ports.iter().any(|hp| on_node.port_taken(hp)) {
        return Err(Unfit::NodePorts);
    }
    // NodeResourcesFit against allocatable.
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let alloc = |name: &str| {
        allocatable
            .and_then(|a| a.get(name))
            .map(|q| amount(name, q))
            .unwrap_or(0)
    };
    let mut short = Vec::new();
    if on_node.pods as i64 + 1 > alloc("pods") {
        short.push("Too many pods".to_string());
    }
    // cpu, memory and ephemeral storage first, then extended resources, by name.
    let mut names: Vec<&String> = info.requests.0.keys().collect();
    let rank = |n: &str| match n {
        "cpu" => 0,
        "memory" => 1,
        "ephemeral-storage" => 2,
        _ => 3,
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    for name in names {
        let want = info.requests.get(name);
        if want > 0 && want > alloc(name) - on_node.requested.get(name) {
            short.push(format!("Insufficient {name}"));
        }
    }
    if !short.is_empty() {
        return Err(Unfit::Insufficient(short));
    }
    Ok(())
}

pub(crate) fn score_on(pod: &Pod, info: &PodInfo, node: &Node, on_node: &NodeInfo) -> i64 {
    let spec = pod.spec.as_ref();
    // Preferred node affinity: the weights of the terms the node matches.
    let preferred: i64 = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum();
    // PreferNoSchedule taints the pod does not tolerate.
    let tolerations: Vec<&Toleration> = spec
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    let soft_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerations.iter().any(|o| tolerates(o, t)))
        .count() as i64;
    // Least allocated and balanced, on cpu and memory with the pod added.
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let alloc = |name: &str| {
        allocatable
            .and_then(|a| a.get(name))
            .map(|q| amount(name, q))
            .unwrap_or(0)
    };
    let fraction = |used: i64, total: i64| -> Option<f64> {
        (total > 0).then(|| (used as f64 / total as f64).min(1.0))
    };
    let cpu = fraction(on_node.nonzero.0 + info.nonzero.0, alloc("cpu"));
    let mem = fraction(on_node.nonzero.1 + info.nonzero.1, alloc("memory"));
    let least_allocated = (cpu.map_or(0.0, |f| 1.0 - f) + mem.map_or(0.0, |f| 1.0 - f)) / 2.0;
    let balanced = match (cpu, mem) {
        (Some(c), Some(m)) => 1.0 - (c - m).abs() / 2.0,
        _ => 0.0,
    };
    // Spreading: fewer replicas of the pod already on the node is better. The curve is
    // bounded, as kube-scheduler's normalized score is, so that a strong affinity
    // preference still wins over a few replicas, and stays strictly decreasing.
    let replicas = info
        .spread_key
        .as_ref()
        .and_then(|k| on_node.spread.get(k))
        .copied()
        .unwrap_or(0) as i64;
    2 * 1000 * preferred - 3 * 100_000 * soft_taints
        + (least_allocated * 100_000.0) as i64
        + (balanced * 100_000.0) as i64
        - 2 * 100_000 * replicas / (replicas + 10)
}

/// kube-scheduler's FailedScheduling message: how many nodes failed for each reason, then
/// what preemption could do about it (Skiff does not preempt, and pods of equal priority
/// are never victims):
/// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node
/// affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found
/// for incoming pod, 2 Preemption is not helpful for scheduling.`
/// `unfit` holds one entry per node, or the one PreFilter failure that applies to all.
pub(crate) fn unschedulable_message(nodes: usize, unfit: &[Unfit]) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let histogram = |items: Vec<String>| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in items {
            *counts.entry(i).or_insert(0) += 1;
        }
        let mut out: Vec<String> = counts
            .into_iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        out.sort();
        out.join(", ")
    };
    let not_helpful = "Preemption is not helpful for scheduling";
    let (filters, preemption) = match unfit {
        [
            prefilter @ (Unfit::RuntimeClassNotFound(_) | Unfit::ClaimNotFound(_)),
            ..,
        ] => (
            prefilter.to_string(),
            histogram(vec![not_helpful.into(); nodes]),
        ),
        _ => (
            histogram(unfit.iter().flat_map(Unfit::reasons).collect()),
            histogram(
                unfit
                    .iter()
                    .map(|u| {
                        if u.resolvable_by_preemption() {
                            "No preemption victims found for incoming pod".into()
                        } else {
                            not_helpful.into()
                        }
                    })
                    .collect(),
            ),
        ),
    };
    format!(
        "0/{nodes} nodes are available: {filters}. preemption: 0/{nodes} nodes are available: {preemption}."
    )
}

/// The taint Kubernetes' node lifecycle controller puts on a node that is not Ready, unless
/// the node already carries it.
fn readiness_taint(node: &Node) -> Option<Taint> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let key = match ready {
        Some("True") => return None,
        Some("Unknown") => "node.kubernetes.io/unreachable",
        _ => "node.kubernetes.io/not-ready",
    };
    let present = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key && t.effect == "NoSchedule"));
    (!present).then(|| Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    })
}

/// Toleration matching as in `v1.Toleration.ToleratesTaint`: an empty effect matches every
/// effect, an empty key with `Exists` matches every taint.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref()
        && !key.is_empty()
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// Whether every bound volume in `volumes` may be used on `node` (its PersistentVolume's
/// required node affinity, kube's VolumeBinding filter for bound claims).
pub fn volumes_fit(volumes: &[&k8s_openapi::api::core::v1::PersistentVolume], node: &Node) -> bool {
    volumes.iter().all(|pv| {
        pv.spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
    })
}

/// A node selector term matches when all its expressions and fields do; an empty term
/// matches nothing.
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            // metadata.name is the only field Kubernetes allows here.
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(number), values) else {
                return false;
            };
            let Some(want) = number(want) else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
