//! The container helper running real containers with libcontainer (as root): busybox in a
//! bundle made from the shim's own spec, each container in a network namespace the test
//! made, exits and OOM kills reported, several containers created at once.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use skiff_shim_container::{
    Exit, Helper, SpecInput, adapt_for_libcontainer, host_cgroup_v2, runtime_spec,
};

use crate::{Netns, input, line_after, volume, volume_sources};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn netns() -> Netns {
    Netns::new(unique("skiff-helper"))
}

/// A bundle with a busybox rootfs and a config.json from the shim's spec.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new(netns: &Netns, script: &str, adjust: impl FnOnce(&mut SpecInput)) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
        for applet in [
            "sh", "echo", "sleep", "dd", "cat", "true", "grep", "unshare", "touch", "cut", "tr",
        ] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let id = unique("skiff-helper");
        let mut i = input();
        i.argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        i.rootfs = rootfs;
        i.netns = Some(netns.path());
        i.cgroups_path = PathBuf::from(format!("/skiff-test/{id}"));
        i.cgroup_v2 = host_cgroup_v2();
        adjust(&mut i);
        let mut spec = runtime_spec(&i).unwrap();
        adapt_for_libcontainer(&mut spec, dir.path()).unwrap();
        fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        Bundle { dir, id }
    }
}

struct Output {
    read: std::fs::File,
}

impl Output {
    /// Everything the container wrote, once it closed its end.
    fn text(mut self) -> String {
        let mut s = String::new();
        self.read.read_to_string(&mut s).unwrap();
        s
    }
}

fn pipe() -> (Output, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (Output { read: r.into() }, w)
}

fn null() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

fn helper(state: &Path) -> Helper {
    Helper::spawn(
        Path::new(env!("CARGO_BIN_EXE_skiff-container-helper")),
        &[],
        state,
    )
    .unwrap()
}

/// Creates and starts `bundle` with stdout and stderr into one pipe; returns its reader
/// and the container's pid.
async fn start(helper: &Helper, bundle: &Bundle) -> (Output, i32) {
    let (out, out_w) = pipe();
    let err_w = out_w.try_clone().unwrap();
    let pid = helper
        .create(&bundle.id, bundle.dir.path(), null(), out_w, err_w)
        .await
        .unwrap();
    helper.start(&bundle.id).await.unwrap();
    (out, pid)
}

async fn run(helper: &Helper, bundle: &Bundle) -> Output {
    start(helper, bundle).await.0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn runs_a_container_and_reports_its_exit() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let bundle = Bundle::new(&ns, "echo hello from $(cat /proc/1/comm); grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; exit 3", |_| {});
        let out = run(&helper, &bundle).await;
        let exit = helper.wait(&bundle.id).await.unwrap();
        assert_eq!(
            exit,
            Exit {
                code: 3,
                signal: None,
                oom_killed: false
            }
        );
        // It is pid 1 of its own pid namespace, under the runtime's seccomp filter (loaded
        // while privileged: no_new_privs stays off, as Kubernetes' default has it).
        assert_eq!(
            out.text(),
            "hello from sh\nNoNewPrivs:\t0\nSeccomp:\t2\n"
        );
        helper.delete(&bundle.id).await.unwrap();
        // Its state and cgroup are gone with it.
        assert!(!state.path().join(&bundle.id).exists());
        let cgroup = if host_cgroup_v2() {
            format!("/sys/fs/cgroup/skiff-test/{}", bundle.id)
        } else {
            format!("/sys/fs/cgroup/memory/skiff-test/{}", bundle.id)
        };
        assert!(!Path::new(&cgroup).exists(), "{cgroup} left behind");
    });
}

