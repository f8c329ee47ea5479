//! Service cluster IPs and node ports: kube-apiserver's service allocators.
//!
//! A ClusterIP comes from the service range (`--service-cluster-ip-range`, Kubernetes'
//! default 10.96.0.0/12) and a NodePort from the node port range
//! (`--service-node-port-range`, 30000-32767). As with pod CIDRs (`ipam`), each value a
//! Service holds is a reservation key in the store naming its holder
//! (`/skiff/ipam/services/ips/<ip>`, `/skiff/ipam/services/nodeports/<port>`): a create
//! fails if the key exists, so concurrent creates, on one API server or several sharing an
//! etcd, never hand out one value twice. A value asked for by name is refused when it lies
//! outside the range or another Service holds it (422, the field named, kube-apiserver's
//! messages); a value left empty is picked at random, addresses from the upper part of the
//! range first, leaving the lower part to addresses people choose (Kubernetes' static
//! subrange: 16 to 256 addresses). The first address is the `kubernetes` Service's.
//!
//! Reservations go when their Service is deleted or stops holding them (a type change to
//! ClusterIP gives back node ports; to ExternalName, the IP), and only the holder named in
//! the key can give one back. A server that dies between a reservation and the write (or
//! a delete and the release) leaves a reservation no Service holds: [`repair`] finds those,
//! and deletes one once it has seen it unheld twice in a row (a create in flight holds its
//! reservation for milliseconds; the passes are a minute apart), and reserves what stored
//! Services hold without a key (a store restored from a backup), as kube-apiserver's
//! repair loops do.
//!
//! Kubernetes 1.33 keeps these as `IPAddress` API objects (networking.k8s.io/v1); Skiff
//! keeps them outside `/registry/`, as it keeps pod CIDRs, so no watch or client sees them.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use rand::Rng;
use serde_json::{Value, json};
use skiff_apimachinery::FieldError;
use skiff_store::{ListOptions, Store};

use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
pub const NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

const IPS: &str = "/skiff/ipam/services/ips/";
const PORTS: &str = "/skiff/ipam/services/nodeports/";

/// Where Services take their values from.
#[derive(Debug, Clone)]
pub struct Ranges {
    pub cidr: (Ipv4Addr, u8),
    pub node_ports: RangeInclusive<u16>,
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges {
            cidr: SERVICE_CIDR,
            node_ports: NODE_PORTS,
        }
    }
}

impl Ranges {
    /// The first and last usable address (the network and broadcast addresses are not).
    fn usable(&self) -> (u32, u32) {
        let base = u32::from(self.cidr.0);
        let size = 1u64 << (32 - u32::from(self.cidr.1));
        let last = (u64::from(base) + size - 1) as u32;
        if size <= 2 {
            (base, last)
        } else {
            (base + 1, last - 1)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.usable();
        (first..=last).contains(&u32::from(ip))
    }

    /// The `kubernetes` Service's address: the range's first.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.usable().0)
    }

    fn cidr_text(&self) -> String {
        format!("{}/{}", self.cidr.0, self.cidr.1)
    }

    fn ports_text(&self) -> String {
        format!("{}-{}", self.node_ports.start(), self.node_ports.end())
    }

    /// Kubernetes' static subrange: the lower part of the range is taken by dynamic
    /// allocation only once the upper part is full.
    fn static_band(&self) -> u32 {
        let (first, last) = self.usable();
        let size = last - first + 1;
        (size / 16).clamp(16, 256).min(size / 2)
    }
}

/// One value a Service holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Held {
    Ip(Ipv4Addr),
    Port(u16),
}

impl Held {
    fn key(self) -> String {
        match self {
            Held::Ip(ip) => format!("{IPS}{ip}"),
            Held::Port(p) => format!("{PORTS}{p}"),
        }
    }

    fn from_key(key: &str) -> Option<Held> {
        if let Some(ip) = key.strip_prefix(IPS) {
            return ip.parse().ok().map(Held::Ip);
        }
        key.strip_prefix(PORTS)?.parse().ok().map(Held::Port)
    }
}

fn spec_str<'a>(svc: &'a Value, field: &str) -> &'a str {
    svc.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn uid(svc: &Value) -> &str {
    crate::object::meta_str(svc, "uid").unwrap_or("")
}

