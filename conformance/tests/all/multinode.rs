//! Two nodes, each a host of its own: a network namespace the test makes, with its own
//! address on a shared test bridge and its own pod bridge. Pods of both runtimes on both
//! nodes behind one Service; pods reaching pods of the other node by pod IP, with their
//! own source address; names resolved on each node; a node port reached from outside.

use std::collections::HashSet;

use skiff_conformance::{AgentNode, Backend, Cluster, Kubectl, TestHosts};

use crate::services::{answers, apply_service, endpoints_of, service_yaml};
use crate::workloads::eventually;

const HTTP_WASM: &str = "local.test/skiff/http:v1";
const HTTP_LINUX: &str = "local.test/skiff/http-server:v1";
const BUSYBOX: &str = "local.test/skiff/busybox:v1";

fn pod(name: &str, node: &str, class: &str, image: &str, labels: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  runtimeClassName: {class}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n{extra}"
    )
}

/// A web pod of the HTTP example that answers its name at `/env/POD_NAME`: version v1
/// for Wasm, v2 for Linux.
fn web(name: &str, node: &str, class: &str, image: &str) -> String {
    let version = if class == "wasmtime" { "v1" } else { "v2" };
    pod(
        name,
        node,
        class,
        image,
        &format!("app: web, version: {version}"),
        "    ports: [{name: http, containerPort: 8080}]\n    env:\n    - name: POD_NAME\n      valueFrom: {fieldRef: {fieldPath: metadata.name}}\n    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}\n",
    )
}

fn pod_ip(k: &Kubectl, name: &str) -> String {
    k.json(&["get", "pod", name])["status"]["podIP"]
        .as_str()
        .unwrap_or_else(|| panic!("pod {name} has an IP"))
        .to_string()
}

/// What `n` GETs of `url` from the client pod answered, one a line (`FAILED` for a failed
/// request), each with a connection of its own.
fn from_client(k: &Kubectl, n: usize, url: &str) -> Vec<String> {
    k.ok(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        &format!("for i in $(seq {n}); do wget -qO- {url} || echo FAILED; done"),
    ])
    .lines()
    .map(|l| l.trim().to_string())
    .collect()
}

/// The last line of what a GET of `path` at `ip:port` got back, status line and headers
/// included (busybox's CGI ends its headers with a bare newline, which `http_get` does not
/// split on).
fn last_line(ip: &str, port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("address");
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string())
}

fn import_all(agent: &AgentNode) {
    let build = skiff_conformance::repo_root().join("examples/build");
    agent.import(&build.join("http.wasm"), HTTP_WASM);
    agent.import(&build.join("http-server-oci"), HTTP_LINUX);
    agent.import(&build.join("busybox-oci"), BUSYBOX);
}