#[test]
fn a_container_sees_its_own_cgroups_read_only() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let script = "cat /proc/self/cgroup | grep -E ':(memory|pids|cpu|0)?:' ; \
            echo '--limit'; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; \
            echo '--raise'; (echo 1073741824 > /sys/fs/cgroup/memory/memory.limit_in_bytes) 2>/dev/null || echo refused; \
            echo '--mkdir'; mkdir /sys/fs/cgroup/memory/sub /sys/fs/cgroup/sub 2>/dev/null || echo refused; \
            echo '--tmpfs'; touch /sys/fs/cgroup/x 2>/dev/null || echo refused";
        let bundle = Bundle::new(&ns, script, |i| i.resources.memory_limit = Some(64 << 20));
        let out = run(&helper, &bundle).await.text();
        assert_eq!(helper.wait(&bundle.id).await.unwrap().code, 0, "{out}");
        // Its limit, from its own cgroup, which it cannot raise nor make cgroups under.
        assert_eq!(line_after(&out, "--limit"), (64u64 << 20).to_string(), "{out}");
        assert_eq!(line_after(&out, "--raise"), "refused", "{out}");
        assert_eq!(line_after(&out, "--mkdir"), "refused", "{out}");
        assert_eq!(line_after(&out, "--tmpfs"), "refused", "{out}");
        if !host_cgroup_v2() {
            // Each controller's directory is its own cgroup, as /proc/self/cgroup names it.
            let own = format!("/skiff-test/{}", bundle.id);
            assert!(out.contains(&format!(":memory:{own}\n")), "{out}");
            let memory = std::fs::read_to_string(format!(
                "/sys/fs/cgroup/memory/skiff-test/{}/memory.limit_in_bytes",
                bundle.id
            ))
            .unwrap();
            assert_eq!(memory.trim(), (64u64 << 20).to_string());
        }
        helper.delete(&bundle.id).await.unwrap();
    });
}

#[test]
fn mounts_land_inside_the_root_whatever_its_symlinks_say() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let (volumes, hosts) = volume_sources();
        // Host paths the image's symlinks name; the mounts must not land there.
        let outside = tempfile::tempdir().unwrap();
        let outside_hosts = outside.path().join("hosts");
        fs::write(&outside_hosts, "the host's own\n").unwrap();
        let script = "echo --config; cat /srv/data/config; \
            echo --ro; touch /srv/data/new 2>/dev/null && echo writable || echo read-only; \
            echo --rw; echo written > /data/rw/deep/out && cat /data/rw/deep/out; \
            echo --hosts; cat /etc/hosts; \
            echo --dev; grep -E ' /dev(/pts|/shm)? ' /proc/mounts | cut -d' ' -f2,3 | tr '\\n' ' '";
        let bundle = Bundle::new(&ns, script, |i| {
            let rootfs = &i.rootfs;
            // /srv points at a host directory by absolute path; /etc/hosts at a host
            // file. Inside the root both name paths of the root.
            symlink(outside.path(), rootfs.join("srv")).unwrap();
            let inside = rootfs.join(outside.path().strip_prefix("/").unwrap());
            fs::create_dir_all(&inside).unwrap();
            fs::write(inside.join("hosts"), "the image's\n").unwrap();
            symlink(&outside_hosts, rootfs.join("etc/hosts")).unwrap();
            i.mounts = vec![
                volume(volumes.path().join("ro"), "/srv/data", true),
                volume(volumes.path().join("rw"), "/data/rw/deep", false),
                volume(hosts.clone(), "/etc/hosts", false),
            ];
        });
        let out = run(&helper, &bundle).await.text();
        assert_eq!(helper.wait(&bundle.id).await.unwrap().code, 0, "{out}");
        helper.delete(&bundle.id).await.unwrap();
        assert_eq!(line_after(&out, "--config"), "from the volume", "{out}");
        assert_eq!(line_after(&out, "--ro"), "read-only", "{out}");
        assert_eq!(line_after(&out, "--rw"), "written", "{out}");
        assert_eq!(
            fs::read_to_string(volumes.path().join("rw/out")).unwrap(),
            "written\n"
        );
        assert_eq!(line_after(&out, "--hosts"), "10.1.0.7\tweb-0", "{out}");
        assert_eq!(
            line_after(&out, "--dev"),
            "/dev tmpfs /dev/pts devpts /dev/shm tmpfs",
            "{out}"
        );
        // Nothing was made or mounted outside the root: the host's files are as they were
        // and the destinations were made inside it.
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            1,
            "only the host's own file is outside"
        );
        assert_eq!(
            fs::read_to_string(&outside_hosts).unwrap(),
            "the host's own\n"
        );
        let rootfs = bundle.dir.path().join("rootfs");
        let inside = rootfs.join(outside.path().strip_prefix("/").unwrap());
        assert!(inside.join("data").is_dir());
        assert!(rootfs.join("data/rw/deep").is_dir());
        assert_eq!(
            fs::read_to_string(inside.join("hosts")).unwrap(),
            "the image's\n"
        );
    });
}