/// The cluster IPs and node ports (health check's included) `svc` holds.
pub fn holdings(svc: &Value) -> HashSet<Held> {
    let mut out = HashSet::new();
    if spec_str(svc, "type") != "ExternalName" {
        let ips = svc.pointer("/spec/clusterIPs").and_then(Value::as_array);
        for ip in ips.into_iter().flatten().filter_map(Value::as_str) {
            if let Ok(ip) = ip.parse() {
                out.insert(Held::Ip(ip));
            }
        }
        if let Ok(ip) = spec_str(svc, "clusterIP").parse() {
            out.insert(Held::Ip(ip));
        }
    }
    let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
    for p in ports.into_iter().flatten() {
        if let Some(n) = p.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0) {
            out.insert(Held::Port(n as u16));
        }
    }
    if let Some(n) = svc
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
    {
        out.insert(Held::Port(n as u16));
    }
    out
}

/// What a reservation names: the holder's uid, and where it lives for people reading the
/// store.
fn holder_value(svc: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "uid": uid(svc),
        "namespace": crate::object::meta_str(svc, "namespace").unwrap_or(""),
        "name": crate::object::name(svc),
    }))
    .expect("JSON")
}

fn holder_uid(value: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(value)
        .ok()?
        .get("uid")?
        .as_str()
        .map(str::to_string)
}

/// The normal form kube-apiserver gives `clusterIP` and `clusterIPs` before validation:
/// either one fills the other; an ExternalName Service has neither.
pub fn normalize(svc: &mut Value) {
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ips_empty = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    if !ip.is_empty() && ips_empty {
        spec.insert("clusterIPs".into(), json!([ip]));
    } else if ip.is_empty()
        && let Some(first) = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
    {
        spec.insert("clusterIP".into(), json!(first));
    }
}

