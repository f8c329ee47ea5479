//! The container shim as the node agent uses it (`skiff_shim::Shim`), as root: the busybox
//! image from `examples/build/busybox-oci` on overlayfs snapshots, containers created,
//! started, waited for and dropped; nothing of them stays behind.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_images::Snapshots;
use skiff_shim::{ContainerSpec, LogSink, PodSandbox, Shim, Stream, Workload};
use skiff_shim_container::{ContainerConfig, ContainerShim};

use crate::Netns;

#[derive(Default)]
struct Captured(Mutex<Vec<u8>>);

impl LogSink for Captured {
    fn write(&self, _stream: Stream, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
}

/// The busybox image's layers, as the image store would resolve them.
fn busybox_layers() -> Vec<skiff_shim::Layer> {
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/build/busybox-oci");
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(&p)
                .unwrap_or_else(|e| panic!("{}: {e}: run examples/build.sh first", p.display())),
        )
        .unwrap()
    };
    let index = read(layout.join("index.json"));
    let manifest = read(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().to_string();
            skiff_shim::Layer {
                path: blob(&digest),
                media_type: l["mediaType"].as_str().unwrap().to_string(),
                size: l["size"].as_u64().unwrap(),
                digest,
            }
        })
        .collect()
}

fn spec(n: usize, argv: &[&str], logs: Arc<Captured>) -> ContainerSpec {
    ContainerSpec {
        id: format!("pod-{n}/main"),
        name: "main".into(),
        workload: Workload::Rootfs {
            digest: "sha256:busybox".into(),
            layers: busybox_layers(),
            user: None,
        },
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        working_dir: None,
        mounts: vec![],
        ports: vec![],
        memory_limit: Some(32 << 20),
        cpu_limit_millis: None,
        cpu_request_millis: Some(100),
        security: Default::default(),
        stdin: false,
        tty: false,
        pid_namespace: None,
        logs,
    }
}

/// Every process whose root directory lies under `dir`, with its state (`Z`: a zombie).
fn processes_rooted_in(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let root = std::fs::read_link(entry.path().join("root")).unwrap_or_default();
        if root.starts_with(dir) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            found.push((pid, stat));
        }
    }
    found
}

/// Children of the helpers keeping state under `state` (reaped ones are gone; zombies are
/// listed).
fn helper_children(state: &Path) -> Vec<String> {
    let needle = state.to_string_lossy().to_string();
    let mut helpers = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("--root") && cmdline.contains(&needle) {
            helpers.extend(entry.file_name().to_string_lossy().parse::<u32>().ok());
        }
    }
    assert_eq!(helpers.len(), 3, "the container helpers are running");
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid.is_some_and(|p| helpers.contains(&p)) {
            children.push(stat);
        }
    }
    children
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(String::from)
        .collect()
}

