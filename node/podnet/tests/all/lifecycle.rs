use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};

use futures::StreamExt;
use skiff_podnet::PodNetwork;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_and_remove_releases_everything() {
    let cfg = config('r', 3, 1, false);
    let net = start(cfg.clone()).await;
    let _cleanup = CleanupOnPanic(cfg.clone());
    net.fill_pool().await.unwrap();
    let a = net.create("pod-a").await.unwrap();
    assert_eq!(
        net.create("pod-a").await.unwrap(),
        a,
        "same pod, same sandbox"
    );
    assert_eq!(net.get("pod-a").await, Some(a.clone()));
    assert_eq!(net.list().await, vec![a.clone()]);
    net.fill_pool().await.unwrap();
    let in_use = net.stats().ips_in_use;

    net.remove("pod-a").await.unwrap();
    assert!(!link_exists(a.host_veth.as_deref().unwrap()));
    assert!(!a.netns.as_deref().unwrap().exists());
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(a.netns.as_deref().unwrap().to_str().unwrap()),
        "namespace unmounted"
    );
    assert!(
        a.run_in(|| ()).is_err(),
        "a removed sandbox cannot be entered"
    );
    assert_eq!(net.get("pod-a").await, None);
    assert!(net.list().await.is_empty());
    assert_eq!(net.stats().ips_in_use, in_use - 1, "IP freed");
    net.remove("pod-a").await.unwrap();
    net.remove("never-existed").await.unwrap();

    // A new pod does not get the just-freed IP (peers may still cache it).
    let b = net.create("pod-b").await.unwrap();
    assert_ne!(b.ip, a.ip);
    net.shutdown(true).await.unwrap();
}

/// The agent restarts: the sandboxes of running pods survive it, are listed again, still
/// carry traffic, and their IPs are not handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_survive_an_agent_restart() {
    let cfg = config('s', 4, 2, true);
    let net = start(cfg.clone()).await;
    let _cleanup = CleanupOnPanic(cfg.clone());
    let a = net.create("pod-a").await.unwrap();
    let b = net.create("pod-b").await.unwrap();
    let gone = net.create("pod-gone").await.unwrap();
    net.remove("pod-gone").await.unwrap();
    drop(net);

    let net = PodNetwork::new(cfg.clone()).await.unwrap();
    let mut listed = net.list().await;
    listed.sort_by_key(|s| s.pod_uid.clone());
    assert_eq!(listed, vec![a.clone(), b.clone()]);
    assert_eq!(net.get("pod-gone").await, None);
    assert!(!gone.netns.as_deref().unwrap().exists());
    assert!(!link_exists(gone.host_veth.as_deref().unwrap()));

    let listener = a
        .bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    send_from(Some(&b), SocketAddr::from((a.ip, port)), b"still here");
    let (_, got) = accept_one(listener).await;
    assert_eq!(got, b"still here");

    let mut seen: HashSet<Ipv4Addr> = [a.ip, b.ip].into();
    for i in 0..6 {
        let s = net.create(&format!("pod-new-{i}")).await.unwrap();
        assert!(seen.insert(s.ip), "{} handed out twice", s.ip);
    }
    net.shutdown(true).await.unwrap();
    assert!(!link_exists(&cfg.bridge));
    assert!(!link_exists(a.host_veth.as_deref().unwrap()));
    assert_eq!(mounts_under(&cfg.state_dir), 0);
    assert!(!cfg.state_dir.exists());
}

/// A crash in the middle of a removal leaves a record and a veth whose namespace is
/// gone, plus a stray namespace pin; the next start cleans all of it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_cleans_up_what_a_crash_left_half_done() {
    let cfg = config('h', 6, 0, false);
    let net = start(cfg.clone()).await;
    let _cleanup = CleanupOnPanic(cfg.clone());
    let kept = net.create("pod-kept").await.unwrap();
    let half = net.create("pod-half").await.unwrap();
    drop(net);
    // The crash: half's namespace pin is gone (its veth lingers while something holds
    // the namespace, here a thread of this test), and a stray pin exists.
    let holder = half.netns.clone().unwrap();
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let ns = std::fs::File::open(&holder).unwrap();
        ready_tx.send(()).unwrap();
        hold_rx.recv().unwrap();
        drop(ns);
    });
    ready_rx.recv().unwrap();
    let status = std::process::Command::new("umount")
        .arg("-l")
        .arg(half.netns.as_deref().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(half.netns.as_deref().unwrap()).unwrap();
    assert!(
        link_exists(half.host_veth.as_deref().unwrap()),
        "the held namespace keeps the veth"
    );
    let stray = cfg.state_dir.join("netns").join("stray");
    std::fs::write(&stray, "").unwrap();

    let net = PodNetwork::new(cfg.clone()).await.unwrap();
    assert_eq!(net.list().await, vec![kept.clone()]);
    assert!(
        !link_exists(half.host_veth.as_deref().unwrap()),
        "orphan veth deleted"
    );
    assert!(!stray.exists(), "stray pin removed");
    assert_eq!(net.stats().ips_in_use, 1, "half's IP is free again");
    hold_tx.send(()).unwrap();
    holder.join().unwrap();
    net.shutdown(true).await.unwrap();
}