/// On update, what kube-apiserver's service storage does before validation: values the
/// stored Service holds and the new form leaves empty are kept (a PUT of a manifest that
/// names no clusterIP or nodePort keeps them), and what the new type cannot have is
/// dropped (node ports when it becomes ClusterIP, the IP when it becomes ExternalName),
/// unless the client changed it, so that validation names a real conflict.
pub fn prepare_for_update(old: &Value, new: &mut Value) {
    let empty = json!({});
    let old_spec = old.get("spec").unwrap_or(&empty).clone();
    let old_ty = old_spec.get("type").and_then(Value::as_str).unwrap_or("");
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let blank = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    // Kept: the IP while neither form is ExternalName.
    if ty != "ExternalName" && old_ty != "ExternalName" {
        for f in ["clusterIP", "clusterIPs"] {
            if blank(spec.get(f))
                && let Some(v) = old_spec.get(f)
            {
                spec.insert(f.into(), v.clone());
            }
        }
    }
    let needs_ports = |t: &str| t == "NodePort" || t == "LoadBalancer";
    let old_ports: Vec<Value> = old_spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
    if needs_ports(&ty) && needs_ports(old_ty) {
        // Kept: a port's node port, matched by port number and protocol.
        for p in ports.into_iter().flatten() {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(n) = same
                .and_then(|o| o.get("nodePort"))
                .filter(|n| !n.is_null())
            {
                p["nodePort"] = n.clone();
            }
        }
    } else if !needs_ports(&ty) && needs_ports(old_ty) {
        // Dropped: node ports the client left as they were.
        for p in ports.into_iter().flatten() {
            let unchanged = old_ports
                .iter()
                .any(|o| o.get("port") == p.get("port") && o.get("nodePort") == p.get("nodePort"));
            if unchanged && let Some(p) = p.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
    let local = |s: &serde_json::Map<String, Value>| {
        s.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
    };
    let old_needs_hc = old_ty == "LoadBalancer"
        && old_spec
            .get("externalTrafficPolicy")
            .and_then(Value::as_str)
            == Some("Local");
    let needs_hc = ty == "LoadBalancer" && local(spec);
    if needs_hc && old_needs_hc && blank(spec.get("healthCheckNodePort")) {
        if let Some(v) = old_spec.get("healthCheckNodePort") {
            spec.insert("healthCheckNodePort".into(), v.clone());
        }
    } else if !needs_hc
        && old_needs_hc
        && spec.get("healthCheckNodePort") == old_spec.get("healthCheckNodePort")
    {
        spec.remove("healthCheckNodePort");
    }
    let external = |t: &str, s: &Value| {
        needs_ports(t)
            || s.get("externalIPs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
    };
    let now_external = external(&ty, &Value::Object(spec.clone()));
    if !now_external
        && external(old_ty, &old_spec)
        && spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy")
    {
        spec.remove("externalTrafficPolicy");
    }
    if ty != "LoadBalancer" && old_ty == "LoadBalancer" {
        for f in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if spec.get(f) == old_spec.get(f) {
                spec.remove(f);
            }
        }
    }
    if ty == "ExternalName" && old_ty != "ExternalName" {
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if spec.get(f) == old_spec.get(f) {
                spec.remove(f);
            }
        }
    }
}

/// Fills in and reserves what `new` needs and `old` (the stored form, on update) does not
/// hold yet: its cluster IP and node ports. Returns what it reserved, for the caller to
/// give back if the write fails. With `dry_run` nothing is reserved: values asked for are
/// checked, free ones picked.
pub async fn assign(
    store: &dyn Store,
    ranges: &Ranges,
    resource: &Resource,
    old: Option<&Value>,
    new: &mut Value,
    dry_run: bool,
) -> ApiResult<Vec<Held>> {
    let mut a = Assigner {
        store,
        ranges,
        dry_run,
        held: old.map(holdings).unwrap_or_default(),
        holder: holder_value(new),
        taken: Vec::new(),
    };
    match a.run(new).await {
        Ok(()) => Ok(a.taken),
        Err(e) => {
            let e = match e {
                Refused::Field(f) => ApiError::invalid(resource, crate::object::name(new), &[f]),
                Refused::Api(e) => e,
            };
            release(store, a.taken, uid(new)).await;
            Err(e)
        }
    }
}

enum Refused {
    Field(FieldError),
    Api(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Api(e)
    }
}

impl From<skiff_store::Error> for Refused {
    fn from(e: skiff_store::Error) -> Self {
        Refused::Api(e.into())
    }
}

struct Assigner<'a> {
    store: &'a dyn Store,
    ranges: &'a Ranges,
    dry_run: bool,
    /// What the stored form holds already.
    held: HashSet<Held>,
    holder: Vec<u8>,
    taken: Vec<Held>,
}

