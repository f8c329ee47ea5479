//! Services: cluster IPs and node ports handed out and checked as kube-apiserver does, the
//! `kubernetes` Service, and the Endpoints and EndpointSlices of the pods a selector picks.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_conformance::{Backend, Cluster, Kubectl, Registry};

use crate::workloads::{eventually, items};

pub(crate) fn cluster_ip(k: &Kubectl, name: &str) -> String {
    let svc = k.json(&["get", "svc", name]);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    assert_eq!(svc["spec"]["clusterIPs"], json!([ip]), "{svc}");
    ip
}

fn in_service_range(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 address");
    let n = u32::from(ip);
    // 10.96.0.0/12 without its network and broadcast addresses.
    n > u32::from(Ipv4Addr::new(10, 96, 0, 0)) && n < u32::from(Ipv4Addr::new(10, 111, 255, 255))
}

fn node_port(k: &Kubectl, name: &str) -> i64 {
    let svc = k.json(&["get", "svc", name]);
    svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0)
}

pub(crate) fn service_yaml(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// The one cause of a 422 from a raw POST of `body` to the default namespace's services.
fn refused(cluster: &Cluster, body: &Value) -> (String, String) {
    let (code, status) = cluster.request(
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        body.to_string(),
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid", "{status}");
    let cause = &status["details"]["causes"][0];
    (
        cause["field"].as_str().unwrap_or("").to_string(),
        cause["message"].as_str().unwrap_or("").to_string(),
    )
}

pub fn service_ips_and_node_ports(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");

    // The API server's own Service holds the range's first address.
    let kubernetes = k.json(&["get", "svc", "kubernetes", "-n", "default"]);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1", "{kubernetes}");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443);

    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let web = cluster_ip(&k, "web");
    assert!(in_service_range(&web) && web != "10.96.0.1", "{web}");
    let printed = k.ok(&["get", "svc", "web"]);
    assert!(
        printed.contains(&web),
        "kubectl get svc shows the IP:\n{printed}"
    );

    k.ok(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    let np = node_port(&k, "np");
    assert!((30000..=32767).contains(&np), "{np}");

    // Values asked for by name: taken, out of range, malformed.
    let err = k.fails(&[
        "create",
        "service",
        "clusterip",
        "dup",
        "--tcp=80",
        &format!("--clusterip={web}"),
    ]);
    assert!(
        err.contains(&format!(
            "spec.clusterIPs: Invalid value: []string{{\"{web}\"}}: failed to allocate IP {web}: provided IP is already allocated"
        )),
        "{err}"
    );
    let (field, message) = refused(
        &cluster,
        &json!({"metadata": {"name": "far"},
                "spec": {"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}}),
    );
    assert_eq!(field, "spec.clusterIPs");
    assert!(
        message.contains("the provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{message}"
    );
    let (field, message) = refused(
        &cluster,
        &json!({"metadata": {"name": "taken-port"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}}),
    );
    assert_eq!(field, "spec.ports[0].nodePort");
    assert_eq!(
        message,
        format!("Invalid value: {np}: provided port is already allocated")
    );
    let (field, message) = refused(
        &cluster,
        &json!({"metadata": {"name": "far-port"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}}),
    );
    assert_eq!(field, "spec.ports[0].nodePort");
    assert!(
        message.contains("The range of valid ports is 30000-32767"),
        "{message}"
    );
    let (field, _) = refused(
        &cluster,
        &json!({"metadata": {"name": "bad-port"}, "spec": {"ports": [{"port": 70000}]}}),
    );
    assert_eq!(field, "spec.ports[0].port");
    // Nothing of the refused ones was created.
    for name in ["dup", "far", "taken-port", "far-port", "bad-port"] {
        assert!(k.try_json(&["get", "svc", name]).is_none(), "{name} exists");
    }

    // A dry run shows an IP and takes none: the same one can then be asked for.
    let dry = k.json(&[
        "create",
        "service",
        "clusterip",
        "dry",
        "--tcp=80",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    let dry_ip = dry["spec"]["clusterIP"]
        .as_str()
        .expect("an IP")
        .to_string();
    assert!(in_service_range(&dry_ip), "{dry}");
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "dry",
        "--tcp=80",
        &format!("--clusterip={dry_ip}"),
    ]);

    // Headless and ExternalName Services get no address.
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "headless",
        "--clusterip=None",
    ]);
    assert_eq!(cluster_ip(&k, "headless"), "None");
    k.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=example.com",
    ]);
    let ext = k.json(&["get", "svc", "ext"]);
    assert!(ext["spec"].get("clusterIP").is_none(), "{ext}");

    // A replace that names neither the IP nor the node port keeps both.
    k.ok_stdin(
        &["replace", "-f", "-"],
        &service_yaml(
            "np",
            "  type: NodePort\n  selector: {app: np}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
        ),
    );
    assert_eq!(node_port(&k, "np"), np);
    // To ClusterIP: the node port goes back, and another Service may take it.
    k.ok(&[
        "patch",
        "svc",
        "np",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    assert_eq!(node_port(&k, "np"), 0);
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml(
            "np2",
            &format!("  type: NodePort\n  ports:\n  - {{port: 80, nodePort: {np}}}\n"),
        ),
    );
    assert_eq!(node_port(&k, "np2"), np);
    // To ExternalName: the IP goes back; deleted, so does web's.
    let np_ip = cluster_ip(&k, "np");
    k.ok(&[
        "patch",
        "svc",
        "np",
        "-p",
        r#"{"spec":{"type":"ExternalName","externalName":"example.com"}}"#,
    ]);
    k.ok(&["delete", "svc", "web"]);
    for ip in [&np_ip, &web] {
        k.ok(&[
            "create",
            "service",
            "clusterip",
            &format!("again-{}", ip.replace('.', "-")),
            "--tcp=80",
            &format!("--clusterip={ip}"),
        ]);
    }

    // Eight clients at once: eight addresses and eight node ports, none twice.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let k = cluster.kubectl("1.33");
            std::thread::spawn(move || {
                k.ok(&[
                    "create",
                    "service",
                    "nodeport",
                    &format!("c{i}"),
                    "--tcp=80",
                ]);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a create");
    }
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for i in 0..8 {
        assert!(ips.insert(cluster_ip(&k, &format!("c{i}"))));
        assert!(ports.insert(node_port(&k, &format!("c{i}"))));
    }
}

fn slices(k: &Kubectl, service: &str) -> Vec<Value> {
    let selector = format!("kubernetes.io/service-name={service}");
    items(k, &["endpointslices", "-l", &selector])
}

/// (ip, ready, serving, terminating, port) of every endpoint of the Service's slices.
/// Applies Service `name` with `spec` and waits until `ready` of its endpoints are ready.
pub(crate) fn apply_service(k: &Kubectl, name: &str, spec: &str, ready: usize) {
    k.ok_stdin(&["apply", "-f", "-"], &service_yaml(name, spec));
    eventually(&format!("{ready} ready endpoints of {name}"), || {
        (endpoints_of(k, name).iter().filter(|e| e.1).count() == ready).then_some(())
    });
}

pub(crate) fn endpoints_of(k: &Kubectl, service: &str) -> Vec<(String, bool, bool, bool, i64)> {
    let mut out = Vec::new();
    for s in slices(k, service) {
        let port = s["ports"][0]["port"].as_i64().unwrap_or(0);
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            out.push((
                e["addresses"][0].as_str().unwrap_or("").to_string(),
                c["ready"] == true,
                c["serving"] == true,
                c["terminating"] == true,
                port,
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn endpoint_slices_follow_the_selected_pods() {
    let registry = Registry::start();
    let http = registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      runtimeClassName: wasmtime\n      containers:\n      - name: web\n        image: {http}\n        ports: [{{name: http, containerPort: 8080}}]\n        readinessProbe:\n          httpGet: {{path: /, port: 8080}}\n          periodSeconds: 1\n"
    );
    k.ok_stdin(&["apply", "-f", "-"], &deployment);
    // A pod the selector picks whose readiness probe fails (the app answers 404 there).
    let unready = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unready\n  labels: {{app: web}}\nspec:\n  runtimeClassName: wasmtime\n  containers:\n  - name: web\n    image: {http}\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe:\n      httpGet: {{path: /nope, port: 8080}}\n      periodSeconds: 1\n"
    );
    k.ok_stdin(&["apply", "-f", "-"], &unready);
    // The target port by name, looked up in each pod.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml(
            "web",
            "  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n",
        ),
    );
    let pod_ips = |k: &Kubectl| -> Vec<(String, bool)> {
        let pods = k.json(&["get", "pods", "-l", "app=web"]);
        let mut out: Vec<(String, bool)> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let ip = p["status"]["podIP"].as_str()?.to_string();
                Some((ip, crate::node::ready(p)))
            })
            .collect();
        out.sort();
        out
    };
    let eps = eventually("three endpoints, two ready", || {
        let eps = endpoints_of(&k, "web");
        let ready = eps.iter().filter(|e| e.1).count();
        (eps.len() == 3 && ready == 2).then_some(eps)
    });
    let pods = pod_ips(&k);
    let ips: Vec<String> = pods.iter().map(|(ip, _)| ip.clone()).collect();
    assert_eq!(
        eps.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        ips,
        "the pods' IPs"
    );
    assert!(eps.iter().all(|e| e.4 == 8080), "{eps:?}");
    let unready_ip = k.json(&["get", "pod", "unready"])["status"]["podIP"]
        .as_str()
        .expect("IP")
        .to_string();
    let e = eps
        .iter()
        .find(|e| e.0 == unready_ip)
        .expect("unready listed");
    assert_eq!((e.1, e.2, e.3), (false, false, false), "{e:?}");
    let slice = &slices(&k, "web")[0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["endpoints"][0]["nodeName"], cluster_node(&k));
    assert_eq!(slice["endpoints"][0]["targetRef"]["kind"], "Pod");
    // The Endpoints object says the same: ready addresses and not-ready ones.
    let ep = k.json(&["get", "endpoints", "web"]);
    let subset = &ep["subsets"][0];
    assert_eq!(
        subset["addresses"].as_array().map(Vec::len),
        Some(2),
        "{ep}"
    );
    assert_eq!(
        subset["notReadyAddresses"][0]["ip"],
        unready_ip.as_str(),
        "{ep}"
    );
    assert_eq!(subset["ports"][0]["port"], 8080);
    let wide = k.ok(&["get", "endpoints", "web"]);
    assert!(wide.contains(":8080"), "{wide}");

    // Scaled up: the new pod joins.
    k.ok(&["scale", "deployment", "web", "--replicas=3"]);
    eventually("four endpoints, three ready", || {
        let eps = endpoints_of(&k, "web");
        (eps.len() == 4 && eps.iter().filter(|e| e.1).count() == 3).then_some(())
    });
    // A deleted pod terminates: not ready, and gone once it is.
    k.ok(&["delete", "pod", "unready", "--wait=true", "--timeout=60s"]);
    eventually("the deleted pod gone", || {
        let eps = endpoints_of(&k, "web");
        (!eps.iter().any(|e| e.0 == unready_ip)).then_some(())
    });

    // A selector that picks nothing leaves one empty slice.
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"selector":{"app":"none"}}}"#,
    ]);
    eventually("no endpoints", || {
        let s = slices(&k, "web");
        (s.len() == 1 && endpoints_of(&k, "web").is_empty()).then_some(())
    });
    let ep = k.json(&["get", "endpoints", "web"]);
    assert!(ep.get("subsets").is_none(), "{ep}");

    // A Service without a selector is left to its owner.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml("manual", "  ports:\n  - {port: 80}\n"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(slices(&k, "manual").is_empty());
    assert!(k.try_json(&["get", "endpoints", "manual"]).is_none());

    // Deleted, the Service takes its Endpoints and slices with it.
    k.ok(&["delete", "svc", "web"]);
    eventually("web's Endpoints and slices gone", || {
        (slices(&k, "web").is_empty() && k.try_json(&["get", "endpoints", "web"]).is_none())
            .then_some(())
    });
}

