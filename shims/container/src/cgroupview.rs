//! A container's `/sys/fs/cgroup` on a cgroup v1 host, assembled by the helper and bound
//! into the container as one recursive, read-only mount.
//!
//! On cgroup v1 a runtime gives each container a tmpfs at `/sys/fs/cgroup` holding, for
//! every hierarchy, a bind of the container's own cgroup in it. libcontainer (youki) 0.7
//! builds that inside the container's init process: a tmpfs and ten binds, each through
//! its hardened mount path (procfs handle checks and an `openat2` walk per mount), about
//! a tenth of a short container pod's CPU on the machines Skiff is measured on. It also
//! mounts every piece read-write whatever the spec says, so a container running as root
//! could write its own limits (raise `memory.limit_in_bytes`) or make cgroups under its
//! own; runc and crun honour the spec's `ro`, as Kubernetes expects.
//!
//! So for libcontainer the spec's `cgroup` mount becomes a recursive bind of a directory
//! in the container's bundle ([`for_libcontainer`]), named in an annotation; the helper,
//! just before the build, mounts there a tmpfs and binds each hierarchy's cgroup into it
//! with plain mount calls, read-only when the spec's mount is ([`Hierarchies::assemble`]),
//! and detaches it all once the container has its copy. The container sees what runc
//! gives it: its own cgroup in each controller libcontainer manages, the helper's in the
//! others (the `name=systemd` hierarchy), and symlinks for co-mounted controllers
//! (`cpu` -> `cpu,cpuacct`).

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use oci_spec::runtime::{MountBuilder, Spec};

use crate::SpecError;

/// The annotation naming the directory the helper assembles the view in.
pub const ANNOTATION: &str = "dev.skiff.cgroup-view";

/// The cgroup mount point containers get.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Replaces `spec`'s `cgroup` mount at `/sys/fs/cgroup` by a recursive bind of `view`
/// (with the same options) and names `view` in [`ANNOTATION`]. For cgroup v1 hosts only:
/// a cgroup v2 mount is one mount already.
pub fn for_libcontainer(spec: &mut Spec, view: &Path) -> Result<(), SpecError> {
    let Some(mounts) = spec.mounts_mut() else {
        return Ok(());
    };
    let Some(m) = mounts.iter_mut().find(|m| {
        m.destination() == Path::new(CGROUP_ROOT) && m.typ().as_deref() == Some("cgroup")
    }) else {
        return Ok(());
    };
    let mut options = vec!["rbind".to_string()];
    options.extend(
        m.options()
            .iter()
            .flatten()
            .filter(|o| *o != "relatime")
            .cloned(),
    );
    *m = MountBuilder::default()
        .destination(CGROUP_ROOT)
        .typ("bind")
        .source(view)
        .options(options)
        .build()?;
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(ANNOTATION.to_string(), view.to_string_lossy().into_owned());
    spec.set_annotations(Some(annotations));
    Ok(())
}

/// This host's cgroup v1 hierarchies under `/sys/fs/cgroup`.
#[derive(Debug, Clone)]
pub struct Hierarchies {
    list: Vec<Hierarchy>,
}

#[derive(Debug, Clone)]
struct Hierarchy {
    /// Its directory's name under `/sys/fs/cgroup`: `memory`, `cpu,cpuacct`, `systemd`.
    name: String,
    mount: PathBuf,
    /// A controller libcontainer's v1 manager puts containers in.
    managed: bool,
    /// This process's cgroup in it, relative to the hierarchy's root.
    own: PathBuf,
}

