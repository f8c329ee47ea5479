//! A container's environment and argv, as the kubelet makes them: `envFrom` first, then
//! `env` in order (later wins), values from ConfigMaps, Secrets and the downward API, and
//! `$(VAR)` references expanded in env values, command and args.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret};
use kube::Api;
use skiff_apimachinery::quantity::{Quantity, ceil_div};

/// A value the pod needs and the API could not give: the container waits with
/// `CreateContainerConfigError`, as in Kubernetes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub struct Sources<'a> {
    pub client: &'a kube::Client,
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// The Services' variables ([`service_links`]): under every variable the container
    /// sets, and `$(VAR)` may name them.
    pub services: Vec<(String, String)>,
}

/// The docker-link variables of the Services a pod sees (the kubelet's
/// `getServiceEnvVarMap` and `envvars.FromServices`): the `kubernetes` Service of
/// `default` always, and with `enableServiceLinks` (the default) every Service of the
/// pod's namespace that has a cluster IP; for each, `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT[_<PORT NAME>]` and the `<NAME>_PORT*` family of its ports.
pub fn service_links(
    services: &[std::sync::Arc<k8s_openapi::api::core::v1::Service>],
    namespace: &str,
    enable_links: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &k8s_openapi::api::core::v1::Service> = BTreeMap::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if ns == namespace && enable_links {
            chosen.insert(name, svc);
        }
    }
    let mut out = Vec::new();
    for (name, svc) in chosen {
        let spec = svc.spec.as_ref().expect("chosen with a spec");
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else {
            continue;
        };
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        pname.to_ascii_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{prefix}_PORT"),
            format!(
                "{}://{host}:{}",
                proto(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for p in ports {
            let protocol = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_ascii_uppercase());
            out.push((
                base.clone(),
                format!("{}://{host}:{}", protocol.to_ascii_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), protocol.to_ascii_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

impl Sources<'_> {
    fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_default()
    }

    async fn config_map(
        &self,
        name: &str,
        optional: bool,
    ) -> Result<Option<ConfigMap>, ConfigError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace());
        match api.get_opt(name).await {
            Ok(Some(cm)) => Ok(Some(cm)),
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(ConfigError(format!("configmap \"{name}\" not found"))),
            Err(e) => Err(ConfigError(format!("configmap \"{name}\": {e}"))),
        }
    }

    async fn secret(&self, name: &str, optional: bool) -> Result<Option<Secret>, ConfigError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace());
        match api.get_opt(name).await {
            Ok(Some(s)) => Ok(Some(s)),
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(ConfigError(format!("secret \"{name}\" not found"))),
            Err(e) => Err(ConfigError(format!("secret \"{name}\": {e}"))),
        }
    }

    fn field(&self, path: &str) -> Result<String, ConfigError> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let lookup = |map: &Option<BTreeMap<String, String>>, key: &str| {
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default()
        };
        let keyed = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix("']"))
                .map(str::to_string)
        };
        Ok(match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" | "status.podIPs" => self.pod_ip.clone().unwrap_or_default(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.clone(),
            _ => {
                if let Some(k) = keyed("metadata.labels['") {
                    lookup(&meta.labels, &k)
                } else if let Some(k) = keyed("metadata.annotations['") {
                    lookup(&meta.annotations, &k)
                } else {
                    return Err(ConfigError(format!("unsupported fieldRef {path}")));
                }
            }
        })
    }
}