fn cluster_node(k: &Kubectl) -> String {
    let nodes = k.json(&["get", "nodes"]);
    nodes["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a node")
        .to_string()
}

/// A Deployment of the http example whose pods say their name at `/env/POD_NAME`.
pub(crate) fn named_deployment(
    name: &str,
    version: &str,
    image: &str,
    class: &str,
    replicas: u32,
) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web, version: {version}}}\n  template:\n    metadata:\n      labels: {{app: web, version: {version}}}\n    spec:\n      runtimeClassName: {class}\n      terminationGracePeriodSeconds: 5\n      containers:\n      - name: web\n        image: {image}\n        ports: [{{name: http, containerPort: 8080}}]\n        env:\n        - name: POD_NAME\n          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}\n        readinessProbe:\n          httpGet: {{path: /, port: 8080}}\n          periodSeconds: 1\n"
    )
}

/// The pod names that answer `n` GETs of `path` at `ip:port`; panics on a failed request.
pub(crate) fn answers(ip: &str, port: u16, path: &str, n: usize) -> HashSet<String> {
    (0..n)
        .map(|i| {
            let (code, body) = crate::node::http_get(ip, port, path)
                .unwrap_or_else(|e| panic!("request {i} to {ip}:{port}{path}: {e}"));
            assert_eq!(code, 200, "{ip}:{port}{path}: {body}");
            body.trim().to_string()
        })
        .collect()
}

