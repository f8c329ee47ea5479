//! The container shim's tests: the spec's content (no root needed), user resolution from
//! crafted rootfs directories, and, as root with `runc` installed, a real run of the spec.

mod helper;
mod runtime;
mod shim;
mod spec;
mod user;

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_shim_container::{ResolvedUser, SpecInput};

/// A plain container: what the agent would hand over for `busybox sleep` in a pod.
pub fn input() -> SpecInput {
    SpecInput {
        argv: vec!["/bin/sleep".into(), "10".into()],
        env: vec![("GREETING".into(), "hello".into())],
        working_dir: None,
        user: ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![0],
            home: "/root".into(),
        },
        rootfs: PathBuf::from("/run/skiff/bundles/c1/rootfs"),
        netns: Some(PathBuf::from("/run/netns/pod1")),
        ipcns: None,
        hostname: "web-0".into(),
        cgroups_path: PathBuf::from("/skiff/pod1/c1"),
        cgroup_v2: false,
        ..Default::default()
    }
}

/// The line after the line `marker` in a container's output.
pub fn line_after<'a>(out: &'a str, marker: &str) -> &'a str {
    out.lines()
        .skip_while(|l| *l != marker)
        .nth(1)
        .unwrap_or_else(|| panic!("nothing after {marker} in {out}"))
        .trim()
}

/// A network namespace, deleted on drop.
pub struct Netns(String);

impl Netns {
    pub fn new(name: String) -> Self {
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        Netns(name)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