/// The environment of `container`, in the order Kubernetes builds it.
pub async fn environment(
    sources: &Sources<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(cm) = sources.config_map(&r.name, optional).await? {
                for (k, v) in cm.data.unwrap_or_default() {
                    set(&mut env, format!("{prefix}{k}"), v);
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(s) = sources.secret(&r.name, optional).await? {
                for (k, v) in s.data.unwrap_or_default() {
                    set(
                        &mut env,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into(),
                    );
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let lookup: HashMap<&str, &str> = sources
                    .services
                    .iter()
                    .chain(env.iter())
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                expand(var.value.as_deref().unwrap_or(""), &lookup)
            }
            Some(from) => {
                if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let cm = sources.config_map(&r.name, optional).await?;
                    match cm.and_then(|c| c.data).and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key,
                                sources.namespace(),
                                r.name
                            )));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let s = sources.secret(&r.name, optional).await?;
                    match s.and_then(|s| s.data).and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => String::from_utf8_lossy(&v.0).into(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key,
                                sources.namespace(),
                                r.name
                            )));
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    sources.field(&f.field_path)?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_field(container, r)
                } else {
                    String::new()
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    for (k, v) in &sources.services {
        if !env.iter().any(|(name, _)| name == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    Ok(env)
}

/// A `resourceFieldRef` as the kubelet resolves it: the container's limit or request in
/// units of the divisor (default 1), rounded up; cpu in cores from millicores. A limit the
/// container does not set is the node's allocatable amount, as the kubelet fills it in.
fn resource_field(container: &Container, r: &ResourceFieldSelector) -> String {
    let Some((kind, name)) = r.resource.split_once('.') else {
        return String::new();
    };
    let res = container.resources.as_ref();
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    let cpu = name == "cpu";
    // In the divisor's base unit: millicores for cpu, bytes (or counts) for the rest.
    let value = match map.and_then(|m| m.get(name)).map(|q| Quantity::parse(&q.0)) {
        Some(Ok(q)) if cpu => q.milli_value(),
        Some(Ok(q)) => q.value(),
        _ if kind == "limits" && cpu => crate::node::cpus() as i128 * 1000,
        _ if kind == "limits" && name == "memory" => crate::node::mem_total_kib() as i128 * 1024,
        _ => 0,
    };
    let per = r
        .divisor
        .as_ref()
        .and_then(|d| Quantity::parse(&d.0).ok())
        .filter(|d| d.nanos > 0)
        .map_or(if cpu { 1000 } else { 1 }, |d| {
            if cpu { d.milli_value() } else { d.value() }
        });
    ceil_div(value, per).to_string()
}

/// `$(VAR)` → its value when defined; `$$(VAR)` → `$(VAR)`; anything else unchanged.
pub fn expand(input: &str, env: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The argv: `command` replaces the image's entrypoint, `args` its cmd; `$(VAR)` expanded.
/// A Wasm artifact is itself the program: without a `command`, its argv\[0\] is the
/// container's name and `args` follow.
pub fn argv(
    container: &Container,
    image_entrypoint: &[String],
    image_cmd: &[String],
    env: &[(String, String)],
    wasm: bool,
) -> Vec<String> {
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let (entry, cmd) = match (command.is_empty(), args.is_empty()) {
        (true, true) => (image_entrypoint.to_vec(), image_cmd.to_vec()),
        (true, false) => (image_entrypoint.to_vec(), args),
        (false, _) => (command, args),
    };
    let program = (wasm && entry.is_empty()).then(|| container.name.clone());
    program
        .into_iter()
        .chain(entry.iter().chain(cmd.iter()).map(|a| expand(a, &lookup)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(
        ns: &str,
        name: &str,
        ip: &str,
        ports: serde_json::Value,
    ) -> std::sync::Arc<k8s_openapi::api::core::v1::Service> {
        std::sync::Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"clusterIP": ip, "ports": ports},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn service_links_are_the_kubelets_docker_link_variables() {
        let services = [
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                serde_json::json!([{"name": "https", "port": 443}]),
            ),
            svc(
                "team",
                "my-web",
                "10.96.0.20",
                serde_json::json!([
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
            ),
            svc("team", "v6", "fd00::5", serde_json::json!([{"port": 8080}])),
            svc(
                "team",
                "headless",
                "None",
                serde_json::json!([{"port": 80}]),
            ),
            svc(
                "other",
                "elsewhere",
                "10.96.0.30",
                serde_json::json!([{"port": 80}]),
            ),
        ];
        let env: HashMap<String, String> =
            service_links(&services, "team", true).into_iter().collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("MY_WEB_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get("MY_WEB_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("MY_WEB_PORT"), Some("tcp://10.96.0.20:80"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://10.96.0.20:53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PORT"), Some("53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_ADDR"), Some("10.96.0.20"));
        assert_eq!(get("V6_PORT"), Some("tcp://[fd00::5]:8080"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(get("ELSEWHERE_SERVICE_HOST"), None);
        // Without service links only the API server's Service remains.
        let env = service_links(&services, "team", false);
        assert!(
            env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
            "{env:?}"
        );
        assert!(!env.is_empty());
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env = HashMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn resource_fields_follow_the_kubelet() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([
                    ("cpu".to_string(), Q("1500m".into())),
                    ("memory".to_string(), Q("96Mi".into())),
                ])),
                requests: Some(BTreeMap::from([("cpu".to_string(), Q("250m".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = |resource: &str, divisor: Option<&str>| {
            resource_field(
                &c,
                &ResourceFieldSelector {
                    resource: resource.into(),
                    divisor: divisor.map(|d| Q(d.into())),
                    container_name: None,
                },
            )
        };
        assert_eq!(f("limits.cpu", None), "2", "cores, rounded up");
        assert_eq!(f("limits.cpu", Some("1m")), "1500");
        assert_eq!(f("requests.cpu", Some("1m")), "250");
        assert_eq!(f("limits.memory", None), (96u64 << 20).to_string());
        assert_eq!(f("limits.memory", Some("1Mi")), "96");
        assert_eq!(f("limits.memory", Some("1G")), "1", "rounded up");
        assert_eq!(f("requests.memory", None), "0");
        let unset = resource_field(
            &Container::default(),
            &ResourceFieldSelector {
                resource: "limits.memory".into(),
                divisor: Some(Q("1Ki".into())),
                container_name: None,
            },
        );
        assert_eq!(
            unset,
            crate::node::mem_total_kib().to_string(),
            "node allocatable"
        );
    }

    #[test]
    fn command_and_args_override_the_image() {
        let c = |command: Option<Vec<&str>>, args: Option<Vec<&str>>| Container {
            name: "app".into(),
            command: command.map(|v| v.into_iter().map(String::from).collect()),
            args: args.map(|v| v.into_iter().map(String::from).collect()),
            ..Default::default()
        };
        let ep = vec!["/entry".to_string()];
        let cmd = vec!["default".to_string()];
        assert_eq!(
            argv(&c(None, None), &ep, &cmd, &[], false),
            ["/entry", "default"]
        );
        assert_eq!(
            argv(&c(None, Some(vec!["x"])), &ep, &cmd, &[], false),
            ["/entry", "x"]
        );
        assert_eq!(
            argv(&c(Some(vec!["/bin/a"]), None), &ep, &cmd, &[], false),
            ["/bin/a"]
        );
        let env = vec![("N".to_string(), "3".to_string())];
        assert_eq!(
            argv(
                &c(Some(vec!["run"]), Some(vec!["$(N)"])),
                &ep,
                &cmd,
                &env,
                false
            ),
            ["run", "3"]
        );
        assert_eq!(argv(&c(None, None), &[], &[], &[], true), ["app"]);
        assert_eq!(
            argv(&c(None, Some(vec!["a", "b"])), &[], &[], &[], true),
            ["app", "a", "b"]
        );
    }
}