fn pod_names(k: &Kubectl, selector: &str) -> HashSet<String> {
    items(k, &["pods", "-l", selector])
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn services_route_traffic_to_ready_pods_of_both_runtimes() {
    let registry = Registry::start();
    let build = skiff_conformance::repo_root().join("examples/build");
    let wasm = registry.push(&build.join("http.wasm"), "http");
    let linux = registry.push(&build.join("http-server-oci"), "http-server");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    k.ok_stdin(
        &["apply", "-f", "-"],
        &named_deployment("web-v1", "v1", &wasm, "wasmtime", 2),
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        &named_deployment("web-v2", "v2", &linux, "youki", 1),
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml(
            "web",
            "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n",
        ),
    );
    eventually("three ready endpoints", || {
        let eps = endpoints_of(&k, "web");
        (eps.iter().filter(|e| e.1).count() == 3).then_some(())
    });
    let all = pod_names(&k, "app=web");
    assert_eq!(all.len(), 3);
    let ip = cluster_ip(&k, "web");

    // From the node: the cluster IP spreads requests over the Wasm and the container pods.
    assert_eq!(answers(&ip, 80, "/env/POD_NAME", 60), all, "from the node");
    // The node port too, on an address of the node's (its pod gateway).
    let nodes = k.json(&["get", "nodes"]);
    let cidr = nodes["items"][0]["spec"]["podCIDR"]
        .as_str()
        .expect("podCIDR");
    let base: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    let node_addr = Ipv4Addr::from(u32::from(base) + 1).to_string();
    let node_port = node_port(&k, "web") as u16;
    assert_eq!(
        answers(&node_addr, node_port, "/env/POD_NAME", 60),
        all,
        "through the node port"
    );
    // From inside each Wasm pod (its outgoing wasi:http request; the second of the image
    // is address-only, in the namespace such pods share): every pod answers, the caller
    // itself among them (a pod reaching itself through its Service).
    let v1 = k.json(&["get", "pods", "-l", "version=v1"]);
    for caller in v1["items"].as_array().expect("pods") {
        let caller_ip = caller["status"]["podIP"]
            .as_str()
            .expect("pod IP")
            .to_string();
        let caller_name = caller["metadata"]["name"].as_str().unwrap().to_string();
        let from_pod = answers(
            &caller_ip,
            8080,
            &format!("/fetch/{ip}:80/env/POD_NAME"),
            60,
        );
        assert_eq!(from_pod, all, "from pod {caller_name} ({caller_ip})");
    }

    // Pods added now that the node holds the component are address-only (IPs in the
    // namespace such pods share); they too reach every pod, themselves and each other
    // included (replies between two of them would stay in their namespace unless the
    // proxy masquerades them).
    k.ok(&["scale", "deployment", "web-v1", "--replicas=4"]);
    eventually("five ready endpoints", || {
        let eps = endpoints_of(&k, "web");
        (eps.iter().filter(|e| e.1).count() == 5).then_some(())
    });
    let all = pod_names(&k, "app=web");
    let v1 = k.json(&["get", "pods", "-l", "version=v1"]);
    let shared: Vec<&Value> = v1["items"]
        .as_array()
        .expect("pods")
        .iter()
        .filter(|p| {
            crate::node::in_shared_namespace(&cluster, p["status"]["podIP"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(shared.len() >= 2, "two address-only pods among {v1}");
    let shared_ip = shared[0]["status"]["podIP"].as_str().unwrap().to_string();
    let from_pod = answers(
        &shared_ip,
        8080,
        &format!("/fetch/{ip}:80/env/POD_NAME"),
        100,
    );
    assert_eq!(from_pod, all, "from address-only pod {shared_ip}");

    // A label switch moves every request to v2.
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"selector":{"app":"web","version":"v2"}}}"#,
    ]);
    let v2 = pod_names(&k, "version=v2");
    eventually("only v2 behind web", || {
        let eps = endpoints_of(&k, "web");
        (eps.len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(answers(&ip, 80, "/env/POD_NAME", 30), v2);

    // A Service without a selector whose Endpoints are written by hand (the way to name
    // something outside the cluster): mirrored into a slice, so its cluster IP leads
    // where the Endpoints say.
    let v2_ips: Vec<String> = items(&k, &["pods", "-l", "version=v2"])
        .iter()
        .map(|p| p["status"]["podIP"].as_str().expect("pod IP").to_string())
        .collect();
    let addresses: Vec<String> = v2_ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - {{port: 80}}\n---\n\
             apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: manual\nsubsets:\n- addresses: [{}]\n  ports: [{{port: 8080}}]\n",
            addresses.join(", ")
        ),
    );
    let mirrored = eventually("manual's Endpoints mirrored", || {
        let s = slices(&k, "manual");
        (s.len() == 1 && s[0]["endpoints"].as_array().map(Vec::len) == Some(v2_ips.len()))
            .then(|| s[0].clone())
    });
    assert_eq!(
        mirrored["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io",
        "{mirrored}"
    );
    let manual_ip = k.json(&["get", "svc", "manual"])["spec"]["clusterIP"]
        .as_str()
        .expect("cluster IP")
        .to_string();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(answers(&manual_ip, 80, "/env/POD_NAME", 30), v2);
    // Its Endpoints deleted, the slice goes.
    k.ok(&["delete", "endpoints", "manual"]);
    eventually("manual's slice gone", || {
        slices(&k, "manual").is_empty().then_some(())
    });

    // No endpoints: connections are refused at once, not left to time out.
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"selector":{"app":"none"}}}"#,
    ]);
    eventually("no endpoints", || {
        endpoints_of(&k, "web").is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let err = crate::node::http_get(&ip, 80, "/").expect_err("no endpoint answers");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_pod_failing_readiness_stops_getting_traffic() {
    let registry = Registry::start();
    let busybox = registry.push_example("busybox-oci", "busybox");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    // Two container pods serving their own name, ready while /tmp/ready exists.
    for name in ["one", "two"] {
        k.ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: flip}}\nspec:\n  runtimeClassName: youki\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {busybox}\n    command: [sh, -c, 'mkdir -p /www && echo {name} > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www']\n    ports: [{{containerPort: 8080}}]\n    readinessProbe:\n      exec: {{command: [cat, /tmp/ready]}}\n      periodSeconds: 1\n      failureThreshold: 1\n"
            ),
        );
    }
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml(
            "flip",
            "  selector: {app: flip}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
        ),
    );
    let ready_count = |k: &Kubectl| endpoints_of(k, "flip").iter().filter(|e| e.1).count();
    eventually("both ready", || (ready_count(&k) == 2).then_some(()));
    let ip = cluster_ip(&k, "flip");
    let both: HashSet<String> = ["one", "two"].map(String::from).into();
    assert_eq!(answers(&ip, 80, "/", 40), both);

    // One fails its probe: its endpoint turns not ready and it gets no more requests.
    k.ok(&["exec", "one", "--", "rm", "/tmp/ready"]);
    eventually("one not ready", || (ready_count(&k) == 1).then_some(()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        answers(&ip, 80, "/", 40),
        HashSet::from(["two".to_string()])
    );
    // Ready again, it gets its share again.
    k.ok(&["exec", "one", "--", "touch", "/tmp/ready"]);
    eventually("both ready again", || (ready_count(&k) == 2).then_some(()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(answers(&ip, 80, "/", 40), both);
}

/// One GET on an open keep-alive connection; the body.
fn get_on(conn: &mut std::net::TcpStream) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    conn.write_all(b"GET /env/POD_NAME HTTP/1.1\r\nHost: keep\r\n\r\n")
        .expect("send");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut length = 0;
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains(" 200 "), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    String::from_utf8_lossy(&body).trim().to_string()
}

fn rules(table: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_agent_restart_keeps_connections_and_leaves_no_stale_rule() {
    let registry = Registry::start();
    let http = registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_for_agents(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    let _a = cluster.start_agent("node-a");
    let mut b = cluster.start_agent("node-b");
    let table = format!("{}-services", b.bridge);
    // The pod runs on node-a; node-b's agent is the one restarted.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: keep\n  labels: {{app: keep}}\nspec:\n  nodeName: node-a\n  runtimeClassName: wasmtime\n  containers:\n  - name: web\n    image: {http}\n    ports: [{{containerPort: 8080}}]\n    env:\n    - name: POD_NAME\n      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}\n    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n"
        ),
    );
    for name in ["keep", "gone"] {
        k.ok_stdin(
            &["apply", "-f", "-"],
            &service_yaml(
                name,
                "  selector: {app: keep}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
            ),
        );
    }
    let (keep_ip, gone_ip) = (cluster_ip(&k, "keep"), cluster_ip(&k, "gone"));
    eventually("both Services in node-b's rules", || {
        let r = rules(&table);
        (r.contains(&format!("{keep_ip} . tcp . 80 : goto"))
            && r.contains(&format!("{gone_ip} . tcp . 80 : goto")))
        .then_some(())
    });
    let mut conn = std::net::TcpStream::connect((keep_ip.as_str(), 80)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(get_on(&mut conn), "keep");

    // node-b's agent dies (its rules stay: Services keep working); a Service goes meanwhile.
    b.kill();
    k.ok(&["delete", "svc", "gone"]);
    b.restart();
    eventually("node-b's rules without the deleted Service", || {
        let r = rules(&table);
        (!r.contains(&gone_ip) && r.contains(&format!("{keep_ip} . tcp . 80 : goto"))).then_some(())
    });
    // The connection made before the restart is still served.
    assert_eq!(get_on(&mut conn), "keep");
}

/// One GET of `path` on `conn`, if the connection carries it: the status and body, or
/// `None` when the connection was closed or reset before any byte of a response (a client
/// sends the request again on a new connection then, as HTTP clients do for a reused
/// connection the server closed).
fn try_get_on(conn: &mut std::net::TcpStream, path: &str) -> Option<(u16, String, bool)> {
    use std::io::{BufRead, BufReader, Read, Write};
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: roll\r\n\r\n").as_bytes())
        .ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut status = String::new();
    if reader.read_line(&mut status).ok()? == 0 {
        return None;
    }
    let code: u16 = status.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut close) = (0, false);
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("a header line after the status line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().expect("length");
            } else if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .expect("the body after the headers");
    Some((
        code,
        String::from_utf8_lossy(&body).trim().to_string(),
        close,
    ))
}

#[test]
fn a_rolling_update_under_traffic_fails_no_request() {
    let registry = Registry::start();
    let build = skiff_conformance::repo_root().join("examples/build");
    let linux = registry.push(&build.join("http-server-oci"), "http-server");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    // Container pods that keep serving 3 s after they are told to stop (preStop), while
    // their endpoints turn terminating and the rules stop sending them new connections.
    let deployment = |version: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: roll\nspec:\n  replicas: 3\n  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}\n  selector:\n    matchLabels: {{app: roll}}\n  template:\n    metadata:\n      labels: {{app: roll}}\n    spec:\n      runtimeClassName: youki\n      terminationGracePeriodSeconds: 10\n      containers:\n      - name: web\n        image: {linux}\n        ports: [{{name: http, containerPort: 8080}}]\n        env: [{{name: VERSION, value: '{version}'}}]\n        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n        lifecycle: {{preStop: {{sleep: {{seconds: 3}}}}}}\n"
        )
    };
    k.ok_stdin(&["apply", "-f", "-"], &deployment("1"));
    apply_service(
        &k,
        "roll",
        "  selector: {app: roll}\n  ports:\n  - {port: 80, targetPort: http}\n",
        3,
    );
    let ip = cluster_ip(&k, "roll");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // New connections, one request each.
    let fresh = {
        let (ip, stop) = (ip.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(match crate::node::http_get(&ip, 80, "/env/VERSION") {
                    Ok((200, body)) => body.trim().to_string(),
                    other => format!("FAILED {other:?}"),
                });
                // Steady traffic, not a flood of handshakes.
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    // Keep-alive: one connection for as long as the server keeps it.
    let kept = {
        let (ip, stop) = (ip.clone(), stop.clone());
        std::thread::spawn(move || {
            let connect = || std::net::TcpStream::connect((ip.as_str(), 80)).expect("connect");
            let (mut seen, mut reconnects) = (Vec::new(), 0);
            let mut conn = connect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = match try_get_on(&mut conn, "/env/VERSION") {
                    Some(r) => Some(r),
                    None => {
                        reconnects += 1;
                        conn = connect();
                        try_get_on(&mut conn, "/env/VERSION")
                    }
                };
                match got {
                    Some((200, body, close)) => {
                        seen.push(body);
                        if close {
                            conn = connect();
                        }
                    }
                    other => seen.push(format!("FAILED {other:?}")),
                }
            }
            (seen, reconnects)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    k.ok_stdin(&["apply", "-f", "-"], &deployment("2"));
    k.ok(&["rollout", "status", "deployment/roll", "--timeout=120s"]);
    // Until the last old pod has gone.
    eventually("only new pods", || {
        let pods = items(&k, &["pods", "-l", "app=roll"]);
        (pods.len() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let fresh = fresh.join().expect("new-connection client");
    let (kept, reconnects) = kept.join().expect("keep-alive client");
    for (what, seen) in [("new connections", &fresh), ("keep-alive", &kept)] {
        let failed: Vec<&String> = seen.iter().filter(|s| s.starts_with("FAILED")).collect();
        assert!(
            failed.is_empty(),
            "{what}: {} of {} requests failed: {failed:?}",
            failed.len(),
            seen.len()
        );
        assert!(
            seen.iter().any(|s| s == "1") && seen.iter().any(|s| s == "2"),
            "{what} saw both versions"
        );
        assert_eq!(
            seen.last().map(String::as_str),
            Some("2"),
            "{what} end on the new version"
        );
    }
    eprintln!(
        "rolling update: {} new-connection and {} keep-alive requests, {reconnects} reconnects",
        fresh.len(),
        kept.len()
    );
}