/// The pid of the helper keeping its state in `state`.
fn helper_pid(state: &Path) -> u32 {
    let needle = state.to_string_lossy().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains("--root") && cmdline.contains(&needle)
        })
        .and_then(|e| e.file_name().to_string_lossy().parse().ok())
        .expect("the helper runs")
}

#[test]
fn builds_leave_the_helpers_own_mounts_alone() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let bundles: Vec<Bundle> = (0..20)
            .map(|_| Bundle::new(&ns, "exit 0", |_| {}))
            .collect();
        // What a build mounts (its cgroup view, under its bundle) goes into the mount
        // namespace the helper prepares for the container, never into the helper's own,
        // where libcontainer parses every mount a dozen times per container. A watcher
        // in the helper's own namespace (entered while the helper is idle) reads its
        // mounts throughout the builds.
        let watch = tempfile::tempdir().unwrap();
        let needles = watch.path().join("needles");
        let stop = watch.path().join("stop");
        let seen = watch.path().join("seen");
        let reads = watch.path().join("reads");
        let lines: Vec<String> = bundles
            .iter()
            .map(|b| b.dir.path().display().to_string())
            .collect();
        fs::write(&needles, lines.join("\n")).unwrap();
        let script = format!(
            "while [ ! -e {stop} ]; do grep -F -f {needles} /proc/self/mountinfo >> {seen}; echo >> {reads}; done",
            stop = stop.display(),
            needles = needles.display(),
            seen = seen.display(),
            reads = reads.display(),
        );
        let mut watcher = std::process::Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", helper_pid(state.path())))
            .args(["sh", "-c", &script])
            .spawn()
            .expect("nsenter (util-linux)");
        // The watcher reads a few times before the first build.
        while fs::read_to_string(&reads).unwrap_or_default().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for bundle in &bundles {
            let out = run(&helper, bundle).await;
            assert_eq!(helper.wait(&bundle.id).await.unwrap().code, 0);
            drop(out);
            helper.delete(&bundle.id).await.unwrap();
        }
        fs::write(&stop, "").unwrap();
        watcher.wait().unwrap();
        let reads = fs::read_to_string(&reads).unwrap().len();
        assert!(reads > 20, "the helper's mounts were read {reads} times");
        assert_eq!(fs::read_to_string(&seen).unwrap_or_default(), "");
    });
}

/// The lines of /proc/self/status a container's process shows about its privileges.
const PRIVILEGES: &str = "grep -E '^(CapPrm|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status";

/// containerd's 14 default capabilities as /proc shows them.
const DEFAULT_CAPS: &str = "00000000a80425fb";

fn privileges(prm: &str, eff: &str, nnp: u8) -> String {
    format!(
        "CapPrm:\t{prm}\nCapEff:\t{eff}\nCapBnd:\t{DEFAULT_CAPS}\nNoNewPrivs:\t{nnp}\nSeccomp:\t2\n"
    )
}

