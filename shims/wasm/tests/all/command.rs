use std::time::{Duration, Instant};

use skiff_shim::testing::Netns;
use skiff_shim::{ExitReason, PodSandbox, Shim, Stream, Workload};
use skiff_shim_wasm::{WasmConfig, WasmShim};

use crate::Fixture;

async fn run(f: &Fixture, spec: skiff_shim::ContainerSpec) -> skiff_shim::Exit {
    let c = f.shim.create(spec, &PodSandbox::default()).await.unwrap();
    c.start().await.unwrap();
    c.wait().await
}

#[tokio::test]
async fn component_command_gets_args_env_and_logs() {
    let f = Fixture::new();
    let (mut spec, logs) = f.spec("hello.wasm", &["hello", "one", "two"]);
    spec.env = vec![("GREETING".into(), "hi there".into())];
    let exit = run(&f, spec).await;
    assert_eq!(
        (exit.code, exit.reason),
        (0, ExitReason::Completed),
        "{exit:?}"
    );
    assert_eq!(
        logs.text(Stream::Stdout),
        "hello from skiff args=[\"one\", \"two\"] GREETING=hi there\n"
    );
    assert_eq!(logs.text(Stream::Stderr), "hello: done\n");
}

#[tokio::test]
async fn core_module_runs_through_wasi_preview1() {
    let f = Fixture::new();
    let (spec, logs) = f.spec("hello-p1.wasm", &["hello", "x"]);
    let exit = run(&f, spec).await;
    assert_eq!(exit.reason, ExitReason::Completed, "{exit:?}");
    assert_eq!(logs.text(Stream::Stdout), "hello from skiff args=[\"x\"]\n");
}

#[tokio::test]
async fn exit_codes_and_only_granted_env() {
    let f = Fixture::new();
    // WASI 0.2's `exit` carries success or failure, not a number: any failing code is 1.
    let (spec, _) = f.spec("testbed.wasm", &["testbed", "exit", "3"]);
    let exit = run(&f, spec).await;
    assert_eq!((exit.code, exit.reason), (1, ExitReason::Error));
    let (spec, _) = f.spec("testbed.wasm", &["testbed", "exit", "0"]);
    assert_eq!(run(&f, spec).await.reason, ExitReason::Completed);

    // The guest sees the env it was given and nothing of the agent's.
    let (mut spec, logs) = f.spec("testbed.wasm", &["testbed", "print-env"]);
    spec.env = vec![("B".into(), "2".into()), ("A".into(), "1".into())];
    assert_eq!(run(&f, spec).await.code, 0);
    assert_eq!(logs.text(Stream::Stdout), "A=1\nB=2\n");
}

#[tokio::test]
async fn an_instance_never_sees_the_memory_of_the_one_before() {
    // The pool hands a freed slot to the next instance of the same module with the dirty
    // pages set back to the image's contents: each run finds its static data as the
    // program has it, though the run before overwrote it.
    let f = Fixture::new();
    for _ in 0..4 {
        let (spec, logs) = f.spec("testbed.wasm", &["testbed", "taint"]);
        assert_eq!(run(&f, spec).await.code, 0);
        assert_eq!(logs.text(Stream::Stdout), "pristine\n");
    }
}

