use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Type};
use tokio::io::AsyncWriteExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_pods_reach_each_other_and_loopback_stays_private() {
    let cfg = config('c', 0, 2, false);
    let net = start(cfg.clone()).await;
    let _cleanup = CleanupOnPanic(cfg.clone());
    let a = net.create("pod-a").await.unwrap();
    let b = net.create("pod-b").await.unwrap();
    assert_ne!(a.ip, b.ip);
    for s in [&a, &b] {
        assert!(cfg.pod_cidr.contains(&s.ip));
        assert_eq!(s.gateway, cfg.pod_cidr.hosts().next().unwrap());
        assert!(s.netns.as_deref().unwrap().starts_with(&cfg.state_dir));
        assert!(link_exists(s.host_veth.as_deref().unwrap()));
    }

    // The pod's sockets live in its own namespace, not the host's.
    let host_ns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let a_ns = a
        .run_in(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .unwrap();
    assert_ne!(host_ns, a_ns);
    // The calling thread is back in its own namespace afterwards, even when `f` panicked.
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        host_ns
    );
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.run_in(|| panic!("inside the pod")).unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        host_ns
    );

    // No IPv6 address on the pod's eth0 (no link-local address, so nothing of it flooded
    // through the bridge), `::1` on its loopback: `::1` answers, and a listener on `[::]`
    // takes IPv4 connections on the pod's address. The kernel lists every IPv6 address of
    // a namespace in its if_inet6 table (address, index, prefix, scope, flags, name).
    let v6_links = |table: &str| -> Vec<String> {
        table
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    };
    let (pod_v6, v6_listener) = a
        .run_in(|| {
            let l = std::net::TcpListener::bind("[::]:0").unwrap();
            (
                std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap(),
                l,
            )
        })
        .unwrap();
    assert_eq!(v6_links(&pod_v6), ["lo"], "{pod_v6}");
    // None on the host's end of its veth either, which is up on the bridge.
    let host_veth = a.host_veth.as_deref().unwrap();
    let host_v6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap();
    assert!(
        !v6_links(&host_v6).iter().any(|l| l == host_veth),
        "{host_v6}"
    );
    let flags = std::fs::read_to_string(format!(
        "/sys/class/net/{}/operstate",
        a.host_veth.as_deref().unwrap()
    ))
    .unwrap();
    assert_eq!(flags.trim(), "up", "{}", a.host_veth.as_deref().unwrap());
    let v6_port = v6_listener.local_addr().unwrap().port();
    assert!(
        a.run_in(|| std::net::TcpStream::connect(("::1", v6_port)).is_ok())
            .unwrap(),
        "::1 in the pod"
    );
    assert!(
        connect_from(Some(&b), SocketAddr::from((a.ip, v6_port))),
        "a [::] listener reached on the pod's IPv4 address"
    );
    drop(v6_listener);

    // Host -> pod A, at A's IP; the pod sees the host come from the gateway.
    // A pod port that nothing on the host listens on, so that the host check below
    // means something.
    let (listener, port) = (0..20)
        .map(|_| {
            let l = a
                .bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                .unwrap();
            let port = l.local_addr().unwrap().port();
            (l, port)
        })
        .find(|(_, port)| host_port_free(*port))
        .expect("a port free on the host");
    assert!(
        !connect_from(None, SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        "a pod listener must not be reachable on the host's loopback"
    );
    send_from(None, SocketAddr::from((a.ip, port)), b"from host");
    let (peer, got) = accept_one(listener).await;
    assert_eq!(got, b"from host");
    assert_eq!(peer, a.gateway);

    // Pod A -> pod B over the bridge, with a socket A created and tokio connected.
    let listener = b
        .bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap();
    let b_addr = SocketAddr::from((b.ip, listener.local_addr().unwrap().port()));
    let sock = a
        .socket(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .unwrap();
    sock.set_nonblocking(true).unwrap();
    let sock = tokio::net::TcpSocket::from_std_stream(sock.into());
    let mut stream = sock.connect(b_addr).await.unwrap();
    stream.write_all(b"from a").await.unwrap();
    drop(stream);
    let (peer, got) = accept_one(listener).await;
    assert_eq!(got, b"from a");
    assert_eq!(peer, a.ip, "pod to pod traffic is not translated");

    // UDP too: a datagram from A reaches B's socket, from A's address.
    let udp = b
        .bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap();
    let udp_addr = SocketAddr::from((b.ip, udp.local_addr().unwrap().port()));
    a.run_in(|| {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.send_to(b"datagram", udp_addr).unwrap();
    })
    .unwrap();
    let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) =
        tokio::time::timeout(std::time::Duration::from_secs(5), udp.recv_from(&mut buf))
            .await
            .expect("datagram in time")
            .unwrap();
    assert_eq!(&buf[..n], b"datagram");
    assert_eq!(from.ip(), std::net::IpAddr::V4(a.ip));

    // A's loopback is A's alone.
    let lo = a
        .bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .unwrap();
    let lo_addr = lo.local_addr().unwrap();
    assert!(
        connect_from(Some(&a), lo_addr),
        "A reaches its own loopback"
    );
    assert!(
        !connect_from(Some(&b), lo_addr),
        "B must not reach A's loopback"
    );
    assert!(
        !connect_from(Some(&b), SocketAddr::from((a.ip, lo_addr.port()))),
        "a loopback listener is not on A's pod IP"
    );
    if host_port_free(lo_addr.port()) {
        assert!(
            !connect_from(None, lo_addr),
            "the host must not reach A's loopback"
        );
    }
    drop(lo);

    net.shutdown(true).await.unwrap();
    assert!(!link_exists(&cfg.bridge));
    assert!(!link_exists(a.host_veth.as_deref().unwrap()));
    assert_eq!(mounts_under(&cfg.state_dir), 0);
    assert!(!cfg.state_dir.exists());
}

