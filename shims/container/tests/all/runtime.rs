//! The spec as a real runtime sees it: `runc run` of a busybox rootfs in a network
//! namespace the test made. Needs root and Debian's `runc` and `busybox-static` (`.ci/deps`
//! installs both). runc rather than crun: crun (1.8) refuses cgroup v1 hosts whose unified
//! hierarchy holds a controller, which is this kind of machine; runc runs on v1, hybrid and v2.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use skiff_shim_container::{
    SeccompProfile, SpecInput, UserOverrides, host_cgroup_v2, node_capabilities, nofile_limit,
    resolve_user, runtime_spec,
};

use crate::{Netns, input, line_after, volume, volume_sources};

/// containerd's 14 default capabilities as /proc shows them (bits 0,1,3-8,10,13,18,27,29,31).
const DEFAULT_CAPS_MASK: &str = "00000000a80425fb";
const NET_ADMIN_BIT: u64 = 1 << 12;

const APPLETS: &[&str] = &[
    "sh", "cat", "grep", "hostname", "id", "true", "unshare", "wc", "touch",
];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A bundle with a busybox rootfs whose image defines the user `app` (1000:1000, also in
/// group `staff`, 50).
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed");
        for applet in APPLETS {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
        )
        .unwrap();
        let id = format!(
            "skiff-cspec-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Bundle { dir, id }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `script` under `sh` with the spec made from `input`; returns its stdout.
    fn run(&self, mut input: SpecInput, script: &str) -> String {
        input.argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        input.rootfs = self.rootfs();
        input.cgroups_path = PathBuf::from(format!("/{}", self.id));
        input.nofile = Some(nofile_limit());
        let spec = runtime_spec(&input).unwrap();
        fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.state())
            .args(["run", "--bundle"])
            .arg(self.dir.path())
            .arg(&self.id)
            .output()
            .expect("runc is installed");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "runc run failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.state())
            .args(["delete", "--force", &self.id])
            .output();
    }
}

/// The value of a `Name:\tvalue` line of /proc/self/status output.
fn status<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
}

const PROBE: &str = "cat /proc/self/status; echo '--nofile'; ulimit -n; echo '--uid'; id -u; echo '--groups'; id -G; \
    echo '--hostname'; hostname; echo '--net'; grep -c : /proc/net/dev; \
    echo '--memory'; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
    echo '--quota'; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max; \
    echo '--unshare'; if unshare -U true 2>/dev/null; then echo allowed; else echo denied; fi";