/// Starts `testbed serve 0` in `netns` (the host's for `None`) and returns the container
/// and the port it got.
async fn serve_in(
    f: &Fixture,
    netns: Option<std::path::PathBuf>,
) -> (Box<dyn skiff_shim::Container>, u16) {
    let (spec, logs) = f.spec("testbed.wasm", &["testbed", "serve", "0"]);
    let sandbox = PodSandbox {
        netns,
        ..Default::default()
    };
    let c = f.shim.create(spec, &sandbox).await.unwrap();
    c.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = logs.text(Stream::Stdout);
        if let Some(port) = out
            .lines()
            .find_map(|l| l.strip_prefix("listening on 0.0.0.0:"))
        {
            return (c, port.parse().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "never listened: {out:?} {:?}",
            logs.text(Stream::Stderr)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn commands_one_after_another_each_run_in_their_own_network_namespace() {
    // Command threads are reused: one that ran a pod's command in the pod's namespace
    // serves the next command in that one's, the host's here.
    let f = Fixture::new();
    let pod = Netns::new(format!("skiff-wasm-a-{}", std::process::id()));
    for _ in 0..3 {
        let (spec, _) = f.spec("testbed.wasm", &["testbed", "exit", "0"]);
        let sandbox = PodSandbox {
            netns: Some(pod.path()),
            ..Default::default()
        };
        let c = f.shim.create(spec, &sandbox).await.unwrap();
        c.start().await.unwrap();
        assert_eq!(c.wait().await.reason, ExitReason::Completed);
        // Time for the thread to offer itself again.
        tokio::time::sleep(Duration::from_millis(50)).await;

        // In the host's namespace: reachable on the host's loopback.
        let (c, port) = serve_in(&f, None).await;
        let reply = get_text(port).await;
        assert!(reply.ends_with("testbed\n"), "{reply:?}");
        c.kill();
        c.wait().await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        // In the pod's: not on the host's loopback.
        let (c, port) = serve_in(&f, Some(pod.path())).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "a pod's listener on port {port} answered on the host's loopback"
        );
        c.kill();
        c.wait().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole reply to a GET of `/` on the host's loopback.
async fn get_text(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn volumes_are_preopened_read_only_where_asked() {
    let f = Fixture::new();
    let (rw_host, rw) = f.volume("data", false, "/data");
    let (ro_host, ro) = f.volume("config", true, "/config");
    std::fs::write(ro_host.join("settings"), "mode=fast\n").unwrap();

    let (mut spec, logs) = f.spec(
        "testbed.wasm",
        &["testbed", "write", "/data/out", "written"],
    );
    spec.mounts = vec![rw.clone(), ro.clone()];
    assert_eq!(run(&f, spec).await.code, 0, "{}", logs.text(Stream::Stdout));
    assert_eq!(
        std::fs::read_to_string(rw_host.join("out")).unwrap(),
        "written"
    );

    let (mut spec, logs) = f.spec("testbed.wasm", &["testbed", "cat", "/config/settings"]);
    spec.mounts = vec![rw.clone(), ro.clone()];
    assert_eq!(run(&f, spec).await.code, 0);
    assert_eq!(logs.text(Stream::Stdout), "mode=fast\n");

    let (mut spec, _) = f.spec("testbed.wasm", &["testbed", "write", "/config/x", "no"]);
    spec.mounts = vec![rw, ro];
    let exit = run(&f, spec).await;
    assert_eq!(
        exit.code, 1,
        "writing a read-only volume must fail: {exit:?}"
    );
    assert!(!ro_host.join("x").exists());

    // Nothing outside the volumes is visible.
    let (spec, _) = f.spec("testbed.wasm", &["testbed", "ls", "/"]);
    assert_eq!(run(&f, spec).await.code, 1);
}

#[tokio::test]
async fn memory_limit_ends_as_oomkilled() {
    let f = Fixture::new();
    let (mut spec, logs) = f.spec("testbed.wasm", &["testbed", "alloc", "64"]);
    spec.memory_limit = Some(16 << 20);
    let exit = run(&f, spec).await;
    assert_eq!(exit.reason, ExitReason::OOMKilled, "{exit:?}");
    assert_eq!(exit.code, 137);
    assert!(logs.text(Stream::Stdout).contains("allocated 1 MiB"));

    // The same guest within its limit completes.
    let (mut spec, _) = f.spec("testbed.wasm", &["testbed", "alloc", "8"]);
    spec.memory_limit = Some(64 << 20);
    assert_eq!(run(&f, spec).await.reason, ExitReason::Completed);
}

#[tokio::test]
async fn kill_stops_a_busy_guest_and_a_sleeping_one() {
    let f = Fixture::new();
    for argv in [["testbed", "spin", ""], ["testbed", "sleep", "600"]] {
        let argv: Vec<&str> = argv.into_iter().filter(|a| !a.is_empty()).collect();
        let (spec, _) = f.spec("testbed.wasm", &argv);
        let c = f.shim.create(spec, &PodSandbox::default()).await.unwrap();
        c.start().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.stop(Duration::from_secs(30));
        let exit = tokio::time::timeout(Duration::from_secs(20), c.wait())
            .await
            .expect("a stopped guest ends");
        assert_ne!(exit.code, 0, "{argv:?}: {exit:?}");
    }
}

#[tokio::test]
async fn cpu_limit_bounds_cpu_time() {
    let f = Fixture::new();
    let (mut spec, _) = f.spec("testbed.wasm", &["testbed", "spin"]);
    spec.cpu_limit_millis = Some(100);
    let c = f.shim.create(spec, &PodSandbox::default()).await.unwrap();
    c.start().await.unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let wall = started.elapsed();
    let cpu = Duration::from_nanos(c.stats().cpu_nanos);
    c.kill();
    c.wait().await;
    // A tenth of a core; an unlimited spin would use all of the wall time.
    assert!(
        cpu < wall / 3,
        "a 100m guest used {cpu:?} of CPU in {wall:?}"
    );
}

#[tokio::test]
async fn a_second_shim_uses_the_compiled_cache() {
    let f = Fixture::new();
    let (spec, _) = f.spec("hello.wasm", &["hello"]);
    let digest = spec.workload.digest().to_string();
    assert!(!f.shim.is_precompiled(&digest));
    f.shim.precompile(&spec.workload).await.unwrap();
    assert!(f.shim.is_precompiled(&digest));

    // A fresh shim on the same cache starts the image even with only the wasm preamble on
    // disk: it never compiles.
    let shim = WasmShim::new(WasmConfig::new(f.dir.path().join("cache"))).unwrap();
    let stub = f.dir.path().join("stub.wasm");
    std::fs::write(
        &stub,
        &std::fs::read(crate::guest("hello.wasm")).unwrap()[..8],
    )
    .unwrap();
    let (mut spec, logs) = f.spec("hello.wasm", &["hello"]);
    spec.workload = Workload::Wasm {
        digest,
        media_type: "application/wasm".into(),
        path: stub,
    };
    let c = shim.create(spec, &PodSandbox::default()).await.unwrap();
    c.start().await.unwrap();
    assert_eq!(c.wait().await.reason, ExitReason::Completed);
    assert!(logs.text(Stream::Stdout).starts_with("hello from skiff"));
}

#[tokio::test]
async fn not_wasm_is_refused() {
    let f = Fixture::new();
    let bogus = f.dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"#!/bin/sh\necho hi\n").unwrap();
    let workload = Workload::Wasm {
        digest: "sha256:bogus".into(),
        media_type: "application/wasm".into(),
        path: bogus,
    };
    assert!(!f.shim.can_run(&workload));
    let err = f.shim.precompile(&workload).await.unwrap_err();
    assert!(err.to_string().contains("not a WebAssembly"), "{err}");
}