/// 1,000 pods come and go; afterwards the host has exactly what it had before: links,
/// namespace mounts, state files, file descriptors and IPs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pods_leak_nothing() {
    let cfg = config('l', 5, 2, false);
    let net = start(cfg.clone()).await;
    let _cleanup = CleanupOnPanic(cfg.clone());
    net.fill_pool().await.unwrap();
    let prefix = net.veth_prefix().to_string();
    let links = links_with_prefix(&prefix);
    let mounts = mounts_under(&cfg.state_dir);
    let files = files_under(&cfg.state_dir);
    let fds = open_fds();
    let ips = net.stats().ips_in_use;
    assert_eq!(links, 2, "the warm pool's veths");
    assert_eq!(ips, 2);

    // Sixteen pods at a time, as an agent running short pods would.
    futures::stream::iter(0..1000)
        .map(|i| {
            let net = net.clone();
            async move {
                let uid = format!("pod-{i}");
                let s = net.create(&uid).await.unwrap();
                net.remove(&uid).await.unwrap();
                assert!(
                    !link_exists(s.host_veth.as_deref().unwrap()),
                    "veth gone when remove returns"
                );
                assert!(!s.netns.as_deref().unwrap().exists());
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    net.fill_pool().await.unwrap();

    let stats = net.stats();
    assert_eq!(stats.pods, 0);
    assert_eq!(stats.ips_in_use, ips, "IPs freed");
    assert_eq!(links_with_prefix(&prefix), links, "no leaked links");
    assert_eq!(
        mounts_under(&cfg.state_dir),
        mounts,
        "no leaked netns mounts"
    );
    assert_eq!(files_under(&cfg.state_dir), files, "no leaked files");
    let now = open_fds();
    assert!(now <= fds + 4, "fds went from {fds} to {now}");
    net.shutdown(true).await.unwrap();
}

/// A finished pod's sandbox goes back to the warm pool when nothing is left in its
/// namespace, and serves the next pods as a new one would; a namespace that still holds a
/// socket (a listener, or a connection in TIME_WAIT) is removed instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_sandboxes_are_recycled_and_used_ones_removed() {
    let cfg = config('y', 7, 2, false);
    let net = start(cfg.clone()).await;
    let _cleanup = CleanupOnPanic(cfg.clone());
    net.fill_pool().await.unwrap();

    // Nothing ran in it: back to the pool, whole, its IP held.
    let a = net.create("pod-a").await.unwrap();
    net.fill_pool().await.unwrap();
    let in_use = net.stats().ips_in_use;
    assert!(
        net.recycle("pod-a").await.unwrap(),
        "an empty sandbox is recycled"
    );
    assert_eq!(net.get("pod-a").await, None);
    assert!(net.list().await.is_empty());
    assert!(link_exists(a.host_veth.as_deref().unwrap()) && a.netns.as_deref().unwrap().exists());
    assert_eq!(
        net.stats().pool,
        3,
        "the pool may grow past its size by recycling"
    );
    assert_eq!(net.stats().ips_in_use, in_use, "its IP stays with the pool");
    assert!(
        !net.recycle("pod-a").await.unwrap(),
        "a pod without a sandbox"
    );

    // The pool hands out its older sandboxes first; then the recycled one, to a new pod,
    // carrying traffic both ways.
    let mut got = Vec::new();
    for i in 0..3 {
        got.push(net.create(&format!("pod-n{i}")).await.unwrap());
    }
    let reused = got
        .iter()
        .position(|s| s.ip == a.ip)
        .expect("the recycled sandbox is handed out again");
    assert_eq!(reused, 2, "behind the sandboxes already in the pool");
    let s = &got[reused];
    assert_eq!(s.host_veth, a.host_veth);
    let listener = s.bind_tcp(SocketAddr::from((s.ip, 7070))).unwrap();
    let accepted = tokio::spawn(accept_one(listener));
    send_from(None, SocketAddr::from((s.ip, 7070)), b"hi");
    let (_, msg) = accepted.await.unwrap();
    assert_eq!(msg, b"hi");
    // Its namespace saw a connection (the pod's side closed last: no TIME_WAIT there, but
    // the host's side may still be finishing): whatever is left decides.
    let _ = net.recycle(&s.pod_uid).await.unwrap();

    // A listener still open: removed, not recycled.
    let b = net.create("pod-b").await.unwrap();
    let listener = b.bind_tcp(SocketAddr::from((b.ip, 8080))).unwrap();
    assert!(!net.recycle("pod-b").await.unwrap(), "a listener is left");
    assert!(!link_exists(b.host_veth.as_deref().unwrap()));
    assert!(!b.netns.as_deref().unwrap().exists());
    drop(listener);

    // A connection the pod closed first leaves TIME_WAIT in its namespace: removed.
    let c = net.create("pod-c").await.unwrap();
    let listener = c.bind_tcp(SocketAddr::from((c.ip, 8080))).unwrap();
    let host = std::thread::spawn({
        let to = SocketAddr::from((c.ip, 8080));
        move || {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect(to).unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            buf
        }
    });
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    drop(stream);
    drop(listener);
    assert_eq!(host.join().unwrap(), b"");
    assert!(!net.recycle("pod-c").await.unwrap(), "TIME_WAIT is left");
    assert!(!link_exists(c.host_veth.as_deref().unwrap()));

    // The pool takes back at most twice its size.
    for s in &got[..2] {
        let _ = net.recycle(&s.pod_uid).await.unwrap();
    }
    let mut pods = Vec::new();
    for i in 0..6 {
        pods.push(net.create(&format!("pod-m{i}")).await.unwrap());
    }
    let mut recycled = 0;
    for p in &pods {
        if net.recycle(&p.pod_uid).await.unwrap() {
            recycled += 1;
        } else {
            assert!(
                !link_exists(p.host_veth.as_deref().unwrap()),
                "not recycled: removed"
            );
        }
    }
    assert!(recycled >= 1, "the pool had room");
    assert!(net.stats().pool <= 4, "{:?}", net.stats());
    net.shutdown(true).await.unwrap();
    assert!(!link_exists(a.host_veth.as_deref().unwrap()));
}
