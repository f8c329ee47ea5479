//! Cluster DNS and Service variables, seen from inside pods of both runtimes: the names of
//! Kubernetes' DNS specification resolve through the node's DNS, `resolv.conf` carries the
//! search path and `ndots:5`, and containers get the docker-link variables of Services.

use std::collections::HashSet;

use skiff_conformance::{Backend, Cluster, Kubectl, Registry};

use crate::services::{cluster_ip, endpoints_of, named_deployment, service_yaml};
use crate::workloads::{eventually, items};

fn pod_ips(k: &Kubectl, selector: &str) -> HashSet<String> {
    items(k, &["pods", "-l", selector])
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect()
}

/// The addresses busybox's `nslookup` prints for `name` (its own resolver, reading the
/// pod's `resolv.conf`), after the server's own lines.
fn nslookup(k: &Kubectl, name: &str) -> HashSet<String> {
    let out = k.ok(&["exec", "client", "--", "nslookup", name]);
    out.split("Name:")
        .skip(1)
        .flat_map(|answer| answer.lines().filter_map(|l| l.strip_prefix("Address:")))
        .map(|a| a.trim().to_string())
        .collect()
}

#[test]
fn cluster_names_resolve_in_wasm_and_container_pods() {
    let registry = Registry::start();
    let build = skiff_conformance::repo_root().join("examples/build");
    let wasm = registry.push(&build.join("http.wasm"), "http");
    let busybox = registry.push_example("busybox-oci", "busybox");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    k.ok_stdin(
        &["apply", "-f", "-"],
        &named_deployment("web", "v1", &wasm, "wasmtime", 1),
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml(
            "web",
            "  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n",
        ),
    );
    // A StatefulSet behind its headless Service: db-0 and db-1 by name.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "{}---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 2\n  selector:\n    matchLabels: {{app: db}}\n  template:\n    metadata:\n      labels: {{app: db}}\n    spec:\n      runtimeClassName: wasmtime\n      containers:\n      - name: db\n        image: {wasm}\n        ports: [{{name: http, containerPort: 8080}}]\n        env:\n        - name: POD_NAME\n          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}\n        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n",
            service_yaml("db", "  clusterIP: None\n  selector: {app: db}\n  ports:\n  - {name: http, port: 8080}\n")
        ),
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        &service_yaml(
            "alias",
            "  type: ExternalName\n  externalName: web.default.svc.cluster.local\n",
        ),
    );
    eventually("web and both db pods ready", || {
        let web = endpoints_of(&k, "web").iter().filter(|e| e.1).count();
        let db = endpoints_of(&k, "db").iter().filter(|e| e.1).count();
        (web == 1 && db == 2).then_some(())
    });
    let web_ip = cluster_ip(&k, "web");
    // A container pod made after the Services: their variables are in its environment,
    // and `$(VAR)` may name them.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  hostname: probe\n  subdomain: db\n  hostAliases: [{{ip: 192.0.2.10, hostnames: [foo.example, bar]}}]\n  runtimeClassName: youki\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: sh\n    image: {busybox}\n    command: [sleep, '3600']\n    env:\n    - {{name: WEB_URL, value: 'http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT_HTTP)/'}}\n"
        ),
    );
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);

    let resolv = k.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("options ndots:5"),
        "{resolv}"
    );
    // Its names: spec.hostname, its fully qualified name under its subdomain, and its
    // host aliases in /etc/hosts.
    assert_eq!(k.ok(&["exec", "client", "--", "hostname"]).trim(), "probe");
    let hosts = k.ok(&["exec", "client", "--", "cat", "/etc/hosts"]);
    let client_ip = k.json(&["get", "pod", "client"])["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        hosts.contains(&format!(
            "{client_ip}\tprobe.db.default.svc.cluster.local\tprobe\n"
        )) && hosts.contains("192.0.2.10\tfoo.example\tbar\n"),
        "{hosts}"
    );
    let env = k.ok(&["exec", "client", "--", "env"]);
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {env}"))
            .to_string()
    };
    assert_eq!(var("WEB_SERVICE_HOST"), web_ip);
    assert_eq!(var("WEB_SERVICE_PORT"), "80");
    assert_eq!(var("WEB_PORT"), format!("tcp://{web_ip}:80"));
    assert_eq!(var("WEB_PORT_80_TCP_ADDR"), web_ip);
    assert_eq!(var("WEB_URL"), format!("http://{web_ip}:80/"));
    assert_eq!(var("KUBERNETES_SERVICE_PORT"), "443");
    assert!(
        !env.contains("DB_SERVICE_HOST"),
        "a headless Service has no variables: {env}"
    );

    // The names, from the container pod.
    let web = HashSet::from([web_ip.clone()]);
    let db = pod_ips(&k, "app=db");
    assert_eq!(nslookup(&k, "web.default.svc.cluster.local"), web);
    assert_eq!(nslookup(&k, "db.default.svc.cluster.local"), db);
    let db0 = k.json(&["get", "pod", "db-0"])["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        nslookup(&k, "db-0.db.default.svc.cluster.local"),
        HashSet::from([db0.clone()])
    );
    assert!(nslookup(&k, "alias.default.svc.cluster.local").contains(&web_ip));
    // A short name through the search path, and on through the Service's cluster IP.
    let web_pod = items(&k, &["pods", "-l", "app=web"])[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        k.ok(&[
            "exec",
            "client",
            "--",
            "wget",
            "-qO-",
            "http://web/env/POD_NAME"
        ])
        .trim(),
        web_pod
    );
    let missing = k.run(&[
        "exec",
        "client",
        "--",
        "nslookup",
        "nope.default.svc.cluster.local",
    ]);
    assert!(
        missing.stdout.contains("NXDOMAIN") || missing.stderr.contains("NXDOMAIN"),
        "{missing:?}"
    );

    // A Wasm command's own lookups (wasi:sockets/ip-name-lookup) go through its pod's
    // resolver too: short names by the search path.
    let testbed = registry.push(&build.join("testbed.wasm"), "testbed");
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lookup\nspec:\n  runtimeClassName: wasmtime\n  restartPolicy: Never\n  containers:\n  - name: a\n    image: {testbed}\n    args: [lookup, web]\n  - name: b\n    image: {testbed}\n    args: [lookup, db-0.db]\n  - name: c\n    image: {testbed}\n    args: [lookup, nope.default.svc.cluster.local]\n"
        ),
    );
    eventually("the lookups done", || {
        let phase = k.json(&["get", "pod", "lookup"])["status"]["phase"].clone();
        (phase == "Failed" || phase == "Succeeded").then_some(())
    });
    assert_eq!(k.ok(&["logs", "lookup", "-c", "a"]).trim(), web_ip);
    assert_eq!(k.ok(&["logs", "lookup", "-c", "b"]).trim(), db0);
    let c = k.run(&["logs", "lookup", "-c", "c"]);
    assert!(
        c.stdout.contains("testbed:"),
        "a name that does not exist fails: {c:?}"
    );

    // From a Wasm pod: its outgoing requests resolve names by the same rules.
    let wasm_ip = pod_ips(&k, "app=web")
        .into_iter()
        .next()
        .expect("a web pod IP");
    for (path, expect) in [
        ("/fetch/web/env/POD_NAME", web_pod.as_str()),
        ("/fetch/web.default/env/POD_NAME", web_pod.as_str()),
        ("/fetch/db-1.db:8080/env/POD_NAME", "db-1"),
        (
            "/fetch/alias.default.svc.cluster.local/env/POD_NAME",
            web_pod.as_str(),
        ),
    ] {
        let (code, body) = crate::node::http_get(&wasm_ip, 8080, path).expect(path);
        assert_eq!((code, body.trim()), (200, expect), "{path}");
    }
}
