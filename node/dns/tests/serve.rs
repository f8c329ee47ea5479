//! The cluster DNS served on loopback, asked over UDP and TCP as a pod's resolver asks it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_dns::{Config, Dns, Zone};

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(
    ns: &str,
    service: &str,
    endpoints: serde_json::Value,
    ports: serde_json::Value,
) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": format!("{service}-x"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }))
        .unwrap(),
    )
}

/// A cluster: a ClusterIP Service with named ports, a headless StatefulSet Service with
/// two ready pods and one unready, an ExternalName to the first Service and one to a name
/// outside.
fn zone(domain: &str) -> Zone {
    let services = [
        service(
            "default",
            "web",
            serde_json::json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
        service(
            "db",
            "pg",
            serde_json::json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
        service(
            "default",
            "alias",
            serde_json::json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}),
        ),
        service(
            "default",
            "outside",
            serde_json::json!({"type": "ExternalName", "externalName": "www.x.svc.upstream.test"}),
        ),
    ];
    let pg = slice(
        "db",
        "pg",
        serde_json::json!([
            {"addresses": ["10.244.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.1.7"], "hostname": "pg-1", "conditions": {"ready": true}},
            {"addresses": ["10.244.1.9"], "hostname": "pg-2", "conditions": {"ready": false}},
            {"addresses": ["10.244.2.3"]},
        ]),
        serde_json::json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
    );
    Zone::build(domain, services.iter(), |ns, name| {
        if (ns, name) == ("db", "pg") {
            vec![pg.clone()]
        } else {
            vec![]
        }
    })
}

fn config(domain: &str, upstreams: Vec<SocketAddr>) -> Config {
    let mut c = Config::new("127.0.0.1:0".parse().unwrap(), domain);
    c.upstreams = upstreams;
    c.threads = 2;
    c
}

fn ask_with(server: SocketAddr, name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        q.set_edns(e);
    }
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&q.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("an answer within 5 s");
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(
        reply.metadata.id, q.metadata.id,
        "the reply carries the query's id"
    );
    reply
}

fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    ask_with(server, name, rtype, false)
}

fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    use std::io::{Read, Write};
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let bytes = q.to_vec().unwrap();
    let mut s = std::net::TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    Message::from_vec(&reply).unwrap()
}

fn ips(m: &Message) -> Vec<IpAddr> {
    addrs(&m.answers)
}