#[test]
fn processes_run_under_the_filter_with_exactly_the_specs_capabilities() {
    // The helper compiles the seccomp filter once and the process loads it itself, holding
    // CAP_SYS_ADMIN for that alone: nothing of the container's sees it.
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let script = format!("{PRIVILEGES}; echo ready; exec sleep 1000");
        let root = Bundle::new(&ns, &script, |_| {});
        let mut out = run(&helper, &root).await;
        let expected = privileges(DEFAULT_CAPS, DEFAULT_CAPS, 0);
        let mut first = vec![0u8; expected.len() + "ready\n".len()];
        out.read.read_exact(&mut first).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&first),
            format!("{expected}ready\n")
        );

        // A process exec'd into it (kubectl exec, an exec probe) alike, and the filter
        // refuses what the profile refuses (unshare without CAP_SYS_ADMIN).
        let spec = oci_spec::runtime::Spec::load(root.dir.path().join("config.json")).unwrap();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("{PRIVILEGES}; unshare -u true 2>/dev/null || echo refused"),
        ]));
        let process_file = root.dir.path().join("exec.json");
        fs::write(&process_file, serde_json::to_vec(&process).unwrap()).unwrap();
        let exec_id = format!("{}.exec-0", root.id);
        let (exec_out, exec_w) = pipe();
        helper
            .exec(
                &root.id,
                &exec_id,
                &process_file,
                false,
                Some([null(), exec_w, null()]),
            )
            .await
            .unwrap();
        assert_eq!(helper.wait(&exec_id).await.unwrap().code, 0);
        assert_eq!(exec_out.text(), format!("{expected}refused\n"));
        helper.delete(&root.id).await.unwrap();

        // Another user: no effective or permitted capabilities, as containerd gives one.
        let user = Bundle::new(&ns, PRIVILEGES, |i| {
            i.user.uid = 1000;
            i.user.gid = 1000;
            i.user.additional_gids = vec![1000];
        });
        let zero = "0000000000000000";
        assert_eq!(run(&helper, &user).await.text(), privileges(zero, zero, 0));
        helper.wait(&user.id).await.unwrap();
        helper.delete(&user.id).await.unwrap();

        // allowPrivilegeEscalation: false: no_new_privs set, the filter loaded all the same.
        let nnp = Bundle::new(&ns, PRIVILEGES, |i| {
            i.security.allow_privilege_escalation = Some(false);
        });
        assert_eq!(
            run(&helper, &nnp).await.text(),
            privileges(DEFAULT_CAPS, DEFAULT_CAPS, 1)
        );
        helper.wait(&nnp.id).await.unwrap();
        helper.delete(&nnp.id).await.unwrap();
    });
}

#[test]
fn signals_and_oom_kills_are_reported() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());

        // SIGTERM reaches a process that handles it; one that does not (pid 1 ignores
        // signals it has no handler for) goes with SIGKILL.
        let graceful = Bundle::new(
            &ns,
            "trap 'echo bye; exit 7' TERM; echo up; while true; do sleep 0.05; done",
            |_| {},
        );
        let stubborn = Bundle::new(&ns, "echo up; exec sleep 1000", |_| {});
        for (bundle, signal, expected) in
            [(&graceful, 15, (7, None)), (&stubborn, 9, (137, Some(9)))]
        {
            let mut out = run(&helper, bundle).await;
            let mut up = [0u8; 3];
            out.read.read_exact(&mut up).unwrap();
            assert_eq!(&up, b"up\n");
            helper.kill(&bundle.id, signal, false).await.unwrap();
            let exit = helper.wait(&bundle.id).await.unwrap();
            assert_eq!((exit.code, exit.signal), expected);
            if signal == 15 {
                assert_eq!(out.text(), "bye\n");
            }
            helper.delete(&bundle.id).await.unwrap();
        }

        // 64 MiB through a 16 MiB limit (swap included): the kernel's OOM killer ends it.
        let hog = Bundle::new(
            &ns,
            "echo start; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
            |i| i.resources.memory_limit = Some(16 << 20),
        );
        let out = run(&helper, &hog).await;
        let exit = helper.wait(&hog.id).await.unwrap();
        assert!(exit.oom_killed, "{exit:?}");
        assert_eq!((exit.code, exit.signal), (137, Some(9)));
        assert_eq!(out.text(), "start\n");
        helper.delete(&hog.id).await.unwrap();
    });
}

/// A container that prints "up" and sleeps, once it is up; its output stays open.
async fn sleeper(helper: &Helper, ns: &Netns) -> (Bundle, Output) {
    let bundle = Bundle::new(ns, "echo up; exec sleep 1000", |_| {});
    let mut out = run(helper, &bundle).await;
    let mut up = [0u8; 3];
    out.read.read_exact(&mut up).unwrap();
    (bundle, out)
}