impl Assigner<'_> {
    async fn run(&mut self, svc: &mut Value) -> Result<(), Refused> {
        let ty = spec_str(svc, "type").to_string();
        if ty != "ExternalName" {
            let ip = spec_str(svc, "clusterIP").to_string();
            if ip.is_empty() {
                let ip = self.next_ip().await?;
                svc["spec"]["clusterIP"] = json!(ip.to_string());
                svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
            } else if ip != "None" {
                self.asked_ip(&ip, svc).await?;
            }
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let allocate = ty == "NodePort"
                || svc
                    .pointer("/spec/allocateLoadBalancerNodePorts")
                    .and_then(Value::as_bool)
                    != Some(false);
            self.node_ports(svc, allocate).await?;
        }
        let local = spec_str(svc, "externalTrafficPolicy") == "Local";
        if ty == "LoadBalancer" && local {
            let hc = svc
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if hc == 0 {
                let port = self.next_port().await?;
                svc["spec"]["healthCheckNodePort"] = json!(port);
            } else {
                self.asked_port(hc as i64, "spec.healthCheckNodePort")
                    .await?;
            }
        }
        Ok(())
    }

    async fn asked_ip(&mut self, ip: &str, svc: &Value) -> Result<(), Refused> {
        let listed = svc
            .pointer("/spec/clusterIPs")
            .cloned()
            .unwrap_or_else(|| json!([ip]));
        let refuse = |why: String| {
            Refused::Field(FieldError::invalid(
                "spec.clusterIPs",
                listed.clone(),
                format!("failed to allocate IP {ip}: {why}"),
            ))
        };
        let Ok(addr) = ip.parse::<Ipv4Addr>() else {
            // Validation has checked the syntax: this is an IPv6 address.
            return Err(Refused::Field(FieldError::invalid(
                "spec.clusterIPs[0]",
                listed.clone(),
                "IPv6 is not configured on this cluster",
            )));
        };
        if self.held.contains(&Held::Ip(addr)) {
            return Ok(());
        }
        if !self.ranges.contains(addr) {
            return Err(refuse(format!(
                "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                self.ranges.cidr_text()
            )));
        }
        if !self.take(Held::Ip(addr)).await? {
            return Err(refuse("provided IP is already allocated".into()));
        }
        Ok(())
    }

    async fn asked_port(&mut self, port: i64, field: &str) -> Result<(), Refused> {
        let refuse = |why: String| Refused::Field(FieldError::invalid(field, json!(port), why));
        let in_range = u16::try_from(port)
            .ok()
            .filter(|p| self.ranges.node_ports.contains(p));
        let Some(p) = in_range else {
            return Err(refuse(format!(
                "provided port is not in the valid range. The range of valid ports is {}",
                self.ranges.ports_text()
            )));
        };
        if self.held.contains(&Held::Port(p)) || self.taken.contains(&Held::Port(p)) {
            return Ok(());
        }
        if !self.take(Held::Port(p)).await? {
            return Err(refuse("provided port is already allocated".into()));
        }
        Ok(())
    }

    /// Node ports for every port of the Service (all when `allocate`, else only those asked
    /// for); ports with the same number (TCP and UDP of one port) share one, as on
    /// Kubernetes.
    async fn node_ports(&mut self, svc: &mut Value, allocate: bool) -> Result<(), Refused> {
        let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        let mut by_port: HashMap<i64, i64> = HashMap::new();
        for p in ports.iter() {
            let n = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if n != 0 {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                by_port.entry(port).or_insert(n);
            }
        }
        for (i, p) in ports.iter_mut().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let n = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if n != 0 {
                self.asked_port(n, &format!("spec.ports[{i}].nodePort"))
                    .await?;
                continue;
            }
            if !allocate {
                continue;
            }
            let n = match by_port.get(&port) {
                Some(n) => *n,
                None => {
                    let n = i64::from(self.next_port().await?);
                    by_port.insert(port, n);
                    n
                }
            };
            p["nodePort"] = json!(n);
        }
        Ok(())
    }

    /// Reserves `h` for this Service; false if someone else holds it.
    async fn take(&mut self, h: Held) -> Result<bool, Refused> {
        if self.dry_run {
            return Ok(self.store.get(&h.key()).await?.is_none());
        }
        match self
            .store
            .create(&h.key(), self.holder.clone().into())
            .await
        {
            Ok(_) => {
                self.taken.push(h);
                Ok(true)
            }
            Err(skiff_store::Error::AlreadyExists) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn next_ip(&mut self) -> Result<Ipv4Addr, Refused> {
        let (first, last) = self.ranges.usable();
        let band = self.ranges.static_band();
        let upper = (first + band)..=last;
        for _ in 0..16 {
            let ip = Ipv4Addr::from(rand::rng().random_range(upper.clone()));
            if self.take(Held::Ip(ip)).await? {
                return Ok(ip);
            }
        }
        // Crowded: look at what is held, upper part first, then the lower.
        let held = self.reserved(IPS).await?;
        for part in [upper, first..=(first + band - 1)] {
            let start = rand::rng().random_range(part.clone());
            let candidates = (start..=*part.end()).chain(*part.start()..start);
            for n in candidates {
                let h = Held::Ip(Ipv4Addr::from(n));
                if !held.contains(&h) && self.take(h).await? {
                    return Ok(Ipv4Addr::from(n));
                }
            }
        }
        Err(Refused::Api(ApiError::internal(format!(
            "failed to allocate a serviceIP: range is full ({})",
            self.ranges.cidr_text()
        ))))
    }

    async fn next_port(&mut self) -> Result<u16, Refused> {
        let range = self.ranges.node_ports.clone();
        for _ in 0..8 {
            let p = rand::rng().random_range(range.clone());
            if !self.taken.contains(&Held::Port(p)) && self.take(Held::Port(p)).await? {
                return Ok(p);
            }
        }
        let held = self.reserved(PORTS).await?;
        let start = rand::rng().random_range(range.clone());
        for p in (start..=*range.end()).chain(*range.start()..start) {
            let h = Held::Port(p);
            if !held.contains(&h) && !self.taken.contains(&h) && self.take(h).await? {
                return Ok(p);
            }
        }
        Err(Refused::Api(ApiError::internal(format!(
            "failed to allocate a nodePort: range is full ({})",
            self.ranges.ports_text()
        ))))
    }

    async fn reserved(&self, prefix: &str) -> Result<HashSet<Held>, Refused> {
        let listed = self.store.list(prefix, ListOptions::default()).await?;
        Ok(listed
            .items
            .iter()
            .filter_map(|kv| Held::from_key(&kv.key))
            .collect())
    }
}

/// Gives back `held`, each only if the Service with `uid` holds its reservation.
pub async fn release(store: &dyn Store, held: impl IntoIterator<Item = Held>, uid: &str) {
    for h in held {
        let key = h.key();
        let kv = match store.get(&key).await {
            Ok(Some(kv)) if holder_uid(&kv.value).as_deref() == Some(uid) => kv,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(key, "releasing a service reservation: {e}");
                continue;
            }
        };
        match store.delete(&key, Some(kv.mod_revision)).await {
            Ok(_) | Err(skiff_store::Error::NotFound | skiff_store::Error::Conflict { .. }) => {}
            Err(e) => tracing::warn!(key, "releasing a service reservation: {e}"),
        }
    }
}