fn addrs(records: &[hickory_proto::rr::Record]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_names_answer_as_the_kubernetes_dns_specification_says() {
    let dns = Dns::serve(config("cluster.local", vec![])).unwrap();
    let at = dns.listen;
    // Before the first lists the cluster's names fail (retried), never NXDOMAIN (cached).
    let early = tokio::task::spawn_blocking(move || {
        ask(at, "web.default.svc.cluster.local", RecordType::A)
    })
    .await
    .unwrap();
    assert_eq!(early.metadata.response_code, ResponseCode::ServFail);
    dns.set_zone(zone("cluster.local"));

    tokio::task::spawn_blocking(move || {
        // A Service: its cluster IP, authoritatively, with the 5 s TTL.
        let r = ask(at, "web.default.svc.cluster.local", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(ips(&r), [ip("10.96.0.20")]);
        assert_eq!(r.answers[0].ttl, 5);
        // Names are case-insensitive; the answer keeps the question's spelling.
        let r = ask(at, "Web.Default.SVC.cluster.local", RecordType::A);
        assert_eq!(ips(&r), [ip("10.96.0.20")]);
        // No IPv6 address: the name exists (NODATA, the zone's SOA), nothing answered.
        let r = ask(at, "web.default.svc.cluster.local", RecordType::AAAA);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        // SRV of a named port, the target's address beside it.
        let r = ask(at, "_http._tcp.web.default.svc.cluster.local", RecordType::SRV);
        let RData::SRV(srv) = &r.answers[0].data else { panic!("{r:?}") };
        assert_eq!((srv.port, srv.target.to_ascii().as_str()), (80, "web.default.svc.cluster.local."));
        assert_eq!(addrs(&r.additionals), [ip("10.96.0.20")]);
        let r = ask(at, "_dns._udp.web.default.svc.cluster.local", RecordType::SRV);
        let RData::SRV(srv) = &r.answers[0].data else { panic!("{r:?}") };
        assert_eq!(srv.port, 53);
        assert_eq!(
            ask(at, "_http._udp.web.default.svc.cluster.local", RecordType::SRV).metadata.response_code,
            ResponseCode::NXDomain
        );
        // Headless: the ready endpoints (the unready pod is not there), and each pod by name.
        let r = ask(at, "pg.db.svc.cluster.local", RecordType::A);
        assert_eq!(ips(&r), [ip("10.244.0.5"), ip("10.244.1.7"), ip("10.244.2.3")]);
        assert_eq!(ips(&ask(at, "pg-1.pg.db.svc.cluster.local", RecordType::A)), [ip("10.244.1.7")]);
        assert_eq!(ips(&ask(at, "10-244-2-3.pg.db.svc.cluster.local", RecordType::A)), [ip("10.244.2.3")]);
        assert_eq!(
            ask(at, "pg-2.pg.db.svc.cluster.local", RecordType::A).metadata.response_code,
            ResponseCode::NXDomain
        );
        let r = ask(at, "_pg._tcp.pg.db.svc.cluster.local", RecordType::SRV);
        let mut targets: Vec<String> = r
            .answers
            .iter()
            .filter_map(|a| match &a.data {
                RData::SRV(s) => Some(s.target.to_ascii()),
                _ => None,
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            ["10-244-2-3.pg.db.svc.cluster.local.", "pg-0.pg.db.svc.cluster.local.", "pg-1.pg.db.svc.cluster.local."]
        );
        // ExternalName: a CNAME, followed when the target is the cluster's.
        let r = ask(at, "alias.default.svc.cluster.local", RecordType::A);
        assert!(matches!(&r.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "web.default.svc.cluster.local."));
        assert_eq!(ips(&r), [ip("10.96.0.20")]);
        // Pods by their dashed address.
        assert_eq!(ips(&ask(at, "10-244-3-4.team.pod.cluster.local", RecordType::A)), [ip("10.244.3.4")]);
        // Reverse names of cluster IPs and of named endpoints.
        let r = ask(at, "20.0.96.10.in-addr.arpa", RecordType::PTR);
        assert!(matches!(&r.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web.default.svc.cluster.local."));
        let r = ask(at, "5.0.244.10.in-addr.arpa", RecordType::PTR);
        assert!(matches!(&r.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "pg-0.pg.db.svc.cluster.local."));
        // Names of the zone that name nothing: NXDOMAIN with the SOA.
        for name in ["nope.default.svc.cluster.local", "web.nope.svc.cluster.local", "a.b.c.d.e.cluster.local"] {
            let r = ask(at, name, RecordType::A);
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert_eq!(r.authorities[0].record_type(), RecordType::SOA, "{name}");
        }
        // Over TCP too.
        assert_eq!(ips(&ask_tcp(at, "web.default.svc.cluster.local", RecordType::A)), [ip("10.96.0.20")]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let dns = Dns::serve(config("cluster.local", vec![])).unwrap();
    let at = dns.listen;
    let svc = service("default", "many", serde_json::json!({"clusterIP": "None"}));
    let endpoints: Vec<serde_json::Value> = (0..200)
        .map(|i| serde_json::json!({"addresses": [format!("10.244.{}.{}", i / 200, i % 200 + 1)]}))
        .collect();
    let slice = slice(
        "default",
        "many",
        serde_json::Value::Array(endpoints),
        serde_json::json!([]),
    );
    dns.set_zone(Zone::build("cluster.local", [&svc], |_, _| {
        vec![slice.clone()]
    }));
    tokio::task::spawn_blocking(move || {
        let udp = ask(at, "many.default.svc.cluster.local", RecordType::A);
        assert!(
            udp.metadata.truncation,
            "200 addresses do not fit 512 bytes"
        );
        assert!(udp.answers.is_empty());
        let edns = ask_with(at, "many.default.svc.cluster.local", RecordType::A, true);
        assert!(edns.metadata.truncation, "nor 1232");
        let tcp = ask_tcp(at, "many.default.svc.cluster.local", RecordType::A);
        assert!(!tcp.metadata.truncation);
        assert_eq!(ips(&tcp).len(), 200);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_go_to_the_node_resolvers() {
    // The node's resolver: another DNS server on loopback, holding `upstream.test`.
    let upstream = Dns::serve(config("upstream.test", vec![])).unwrap();
    let www = service("x", "www", serde_json::json!({"clusterIP": "192.0.2.7"}));
    upstream.set_zone(Zone::build("upstream.test", [&www], |_, _| vec![]));
    // A dead resolver first: the next one is asked.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = Dns::serve(config(
        "cluster.local",
        vec![dead.local_addr().unwrap(), upstream.listen],
    ))
    .unwrap();
    dns.set_zone(zone("cluster.local"));
    let at = dns.listen;
    tokio::task::spawn_blocking(move || {
        let r = ask(at, "www.x.svc.upstream.test", RecordType::A);
        assert_eq!(ips(&r), [ip("192.0.2.7")]);
        let r = ask(at, "gone.x.svc.upstream.test", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        // An ExternalName outside the cluster: the CNAME, then the target as the node's
        // resolvers answer it.
        let r = ask(at, "outside.default.svc.cluster.local", RecordType::A);
        assert!(matches!(&r.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "www.x.svc.upstream.test."));
        assert_eq!(ips(&r), [ip("192.0.2.7")]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_an_error_or_nothing_and_the_server_keeps_serving() {
    let dns = Dns::serve(config("cluster.local", vec![])).unwrap();
    dns.set_zone(zone("cluster.local"));
    let at = dns.listen;
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send_to(&[0x12, 0x34, 0xff, 0xff, 0xff], at).unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            (r.metadata.id, r.metadata.response_code),
            (0x1234, ResponseCode::FormErr)
        );
        // Two questions in one query.
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("a.cluster.local").unwrap(),
            RecordType::A,
        ));
        q.add_query(Query::query(
            Name::from_ascii("b.cluster.local").unwrap(),
            RecordType::A,
        ));
        socket.send_to(&q.to_vec().unwrap(), at).unwrap();
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(
            Message::from_vec(&buf[..n]).unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
        assert_eq!(
            ips(&ask(at, "web.default.svc.cluster.local", RecordType::A)),
            [ip("10.96.0.20")]
        );
    })
    .await
    .unwrap();
}