/// The container's process with `args` instead, in a file, for an exec.
fn exec_process(bundle: &Bundle, args: &[&str]) -> PathBuf {
    let spec = oci_spec::runtime::Spec::load(bundle.dir.path().join("config.json")).unwrap();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    let process_file = bundle.dir.path().join("exec.json");
    fs::write(&process_file, serde_json::to_vec(&process).unwrap()).unwrap();
    process_file
}

#[test]
fn a_container_with_an_exec_still_running_is_deleted() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let (bundle, _out) = sleeper(&helper, &ns).await;
        // A process exec'd into it (a probe, a kubectl exec session) still runs.
        let process_file = exec_process(&bundle, &["sleep", "1000"]);
        let exec_id = format!("{}.exec-0", bundle.id);
        helper
            .exec(
                &bundle.id,
                &exec_id,
                &process_file,
                false,
                Some([null(), null(), null()]),
            )
            .await
            .unwrap();
        // Deleting the container ends both (the helper used to wait for its first process
        // forever: that waits for the exec'd one, the helper's child, to be reaped).
        tokio::time::timeout(Duration::from_secs(60), helper.delete(&bundle.id))
            .await
            .expect("delete never returned")
            .unwrap();
        let exec_exit = helper.wait(&exec_id).await.unwrap();
        assert_eq!(exec_exit.signal, Some(9), "{exec_exit:?}");
        // And the helper goes on serving.
        let next = Bundle::new(&ns, "echo next", |_| {});
        assert_eq!(run(&helper, &next).await.text(), "next\n");
        helper.wait(&next.id).await.unwrap();
        helper.delete(&next.id).await.unwrap();
    });
}

#[test]
fn a_failed_exec_leaves_nothing_to_wait_for() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let (bundle, _out) = sleeper(&helper, &ns).await;
        // `kubectl exec` of a program the image lacks: the exec's processes fail after
        // joining the container's pid namespace.
        let process_file = exec_process(&bundle, &["/no/such/program"]);
        for n in 0..3 {
            let err = helper
                .exec(
                    &bundle.id,
                    &format!("{}.exec-{n}", bundle.id),
                    &process_file,
                    false,
                    Some([null(), null(), null()]),
                )
                .await
                .unwrap_err();
            assert!(err.to_string().contains("/no/such/program"), "{err}");
        }
        // Deleting the container still ends it: its first process waits for every process
        // of its pid namespace to be reaped, the failed exec's included (the helper used
        // to leave those as zombies and wait for the first one forever).
        tokio::time::timeout(Duration::from_secs(60), helper.delete(&bundle.id))
            .await
            .expect("delete never returned")
            .unwrap();
        let helper_pid = helper_pid(state.path());
        let children =
            fs::read_to_string(format!("/proc/{helper_pid}/task/{helper_pid}/children")).unwrap();
        assert_eq!(children.trim(), "", "processes left under the helper");
    });
}

#[test]
fn containers_created_at_once_all_run() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let bundles: Vec<Bundle> = (0..12)
            .map(|n| Bundle::new(&ns, &format!("echo container {n}"), |_| {}))
            .collect();
        let runs = bundles.iter().map(|b| {
            let helper = helper.clone();
            async move {
                let out = run(&helper, b).await;
                let exit = helper.wait(&b.id).await.unwrap();
                helper.delete(&b.id).await.unwrap();
                (exit.code, out.text())
            }
        });
        let results = futures::future::join_all(runs).await;
        for (n, (code, text)) in results.into_iter().enumerate() {
            assert_eq!((code, text), (0, format!("container {n}\n")));
        }
    });
}

#[test]
fn containers_go_when_the_agent_side_goes() {
    runtime().block_on(async {
        let state = tempfile::tempdir().unwrap();
        let ns = netns();
        let helper = helper(state.path());
        let bundle = Bundle::new(&ns, "exec sleep 1000", |_| {});
        let (_out, pid) = start(&helper, &bundle).await;
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(helper);
        // The helper kills and deletes what it made, then exits.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() || state.path().join(&bundle.id).exists()
        {
            assert!(
                Instant::now() < deadline,
                "container {pid} still there after its helper's agent went"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