/// Two networks on one host (as two agents would have) with different bridges and
/// CIDRs: a pod of one reaches a pod of the other through the host, and the first
/// network's masquerade rewrites the source to the host's address on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_networks_coexist_and_egress_is_masqueraded() {
    let inside_cfg = config('m', 1, 1, true);
    let outside_cfg = config('o', 2, 0, false);
    let inside = start(inside_cfg.clone()).await;
    let _cleanup_inside = CleanupOnPanic(inside_cfg.clone());
    let outside = start(outside_cfg.clone()).await;
    let _cleanup_outside = CleanupOnPanic(outside_cfg.clone());
    assert_ne!(inside.veth_prefix(), outside.veth_prefix());

    let a = inside.create("pod-a").await.unwrap();
    let x = outside.create("pod-x").await.unwrap();
    let listener = x
        .bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap();
    let x_addr = SocketAddr::from((x.ip, listener.local_addr().unwrap().port()));
    send_from(Some(&a), x_addr, b"egress");
    let (peer, got) = accept_one(listener).await;
    assert_eq!(got, b"egress");
    assert_eq!(
        peer, x.gateway,
        "the source of masqueraded traffic is the host's address on the way out"
    );

    // And the other way, from a network without masquerade: the source is kept.
    let listener = a
        .bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap();
    let a_addr = SocketAddr::from((a.ip, listener.local_addr().unwrap().port()));
    send_from(Some(&x), a_addr, b"ingress");
    let (peer, got) = accept_one(listener).await;
    assert_eq!(got, b"ingress");
    assert_eq!(peer, x.ip);

    let table = std::process::Command::new("nft")
        .args(["list", "table", "ip", &inside_cfg.bridge])
        .output()
        .unwrap();
    assert!(table.status.success(), "masquerade table loaded");
    inside.shutdown(true).await.unwrap();
    outside.shutdown(true).await.unwrap();
    let table = std::process::Command::new("nft")
        .args(["list", "table", "ip", &inside_cfg.bridge])
        .output()
        .unwrap();
    assert!(!table.status.success(), "masquerade table removed");
}

