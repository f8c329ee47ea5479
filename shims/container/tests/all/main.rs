//! The container shim's tests: the spec's content (no root needed), user resolution from
//! crafted rootfs directories, and, as root with `runc` installed, a real run of the spec.

mod helper;
mod runtime;
mod shim;
mod spec;
mod user;

use std::path::PathBuf;

use skiff_shim_container::{BindMount, ResolvedUser, SpecInput};

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

/// Volume sources in a new directory: `ro/config` ("from the volume"), an empty `rw/`,
/// and a hosts file (returned) naming web-0.
pub fn volume_sources() -> (tempfile::TempDir, PathBuf) {
    let volumes = tempfile::tempdir().unwrap();
    for d in ["ro", "rw"] {
        std::fs::create_dir(volumes.path().join(d)).unwrap();
    }
    std::fs::write(volumes.path().join("ro/config"), "from the volume\n").unwrap();
    let hosts = volumes.path().join("hosts");
    std::fs::write(&hosts, "10.1.0.7\tweb-0\n").unwrap();
    (volumes, hosts)
}

/// A volume's bind mount of `source` at `destination`.
pub fn volume(source: PathBuf, destination: &str, read_only: bool) -> BindMount {
    BindMount {
        source,
        destination: destination.into(),
        read_only,
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

pub use skiff_shim::testing::Netns;