fn netns() -> Netns {
    Netns::new(format!(
        "skiff-cspec-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

#[test]
fn runc_runs_root_with_the_default_capabilities_and_seccomp() {
    let ns = netns();
    let bundle = Bundle::new();
    let mut i = input();
    i.netns = Some(ns.path());
    i.cgroup_v2 = host_cgroup_v2();
    i.resources.memory_limit = Some(64 << 20);
    i.resources.cpu_limit_millis = Some(500);
    let out = bundle.run(i, PROBE);
    assert_eq!(status(&out, "CapEff"), DEFAULT_CAPS_MASK, "{out}");
    assert_eq!(line_after(&out, "--memory"), (64u64 << 20).to_string());
    assert_eq!(line_after(&out, "--quota"), "50000");
    assert_eq!(status(&out, "CapBnd"), DEFAULT_CAPS_MASK);
    assert_eq!(status(&out, "CapInh"), "0000000000000000");
    assert_eq!(status(&out, "CapAmb"), "0000000000000000");
    assert_eq!(
        status(&out, "Seccomp"),
        "2",
        "a seccomp filter is installed"
    );
    assert_eq!(status(&out, "NoNewPrivs"), "0");
    assert_eq!(line_after(&out, "--nofile"), nofile_limit().to_string());
    assert_eq!(line_after(&out, "--uid"), "0");
    assert_eq!(line_after(&out, "--hostname"), "web-0");
    // The new netns has only lo: /proc/net/dev's two header lines have no colon... but
    // "lo:" has one.
    assert_eq!(line_after(&out, "--net"), "1", "only lo in the pod's netns");
    // A user namespace needs no capability, so only seccomp stops it.
    assert_eq!(line_after(&out, "--unshare"), "denied");
}

#[test]
fn runc_unconfined_lets_unshare_through() {
    let bundle = Bundle::new();
    let mut i = input();
    i.netns = None;
    i.security.seccomp = Some(SeccompProfile::Unconfined);
    let out = bundle.run(i, PROBE);
    assert_eq!(status(&out, "Seccomp"), "0");
    assert_eq!(line_after(&out, "--unshare"), "allowed");
}

#[test]
fn runc_runs_the_image_user_without_effective_capabilities() {
    let ns = netns();
    let bundle = Bundle::new();
    let mut i = input();
    i.netns = Some(ns.path());
    let overrides = UserOverrides {
        run_as_non_root: Some(true),
        fs_group: Some(2000),
        ..Default::default()
    };
    i.user = resolve_user(&bundle.rootfs(), "app", &overrides).unwrap();
    i.security.capabilities_add = vec!["NET_ADMIN".into()];
    i.security.allow_privilege_escalation = Some(false);
    let out = bundle.run(i, PROBE);
    assert_eq!(line_after(&out, "--uid"), "1000");
    let mut groups: Vec<&str> = line_after(&out, "--groups").split(' ').collect();
    groups.sort();
    assert_eq!(groups, ["1000", "2000", "50"]);
    // execve as non-root empties the effective set; the bounding set keeps the added cap.
    assert_eq!(status(&out, "CapEff"), "0000000000000000");
    let bounding = u64::from_str_radix(status(&out, "CapBnd"), 16).unwrap();
    let default = u64::from_str_radix(DEFAULT_CAPS_MASK, 16).unwrap();
    assert_eq!(bounding, default | NET_ADMIN_BIT);
    assert_eq!(status(&out, "NoNewPrivs"), "1");
}

#[test]
fn runc_mounts_volumes_and_hides_what_containerd_hides() {
    let bundle = Bundle::new();
    let (volumes, hosts) = volume_sources();
    let mut i = input();
    i.netns = None;
    i.security.read_only_root_filesystem = true;
    i.mounts = vec![
        volume(volumes.path().join("ro"), "/data/ro", true),
        volume(volumes.path().join("rw"), "/data/rw", false),
        volume(hosts, "/etc/hosts", false),
    ];
    let out = bundle.run(
        i,
        "echo --config; cat /data/ro/config; \
         echo --ro-volume; if touch /data/ro/new 2>/dev/null; then echo writable; else echo read-only; fi; \
         echo --rw-volume; echo written > /data/rw/out && cat /data/rw/out; \
         echo --hosts; cat /etc/hosts; \
         echo --rootfs; if touch /newfile 2>/dev/null; then echo writable; else echo read-only; fi; \
         echo --timer-list; wc -c < /proc/timer_list; \
         echo --sysrq; if echo h > /proc/sysrq-trigger 2>/dev/null; then echo writable; else echo read-only; fi; \
         echo --shm; grep -c ' /dev/shm .*size=65536k' /proc/mounts",
    );
    assert_eq!(line_after(&out, "--config"), "from the volume", "{out}");
    assert_eq!(line_after(&out, "--ro-volume"), "read-only");
    assert_eq!(line_after(&out, "--rw-volume"), "written");
    assert_eq!(
        fs::read_to_string(volumes.path().join("rw/out")).unwrap(),
        "written\n",
        "the write reached the host"
    );
    assert_eq!(line_after(&out, "--hosts"), "10.1.0.7\tweb-0");
    assert_eq!(line_after(&out, "--rootfs"), "read-only");
    // The host's timer_list is not empty (this kernel has no /proc/kcore to try).
    assert_ne!(
        fs::read_to_string("/proc/timer_list").unwrap_or_default(),
        ""
    );
    assert_eq!(
        line_after(&out, "--timer-list"),
        "0",
        "/proc/timer_list is masked"
    );
    assert_eq!(line_after(&out, "--sysrq"), "read-only");
    assert_eq!(line_after(&out, "--shm"), "1");
}

#[test]
fn runc_grants_all_the_nodes_capabilities_for_add_all() {
    let bundle = Bundle::new();
    let mut i = input();
    i.netns = None;
    i.node_capabilities = Some(node_capabilities().unwrap());
    i.security.capabilities_add = vec!["ALL".into()];
    i.security.capabilities_drop = vec!["CAP_NET_RAW".into()];
    let out = bundle.run(i, PROBE);
    let own = fs::read_to_string("/proc/self/status").unwrap();
    let own = u64::from_str_radix(status(&own, "CapBnd"), 16).unwrap();
    let net_raw = 1 << 13;
    let eff = u64::from_str_radix(status(&out, "CapEff"), 16).unwrap();
    assert_eq!(eff, own & !net_raw, "{out}");
    // SYS_ADMIN is among them, so seccomp lets unshare through.
    assert_eq!(line_after(&out, "--unshare"), "allowed");
}