/// An address-only sandbox: the pod's IP in the namespace the node's address-only pods
/// share, none of its own; reached from the host and from other pods with their own
/// addresses as source, binding only its own IP, its ports apart from the host's; promoted
/// to a namespace with the same IP; adopted after a crash; gone when removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_only_sandboxes_reach_and_are_reached_and_can_be_promoted() {
    let cfg = config('a', 8, 0, false);
    let net = start(cfg.clone()).await;
    let _cleanup = CleanupOnPanic(cfg.clone());
    let a = net.create("pod-a").await.unwrap();
    let b = net.create_address_only("pod-b").await.unwrap();
    assert!(b.is_address_only() && b.host_veth.is_none());
    assert!(cfg.pod_cidr.contains(&b.ip) && b.ip != a.ip);
    assert_eq!(
        net.create_address_only("pod-b").await.unwrap(),
        b,
        "idempotent"
    );
    assert_eq!(net.create("pod-b").await.unwrap(), b, "one sandbox per pod");
    let shared = b.shared_netns.clone().unwrap();
    assert_eq!(addresses_32(Some(&shared), "eth0"), [b.ip]);
    assert!(
        bridge_addresses(&cfg.bridge).is_empty(),
        "nothing on the host's side"
    );
    assert!(matches!(
        b.run_in(|| ()),
        Err(skiff_podnet::Error::NoNamespace(ip)) if ip == b.ip
    ));

    // Its listener takes the unspecified address as its own IP, and only that.
    let listener = b
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8080))
        .unwrap();
    assert_eq!(
        listener.local_addr().unwrap(),
        SocketAddr::new(b.ip.into(), 8080)
    );
    assert!(
        b.bind_tcp(SocketAddr::new([127, 0, 0, 1].into(), 8081))
            .is_err()
    );
    let to_b = SocketAddr::new(b.ip.into(), 8080);
    let accepted = tokio::spawn(accept_one(listener));
    send_from(Some(&a), to_b, b"from a");
    assert_eq!(accepted.await.unwrap(), (a.ip, b"from a".to_vec()));
    let listener = b.bind_tcp(SocketAddr::new(b.ip.into(), 8082)).unwrap();
    let accepted = tokio::spawn(accept_one(listener));
    send_from(None, SocketAddr::new(b.ip.into(), 8082), b"from the node");
    assert_eq!(accepted.await.unwrap().1, b"from the node".to_vec());

    // Its ports are not the host's: with the host listening on all its addresses at a
    // port, the pod still listens on it, and what is sent to the pod's IP reaches the pod.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let listener = b
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), port))
        .unwrap();
    let accepted = tokio::spawn(accept_one(listener));
    send_from(
        Some(&a),
        SocketAddr::new(b.ip.into(), port),
        b"not the host",
    );
    assert_eq!(accepted.await.unwrap(), (a.ip, b"not the host".to_vec()));
    drop(host);
    // Outgoing: from its IP; a loopback destination is the pod itself, not the node.
    let on_a = a
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8085))
        .unwrap();
    let accepted = tokio::spawn(accept_one(on_a));
    let dest = b.destination(SocketAddr::new(a.ip.into(), 8085));
    connect_and_send(b.outgoing_tcp(false).unwrap(), dest, b"from b").await;
    assert_eq!(accepted.await.unwrap(), (b.ip, b"from b".to_vec()));
    let own = b
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8086))
        .unwrap();
    let host = std::net::TcpListener::bind("127.0.0.1:8086");
    let accepted = tokio::spawn(accept_one(own));
    let dest = b.destination(SocketAddr::new([127, 0, 0, 1].into(), 8086));
    assert_eq!(dest, SocketAddr::new(b.ip.into(), 8086));
    connect_and_send(b.outgoing_tcp(false).unwrap(), dest, b"to itself").await;
    assert_eq!(accepted.await.unwrap(), (b.ip, b"to itself".to_vec()));
    drop(host);
    // Two address-only pods on one port, each on its IP.
    let c = net.create_address_only("pod-c").await.unwrap();
    assert_eq!(c.shared_netns, b.shared_netns);
    let on_b = b
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8090))
        .unwrap();
    let on_c = c
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8090))
        .unwrap();
    let (to_b, to_c) = (
        tokio::spawn(accept_one(on_b)),
        tokio::spawn(accept_one(on_c)),
    );
    send_from(Some(&a), SocketAddr::new(c.ip.into(), 8090), b"to c");
    send_from(Some(&a), SocketAddr::new(b.ip.into(), 8090), b"to b");
    assert_eq!(to_c.await.unwrap().1, b"to c".to_vec());
    assert_eq!(to_b.await.unwrap().1, b"to b".to_vec());

    // Promoted: the same IP, now the pod's eth0 in a namespace of its own.
    let promoted = net.promote("pod-b").await.unwrap();
    assert_eq!(promoted.ip, b.ip);
    assert!(!promoted.is_address_only());
    assert!(link_exists(promoted.host_veth.as_deref().unwrap()));
    assert_eq!(addresses_32(Some(&shared), "eth0"), [c.ip]);
    assert_eq!(net.get("pod-b").await.unwrap(), promoted);
    assert_eq!(net.promote("pod-b").await.unwrap(), promoted, "idempotent");
    let listener = promoted
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8083))
        .unwrap();
    let accepted = tokio::spawn(accept_one(listener));
    send_from(
        Some(&a),
        SocketAddr::new(b.ip.into(), 8083),
        b"to the namespace",
    );
    assert_eq!(
        accepted.await.unwrap(),
        (a.ip, b"to the namespace".to_vec())
    );

    // A crash: the next network adopts the shared namespace and the address it finds.
    drop(net);
    let net = skiff_podnet::PodNetwork::new(cfg.clone()).await.unwrap();
    assert_eq!(net.get("pod-c").await, Some(c.clone()));
    assert_eq!(net.get("pod-b").await, Some(promoted.clone()));
    assert_eq!(addresses_32(Some(&shared), "eth0"), [c.ip]);
    let listener = c
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8084))
        .unwrap();
    let accepted = tokio::spawn(accept_one(listener));
    send_from(None, SocketAddr::new(c.ip.into(), 8084), b"after the crash");
    assert_eq!(accepted.await.unwrap().1, b"after the crash".to_vec());
    net.remove("pod-c").await.unwrap();
    assert!(addresses_32(Some(&shared), "eth0").is_empty());
    assert!(!connect_from(None, SocketAddr::new(c.ip.into(), 8080)));
    assert_eq!(net.stats().ips_in_use, 2, "pod-a and pod-b");
    // The last pod's address gone, the next one is reached as the first was (the
    // namespace keeps its routes).
    let d = net.create_address_only("pod-d").await.unwrap();
    let listener = d
        .bind_tcp(SocketAddr::new([0, 0, 0, 0].into(), 8087))
        .unwrap();
    let accepted = tokio::spawn(accept_one(listener));
    send_from(
        None,
        SocketAddr::new(d.ip.into(), 8087),
        b"after the last went",
    );
    assert_eq!(accepted.await.unwrap().1, b"after the last went".to_vec());
    net.remove("pod-d").await.unwrap();
    net.shutdown(true).await.unwrap();
    assert!(!link_exists(&cfg.bridge));
    assert!(!shared.exists());
}

async fn connect_and_send(socket: socket2::Socket, to: SocketAddr, data: &[u8]) {
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(data).await.unwrap();
    stream.shutdown().await.unwrap();
}