#[test]
fn a_thousand_containers_leave_nothing_behind() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let snapshots_dir = dir.path().join("snapshots");
        let state = dir.path().join("state");
        let shim = ContainerShim::new(ContainerConfig {
            state_dir: state.clone(),
            snapshots: Snapshots::open(&snapshots_dir).unwrap(),
            helper_program: PathBuf::from(env!("CARGO_BIN_EXE_skiff-container-helper")),
            helper_args: vec![],
            helpers: 3,
            // The helpers run without the node's namespace pins, and still join the pod's.
            hidden_mounts: vec![PathBuf::from("/run/netns")],
            warm_roots: 4,
        })
        .unwrap();
        let ns = Netns::new(format!("skiff-shim-{}", std::process::id()));
        let sandbox = PodSandbox {
            netns: Some(ns.path()),
            ip: None,
            hostname: "cycles".into(),
            namespace: "default".into(),
            uid: "cycles".into(),
            ..Default::default()
        };
        let cycles: usize = std::env::var("SKIFF_SHIM_CYCLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        for n in 0..cycles {
            let logs = Arc::new(Captured::default());
            // Every few containers leave a child behind, which their pid namespace's
            // end must take with them, and write to their root: no later container, on
            // a fresh root or one an earlier container left untouched, sees it.
            let argv: &[&str] = if n % 10 == 0 {
                &[
                    "sh",
                    "-c",
                    "test -e /written && exit 3; touch /written; sleep 60 & echo $((6 * 7))",
                ]
            } else {
                &["sh", "-c", "test -e /written && exit 3; echo 42"]
            };
            let c = shim
                .create(spec(n, argv, logs.clone()), &sandbox)
                .await
                .unwrap_or_else(|e| panic!("cycle {n}: create: {e}"));
            c.start()
                .await
                .unwrap_or_else(|e| panic!("cycle {n}: start: {e}"));
            let exit = c.wait().await;
            assert_eq!(exit.code, 0, "cycle {n}: {exit:?}");
            assert_eq!(
                String::from_utf8_lossy(&logs.0.lock().unwrap()),
                "42\n",
                "cycle {n}"
            );
            drop(c);
        }
        // A container still running when it is dropped is killed and removed too.
        let logs = Arc::new(Captured::default());
        let c = shim
            .create(spec(cycles, &["sleep", "600"], logs), &sandbox)
            .await
            .unwrap();
        c.start().await.unwrap();
        drop(c);

        // Removal runs in the background: give it a moment to finish.
        let deadline = Instant::now() + Duration::from_secs(30);
        let snapshots = Snapshots::open(&snapshots_dir).unwrap();
        loop {
            let left = snapshots.list().unwrap();
            let bundles: Vec<_> = std::fs::read_dir(state.join("bundles"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            if left.is_empty() && bundles.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: snapshots {left:?}, bundles {bundles:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The shim's one tmpfs for the pods' /dev/shm and its roots' shared mount stay
        // while it runs; nothing of a container or a pod does.
        let pods = state.join("pods");
        let own = [
            format!(" {} ", pods.display()),
            format!(" {} ", snapshots_dir.join("rootfs").display()),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left: Vec<_> = std::fs::read_dir(&pods).unwrap().flatten().collect();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "pod IPC left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Roots kept for the next container: no more than asked for.
        let kept = format!("{}/.warm-", snapshots_dir.join("rootfs").display());
        let (kept, mounts): (Vec<String>, Vec<String>) = mounts_under(dir.path())
            .into_iter()
            .filter(|m| !own.iter().any(|o| m.contains(o)))
            .partition(|m| m.contains(&kept));
        assert_eq!(mounts, Vec::<String>::new());
        assert!(kept.len() <= 4, "{kept:?}");
        assert_eq!(processes_rooted_in(&snapshots_dir), vec![]);
        assert_eq!(helper_children(&state), Vec::<String>::new());
        let runtime_state: Vec<_> = std::fs::read_dir(state.join("runtime"))
            .unwrap()
            .flatten()
            .flat_map(|helper| std::fs::read_dir(helper.path()).unwrap().flatten())
            .map(|e| e.file_name())
            .collect();
        assert!(runtime_state.is_empty(), "{runtime_state:?}");
        // Every cgroup went with its container, in every hierarchy.
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .chain([PathBuf::from("/sys/fs/cgroup")]);
        for hierarchy in hierarchies {
            let dir = hierarchy.join("skiff");
            let left: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|name| name.starts_with("pod-") && name.contains("_main-"))
                .collect();
            assert!(left.is_empty(), "{}: {left:?}", dir.display());
        }
        // And with the shim, its tmpfs goes.
        drop(shim);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mounts_under(dir.path()).is_empty() {
            assert!(Instant::now() < deadline, "{:?}", mounts_under(dir.path()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Processes (not zombies) whose command line is exactly `args`.
fn running_with_args(args: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        if std::fs::read(entry.path().join("cmdline")).ok() == Some(wanted.clone())
            && !state.is_some_and(|s| s.starts_with('Z'))
        {
            found.push(pid);
        }
    }
    found
}

/// An ephemeral container with a target (`kubectl debug --target`) joins the target's pid
/// namespace: it sees the target's process as pid 1, and what it leaves running there goes
/// with it (that namespace outlives it).
#[test]
fn a_container_joins_another_ones_pid_namespace() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let snapshots_dir = dir.path().join("snapshots");
        let shim = ContainerShim::new(ContainerConfig {
            state_dir: dir.path().join("state"),
            snapshots: Snapshots::open(&snapshots_dir).unwrap(),
            helper_program: PathBuf::from(env!("CARGO_BIN_EXE_skiff-container-helper")),
            helper_args: vec![],
            helpers: 2,
            hidden_mounts: vec![],
            warm_roots: 0,
        })
        .unwrap();
        let ns = Netns::new(format!("skiff-pidns-{}", std::process::id()));
        let sandbox = PodSandbox {
            netns: Some(ns.path()),
            hostname: "debugged".into(),
            namespace: "default".into(),
            uid: "debugged".into(),
            ..Default::default()
        };
        // Ids of their own: a container's cgroup is named after its id (`/skiff/<id>-<n>`,
        // n counted per shim), and the other tests of this binary run `pod-<n>/main`s at
        // the same time, whose removal would take this test's cgroup and processes along.
        let mut target_spec = spec(0, &["sleep", "671"], Arc::new(Captured::default()));
        target_spec.id = "pidns-target/main".into();
        let target = shim.create(target_spec, &sandbox).await.unwrap();
        target.start().await.unwrap();
        let pidns = target
            .pid_namespace()
            .expect("a Linux container has processes");

        let logs = Arc::new(Captured::default());
        let mut debug = spec(
            1,
            &[
                "sh",
                "-c",
                "sleep 317 & echo \"pid1=$(tr '\\0' ' ' < /proc/1/cmdline)\"",
            ],
            logs.clone(),
        );
        debug.id = "pidns-target/debugger".into();
        debug.pid_namespace = Some(pidns.clone());
        let debugger = shim.create(debug, &sandbox).await.unwrap();
        debugger.start().await.unwrap();
        let exit = debugger.wait().await;
        assert_eq!(exit.code, 0, "{exit:?}");
        assert_eq!(
            String::from_utf8_lossy(&logs.0.lock().unwrap()),
            "pid1=sleep 671 \n"
        );
        // Its `sleep 317` was killed with it; the target runs on.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running_with_args(&["sleep", "317"]).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the ephemeral container's leftover still runs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(running_with_args(&["sleep", "671"]).len(), 1);
        drop(debugger);
        target.kill();
        target.wait().await;
        drop(target);
    });
}