/// After an update: what `old` held and `new` does not.
pub async fn release_dropped(store: &dyn Store, old: &Value, new: &Value) {
    let kept = holdings(new);
    let gone: Vec<Held> = holdings(old).difference(&kept).copied().collect();
    release(store, gone, uid(old)).await;
}

/// After a delete (or a failed create): everything `svc` held.
pub async fn release_all(store: &dyn Store, svc: &Value) {
    release(store, holdings(svc), uid(svc)).await;
}

/// Reserves what `svc`, written by the server itself (the `kubernetes` Service), holds.
pub async fn record(store: &dyn Store, svc: &Value) -> skiff_store::Result<()> {
    for h in holdings(svc) {
        match store.create(&h.key(), holder_value(svc).into()).await {
            Ok(_) | Err(skiff_store::Error::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One pass of the repair loop. `suspects` carries, from one pass to the next, the
/// reservations found with no holder (key and revision): one still unheld and unchanged
/// in the next pass is deleted. Also reserves values stored Services hold without a key.
pub async fn repair(
    store: &dyn Store,
    suspects: &mut HashSet<(String, i64)>,
) -> skiff_store::Result<()> {
    let services = store
        .list("/registry/core/services/", ListOptions::default())
        .await?;
    let mut holders: HashMap<Held, (String, Vec<u8>)> = HashMap::new();
    for kv in &services.items {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        for h in holdings(&svc) {
            holders
                .entry(h)
                .or_insert_with(|| (uid(&svc).to_string(), holder_value(&svc)));
        }
    }
    let mut reserved: HashSet<Held> = HashSet::new();
    let mut next = HashSet::new();
    for prefix in [IPS, PORTS] {
        for kv in store.list(prefix, ListOptions::default()).await?.items {
            let Some(h) = Held::from_key(&kv.key) else {
                continue;
            };
            reserved.insert(h);
            let owner = holder_uid(&kv.value);
            if holders.get(&h).map(|(u, _)| u) == owner.as_ref() {
                continue;
            }
            let id = (kv.key.clone(), kv.mod_revision);
            if suspects.contains(&id) {
                tracing::info!(
                    key = kv.key,
                    "releasing a service reservation no Service holds"
                );
                match store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_)
                    | Err(skiff_store::Error::NotFound | skiff_store::Error::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else {
                next.insert(id);
            }
        }
    }
    *suspects = next;
    for (h, (_, value)) in holders {
        if reserved.contains(&h) {
            continue;
        }
        match store.create(&h.key(), value.into()).await {
            Ok(_) => tracing::info!(key = h.key(), "reserved a value a Service held unrecorded"),
            Err(skiff_store::Error::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(skiff_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        (dir, store)
    }

    fn services() -> &'static Resource {
        crate::registry::find("", "v1", "services").unwrap()
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
               "spec": spec})
    }

    #[test]
    fn ranges() {
        let r = Ranges::default();
        assert_eq!(r.kubernetes_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!r.contains(Ipv4Addr::new(10, 96, 0, 0)));
        assert!(!r.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!(r.static_band(), 256);
        let small = Ranges {
            cidr: (Ipv4Addr::new(10, 0, 0, 0), 28),
            node_ports: NODE_PORTS,
        };
        assert_eq!(small.usable(), (0x0a00_0001, 0x0a00_000e));
        assert_eq!(small.static_band(), 7);
    }

    /// A small range fills up exactly: every address handed out once, then a clear error.
    #[tokio::test]
    async fn a_small_range_is_used_whole_without_duplicates() {
        let (_d, store) = store();
        let ranges = Ranges {
            cidr: (Ipv4Addr::new(10, 0, 0, 0), 28),
            node_ports: 30000..=30003,
        };
        let mut seen = HashSet::new();
        for i in 0..14 {
            let mut s = svc(&format!("s{i}"), json!({"type": "ClusterIP"}));
            assign(&*store, &ranges, services(), None, &mut s, false)
                .await
                .unwrap();
            assert!(seen.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string()));
        }
        let mut s = svc("full", json!({"type": "ClusterIP"}));
        let e = assign(&*store, &ranges, services(), None, &mut s, false)
            .await
            .unwrap_err();
        assert!(format!("{e:?}").contains("range is full"), "{e:?}");
    }

    #[tokio::test]
    async fn asked_values_are_checked_and_released_on_failure() {
        let (_d, store) = store();
        let r = Ranges::default();
        let mut a = svc(
            "a",
            json!({"type": "NodePort", "clusterIP": "10.96.0.10",
                   "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                             {"port": 80, "protocol": "UDP"},
                             {"port": 81, "protocol": "TCP"}]}),
        );
        normalize(&mut a);
        assign(&*store, &r, services(), None, &mut a, false)
            .await
            .unwrap();
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(a["spec"]["ports"][1]["nodePort"], 30080);
        let n81 = a["spec"]["ports"][2]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&n81) && n81 != 30080);

        // Taken IP; taken port (after a fresh IP was reserved: it goes back).
        let mut b = svc("b", json!({"clusterIP": "10.96.0.10", "type": "ClusterIP"}));
        normalize(&mut b);
        let e = assign(&*store, &r, services(), None, &mut b, false)
            .await
            .unwrap_err();
        let msg = format!("{e:?}");
        assert!(
            msg.contains("failed to allocate IP 10.96.0.10: provided IP is already allocated"),
            "{msg}"
        );
        let mut c = svc(
            "c",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let e = assign(&*store, &r, services(), None, &mut c, false)
            .await
            .unwrap_err();
        assert!(format!("{e:?}").contains("spec.ports[0].nodePort"), "{e:?}");
        let held_ips = store.list(IPS, ListOptions::default()).await.unwrap();
        assert_eq!(held_ips.items.len(), 1, "c's IP went back");
        // Out of range.
        let mut d = svc("d", json!({"clusterIP": "10.0.0.5", "type": "ClusterIP"}));
        let e = assign(&*store, &r, services(), None, &mut d, false)
            .await
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("The range of valid IPs is 10.96.0.0/12"),
            "{e:?}"
        );
        let mut f = svc(
            "f",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}),
        );
        let e = assign(&*store, &r, services(), None, &mut f, false)
            .await
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("The range of valid ports is 30000-32767"),
            "{e:?}"
        );

        // Released with the holder only.
        release_all(&*store, &svc("a", a["spec"].clone())).await;
        assert!(
            store
                .list(PORTS, ListOptions::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[tokio::test]
    async fn type_changes_keep_and_drop_what_they_should() {
        let (_d, store) = store();
        let r = Ranges::default();
        let mut np = svc(
            "np",
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}),
        );
        assign(&*store, &r, services(), None, &mut np, false)
            .await
            .unwrap();
        // A PUT naming neither keeps both.
        let mut put = svc(
            "np",
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}),
        );
        prepare_for_update(&np, &mut put);
        assert_eq!(put["spec"]["clusterIP"], np["spec"]["clusterIP"]);
        assert_eq!(
            put["spec"]["ports"][0]["nodePort"],
            np["spec"]["ports"][0]["nodePort"]
        );
        // To ClusterIP: the node port goes, the IP stays.
        let mut cip = np.clone();
        cip["spec"]["type"] = json!("ClusterIP");
        prepare_for_update(&np, &mut cip);
        assert!(cip["spec"]["ports"][0].get("nodePort").is_none());
        assign(&*store, &r, services(), Some(&np), &mut cip, false)
            .await
            .unwrap();
        release_dropped(&*store, &np, &cip).await;
        assert!(
            store
                .list(PORTS, ListOptions::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert_eq!(
            store
                .list(IPS, ListOptions::default())
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        // To ExternalName: the IP goes too.
        let mut ext = cip.clone();
        ext["spec"]["type"] = json!("ExternalName");
        ext["spec"]["externalName"] = json!("example.com");
        prepare_for_update(&cip, &mut ext);
        assert!(ext["spec"].get("clusterIP").is_none());
        release_dropped(&*store, &cip, &ext).await;
        assert!(
            store
                .list(IPS, ListOptions::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[tokio::test]
    async fn concurrent_creates_never_share_a_value() {
        let (_d, store) = store();
        let r = Ranges {
            cidr: (Ipv4Addr::new(10, 0, 0, 0), 26),
            node_ports: 30000..=30079,
        };
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let (store, r) = (store.clone(), r.clone());
                tokio::spawn(async move {
                    let mut s = svc(
                        &format!("s{i}"),
                        json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}),
                    );
                    assign(&*store, &r, services(), None, &mut s, false)
                        .await
                        .unwrap();
                    s
                })
            })
            .collect();
        let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
        for t in tasks {
            let s = t.await.unwrap();
            assert!(ips.insert(s["spec"]["clusterIP"].clone()));
            assert!(ports.insert(s["spec"]["ports"][0]["nodePort"].clone()));
        }
    }

    #[tokio::test]
    async fn repair_frees_leaks_on_the_second_pass_and_records_unrecorded_values() {
        let (_d, store) = store();
        let res = services();
        // A leak: a reservation whose Service was never written.
        store
            .create(
                &Held::Ip(Ipv4Addr::new(10, 96, 5, 5)).key(),
                b"{\"uid\":\"gone\"}".to_vec().into(),
            )
            .await
            .unwrap();
        // A stored Service whose values have no reservation.
        let mut live = svc(
            "live",
            json!({"type": "NodePort", "clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"],
                   "ports": [{"port": 80, "nodePort": 31000}]}),
        );
        live["apiVersion"] = json!("v1");
        live["kind"] = json!("Service");
        store
            .create(
                &res.key(Some("default"), "live"),
                crate::object::encode(res, &live),
            )
            .await
            .unwrap();
        let mut suspects = HashSet::new();
        repair(&*store, &mut suspects).await.unwrap();
        let ips = |s: Arc<dyn Store>| async move {
            let l = s.list(IPS, ListOptions::default()).await.unwrap().items;
            l.into_iter().map(|kv| kv.key).collect::<HashSet<_>>()
        };
        let after_one = ips(store.clone()).await;
        assert!(
            after_one.contains(&format!("{IPS}10.96.5.5")),
            "kept after one pass"
        );
        assert!(after_one.contains(&format!("{IPS}10.96.7.7")));
        assert!(store.get(&format!("{PORTS}31000")).await.unwrap().is_some());
        repair(&*store, &mut suspects).await.unwrap();
        let after_two = ips(store.clone()).await;
        assert!(
            !after_two.contains(&format!("{IPS}10.96.5.5")),
            "freed on the second"
        );
        assert!(after_two.contains(&format!("{IPS}10.96.7.7")));
        // The live Service's own reservation survives further passes.
        repair(&*store, &mut suspects).await.unwrap();
        repair(&*store, &mut suspects).await.unwrap();
        assert!(
            ips(store.clone())
                .await
                .contains(&format!("{IPS}10.96.7.7"))
        );
    }
}