#[test]
fn pods_of_two_nodes_reach_each_other_and_serve_one_service() {
    let hosts = TestHosts::new(2);
    let cluster = Cluster::start_for_hosts(Backend::Embedded, &hosts);
    let a = cluster.start_agent_in("host-a", &hosts, 0);
    let b = cluster.start_agent_in("host-b", &hosts, 1);
    import_all(&a);
    import_all(&b);
    let k = cluster.kubectl("1.33");
    for manifest in [
        web("wasm-a", "host-a", "wasmtime", HTTP_WASM),
        web("linux-a", "host-a", "youki", HTTP_LINUX),
        web("wasm-b", "host-b", "wasmtime", HTTP_WASM),
        web("linux-b", "host-b", "youki", HTTP_LINUX),
        pod(
            "client",
            "host-a",
            "youki",
            BUSYBOX,
            "app: client",
            "    command: [sleep, '3600']\n",
        ),
        // A CGI script that says who asked: the address the connection came from.
        pod(
            "echo",
            "host-b",
            "youki",
            BUSYBOX,
            "app: echo",
            "    command: [sh, -c, 'mkdir -p /www/cgi-bin && printf \"#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \\$REMOTE_ADDR\\n\" > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www']\n    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n",
        ),
        service_yaml(
            "web",
            "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n",
        ),
    ] {
        k.ok_stdin(&["apply", "-f", "-"], &manifest);
    }
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "pod/echo",
        "--timeout=60s",
    ]);
    eventually("four ready endpoints", || {
        (endpoints_of(&k, "web").iter().filter(|e| e.1).count() == 4).then_some(())
    });
    let all: HashSet<String> = ["wasm-a", "linux-a", "wasm-b", "linux-b"]
        .map(String::from)
        .into();

    // A pod on one node reaches a pod on the other by its IP and is seen by its own.
    let client_ip = pod_ip(&k, "client");
    let echo_ip = pod_ip(&k, "echo");
    let seen = k.ok(&[
        "exec",
        "client",
        "--",
        "wget",
        "-qO-",
        &format!("http://{echo_ip}:8080/cgi-bin/ip"),
    ]);
    // busybox's httpd writes it as an IPv4-mapped IPv6 address.
    let seen = seen
        .trim()
        .trim_start_matches("[::ffff:")
        .trim_end_matches(']');
    assert_eq!(
        seen, client_ip,
        "the other node's pod sees the client's own address"
    );

    // The Service by its short name from a container pod: both nodes' pods of both runtimes answer.
    let got: HashSet<String> = from_client(&k, 60, "http://web/env/POD_NAME")
        .into_iter()
        .collect();
    assert_eq!(got, all, "through the Service from host-a");

    // A Wasm pod on the other node resolves the name through its own node's DNS.
    let wasm_b = pod_ip(&k, "wasm-b");
    let url = format!("http://{wasm_b}:8080/fetch/web.default/env/POD_NAME");
    let got: HashSet<String> = from_client(&k, 40, &url).into_iter().collect();
    assert_eq!(got, all, "from wasm-b on host-b");

    // From outside the nodes (this namespace, over the test bridge), the node port of
    // either node leads to every pod.
    let svc = k.json(&["get", "svc", "web"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("node port") as u16;
    for host in [&a, &b] {
        let addr = host.address().to_string();
        let got = answers(&addr, node_port, "/env/POD_NAME", 60);
        assert_eq!(got, all, "node port of {}", host.name);
    }

    // A label switch under steady traffic: every request succeeds, and afterwards only
    // the v2 pods (Linux, both nodes) answer.
    let requests = {
        let k = cluster.kubectl("1.33");
        std::thread::spawn(move || from_client(&k, 300, "http://web/env/POD_NAME"))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"selector":{"app":"web","version":"v2"}}}"#,
    ]);
    let during = requests.join().expect("requests");
    let failed = during.iter().filter(|l| *l == "FAILED").count();
    assert_eq!(failed, 0, "requests failed during the switch: {during:?}");
    assert_eq!(during.len(), 300);
    eventually("two endpoints", || {
        (endpoints_of(&k, "web").len() == 2).then_some(())
    });
    let got: HashSet<String> = from_client(&k, 40, "http://web/env/POD_NAME")
        .into_iter()
        .collect();
    let v2: HashSet<String> = ["linux-a", "linux-b"].map(String::from).into();
    assert_eq!(got, v2, "after the switch");

    // `sessionAffinity: ClientIP`: one client, one pod, among both nodes' pods.
    apply_service(
        &k,
        "sticky",
        "  sessionAffinity: ClientIP\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: http}\n",
        4,
    );
    let got: HashSet<String> = from_client(&k, 30, "http://sticky/env/POD_NAME")
        .into_iter()
        .collect();
    assert_eq!(
        got.len(),
        1,
        "one pod answers a client with affinity: {got:?}"
    );
    assert!(all.is_superset(&got), "{got:?}");

    // `externalTrafficPolicy: Local`: a node port answers only on the node with an
    // endpoint, and the pod sees the client's own address (no masquerade).
    apply_service(
        &k,
        "echo",
        "  type: NodePort\n  externalTrafficPolicy: Local\n  selector: {app: echo}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
        1,
    );
    let echo_port = k.json(&["get", "svc", "echo"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("node port") as u16;
    let b_addr = b.address().to_string();
    let seen = eventually("the echo node port on host-b", || {
        last_line(&b_addr, echo_port, "/cgi-bin/ip").ok()
    });
    let seen = seen.trim_start_matches("[::ffff:").trim_end_matches(']');
    assert_eq!(
        seen,
        hosts.gateway.to_string(),
        "the pod sees the outside client's address"
    );
    assert!(
        last_line(&a.address().to_string(), echo_port, "/cgi-bin/ip").is_err(),
        "host-a has no echo endpoint: its node port refuses under the Local policy"
    );

    // Load balancers: a Service of another class is left alone; ours gets an address from
    // the pool, which one node announces on the test bridge, reachable from outside.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml(
            "theirs",
            "  type: LoadBalancer\n  loadBalancerClass: example.com/other\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: http}\n",
        ),
    );
    k.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    let lb_ip: std::net::Ipv4Addr = eventually("an external IP", || {
        k.json(&["get", "svc", "web"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
    });
    let (first, last) = hosts.load_balancer_pool();
    assert!(
        first <= lb_ip && lb_ip <= last,
        "{lb_ip} from the pool {first}-{last}"
    );
    let shown = k.ok(&["get", "svc", "web"]);
    assert!(
        shown.contains(&lb_ip.to_string()),
        "EXTERNAL-IP shown:\n{shown}"
    );
    assert_eq!(
        answers(&lb_ip.to_string(), 80, "/env/POD_NAME", 40),
        v2,
        "through the load balancer address"
    );
    let theirs = k.json(&["get", "svc", "theirs"]);
    assert!(
        theirs["status"]["loadBalancer"]["ingress"].is_null(),
        "a Service of another class gets no address here: {theirs}"
    );
}
