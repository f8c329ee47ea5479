//! Where libcontainer (youki) 0.7 reads a spec differently from runc and crun, or does
//! slowly what Skiff does once, the spec is adjusted before it is handed over, so that the
//! container gets what the spec means.

use std::path::Path;

use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

use crate::SpecError;
use crate::filter::{LOADING_CAPS_ANNOTATION, PROFILE_ANNOTATION};

/// Where a container finds the mount namespace its helper prepared for it: a descriptor
/// the container's process inherits from the helper. The helper makes the namespace (a
/// copy of its own) just before the build, attaches the container's root and cgroup view
/// in it, and returns to its own, so that libcontainer's intermediate process, which
/// parses `/proc/self/mountinfo` a dozen times in the helper's namespace, reads none of
/// the container's mounts, and nothing is left to unmount after the build.
pub const PREPARED_MOUNT_NS_FD: i32 = 1001;
pub const PREPARED_MOUNT_NS: &str = "/proc/self/fd/1001";

/// Adjusts `spec` for libcontainer 0.7 run by Skiff's helper:
/// * the seccomp profile moves to an annotation: the helper compiles it once and the
///   container's process loads the compiled filter itself (see [`crate::filter`]), since
///   libcontainer would compile it again in every container. Where the process would lack
///   the privilege to load it (no `no_new_privs`, no `CAP_SYS_ADMIN`), `CAP_SYS_ADMIN` is
///   added to its effective and permitted sets and named in another annotation: the
///   process drops it right after loading the filter, before the container's program runs;
/// * `noNewPrivileges: false` is left out: libcontainer decides things by whether the field
///   is present, not by its value. Absent means false;
/// * on a cgroup v1 host, the `cgroup` mount becomes a bind of `<bundle>/cgroup`, where the
///   helper assembles the container's `/sys/fs/cgroup` (see [`crate::cgroupview`]);
/// * the container joins a mount namespace the helper prepares for it
///   ([`PREPARED_MOUNT_NS`]) instead of making its own, and the helper makes there the
///   mounts that depend on none of the container's namespaces (see [`crate::premount`]).
pub fn for_libcontainer(spec: &mut Spec, bundle: &Path) -> Result<(), SpecError> {
    if !crate::host_cgroup_v2() {
        crate::cgroupview::for_libcontainer(spec, &bundle.join("cgroup"))?;
    }
    if let Some(namespaces) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
        && let Some(mount) = namespaces
            .iter_mut()
            .find(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
    {
        mount.set_path(Some(PREPARED_MOUNT_NS.into()));
        crate::premount::for_libcontainer(spec)?;
    }
    let no_new_privs = spec
        .process()
        .as_ref()
        .and_then(|p| p.no_new_privileges())
        .unwrap_or(false);
    if let Some(process) = spec.process_mut()
        && process.no_new_privileges() == Some(false)
    {
        process.set_no_new_privileges(None);
    }
    let Some(profile) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.seccomp_mut().take())
    else {
        return Ok(());
    };
    let json = serde_json::to_string(&profile).map_err(oci_spec::OciSpecError::from)?;
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(PROFILE_ANNOTATION.to_string(), json);
    if !no_new_privs && let Some(process) = spec.process_mut() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let holds = caps
            .effective()
            .as_ref()
            .is_some_and(|e| e.contains(&Capability::SysAdmin));
        if !holds {
            let mut effective = caps.effective().clone().unwrap_or_default();
            effective.insert(Capability::SysAdmin);
            let mut permitted = caps.permitted().clone().unwrap_or_default();
            permitted.insert(Capability::SysAdmin);
            caps.set_effective(Some(effective))
                .set_permitted(Some(permitted));
            process.set_capabilities(Some(caps));
            annotations.insert(
                LOADING_CAPS_ANNOTATION.to_string(),
                "CAP_SYS_ADMIN".to_string(),
            );
        }
    }
    spec.set_annotations(Some(annotations));
    Ok(())
}