impl Hierarchies {
    /// The hierarchies, when this host's controllers are on cgroup v1 (legacy or hybrid).
    pub fn of_host() -> Option<Self> {
        use libcgroups::common::CgroupSetup;
        match libcgroups::common::get_cgroup_setup() {
            Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid) => {}
            _ => return None,
        }
        let managed: Vec<PathBuf> = libcgroups::v1::util::list_supported_mount_points()
            .ok()?
            .into_values()
            .collect();
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mut list = Vec::new();
        for mount in libcgroups::v1::util::list_subsystem_mount_points().ok()? {
            if !mount.starts_with(CGROUP_ROOT) || list.iter().any(|h: &Hierarchy| h.mount == mount)
            {
                continue;
            }
            let Some(name) = mount.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let name = name.to_string();
            list.push(Hierarchy {
                managed: managed.contains(&mount),
                own: own_cgroup(&own, &name).unwrap_or_else(|| PathBuf::from("/")),
                name,
                mount,
            });
        }
        Some(Hierarchies { list })
    }

    /// Where the controllers libcontainer puts containers in are mounted.
    pub fn managed_mounts(&self) -> impl Iterator<Item = &Path> {
        self.list
            .iter()
            .filter(|h| h.managed)
            .map(|h| h.mount.as_path())
    }

    /// Mounts at `view` a tmpfs holding, for each hierarchy, a bind of the cgroup
    /// `cgroups_path` (made if missing, as libcontainer would) in the managed ones and of
    /// this process's own cgroup in the others; all read-only when `read_only`. Undo with
    /// a detaching unmount of `view`.
    pub fn assemble(
        &self,
        view: &Path,
        cgroups_path: &Path,
        read_only: bool,
    ) -> Result<(), String> {
        let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
        if !relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "cgroups path {} is not plain",
                cgroups_path.display()
            ));
        }
        let failed = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            format!("cgroup view: {what} {}: {e}", path.display())
        };
        match std::fs::create_dir(view) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(failed("making", view, &e));
            }
            _ => {}
        }
        let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("tmpfs"), view, Some("tmpfs"), quiet, Some("mode=755"))
            .map_err(|e| failed("mounting a tmpfs at", view, &e))?;
        let built = (|| {
            for h in &self.list {
                let source = if h.managed {
                    let dir = h.mount.join(relative);
                    std::fs::create_dir_all(&dir).map_err(|e| failed("making", &dir, &e))?;
                    dir
                } else {
                    h.mount.join(h.own.strip_prefix("/").unwrap_or(&h.own))
                };
                let target = view.join(&h.name);
                std::fs::create_dir(&target).map_err(|e| failed("making", &target, &e))?;
                mount(
                    Some(&source),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| failed("binding", &source, &e))?;
                if read_only {
                    mount(
                        None::<&str>,
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | quiet,
                        None::<&str>,
                    )
                    .map_err(|e| failed("making read-only", &target, &e))?;
                }
                // Co-mounted controllers are reached by each one's name too.
                if h.name.contains(',') {
                    for part in h.name.split(',') {
                        let link = view.join(part);
                        std::os::unix::fs::symlink(&h.name, &link)
                            .map_err(|e| failed("linking", &link, &e))?;
                    }
                }
            }
            Ok(())
        })();
        if built.is_err() {
            let _ = nix::mount::umount2(view, nix::mount::MntFlags::MNT_DETACH);
        }
        built
    }
}

/// This process's cgroup in the hierarchy mounted as `name` (`memory`, `cpu,cpuacct`, or
/// `systemd` for `name=systemd`), from `/proc/self/cgroup`'s text.
fn own_cgroup(text: &str, name: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = controllers == name || controllers.strip_prefix("name=") == Some(name) || {
            let mut a: Vec<&str> = controllers.split(',').collect();
            let mut b: Vec<&str> = name.split(',').collect();
            a.sort_unstable();
            b.sort_unstable();
            !controllers.is_empty() && a == b
        };
        matches.then(|| PathBuf::from(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroups_are_found_by_mount_name() {
        let text = "12:cpu,cpuacct:/a\n4:name=systemd:/user.slice\n3:memory:/m\n0::/unified\n";
        assert_eq!(own_cgroup(text, "memory"), Some(PathBuf::from("/m")));
        assert_eq!(
            own_cgroup(text, "systemd"),
            Some(PathBuf::from("/user.slice"))
        );
        assert_eq!(own_cgroup(text, "cpuacct,cpu"), Some(PathBuf::from("/a")));
        assert_eq!(own_cgroup(text, "pids"), None);
    }
}
