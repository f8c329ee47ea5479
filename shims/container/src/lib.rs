//! Skiff's Linux container shim, first part: the OCI runtime spec (`config.json`) a pod's
//! container runs with.
//!
//! [`runtime_spec`] turns what the node agent knows about a container ([`SpecInput`]) into
//! the spec containerd or CRI-O would give the same Kubernetes container by default:
//! containerd's 14 capabilities with securityContext add/drop applied, new pid, ipc, uts and
//! mount namespaces with the pod's network namespace joined, containerd's mounts, masked and
//! read-only paths, moby's seccomp profile, and kubelet's cgroup arithmetic. Who the process
//! runs as is resolved first, from the image's `/etc/passwd` and `/etc/group`, by
//! [`resolve_user`]. Nothing here needs root or touches the host beyond reading the rootfs.
//!
//! Decisions that differ from a stock kubelet are documented where they are made:
//! an unset seccomp profile means `RuntimeDefault` (kubelet's `--seccomp-default`), and
//! privileged containers are refused. Two node facts are inputs rather than guesses:
//! what `capabilities.add: [ALL]` grants ([`node_capabilities`]) and the open-files limit
//! ([`nofile_limit`]), since a node's root may lack some capabilities. The spec is checked
//! against runc in the tests; for libcontainer (youki) 0.7 run by the [`helper`], pass it
//! through [`adapt_for_libcontainer`] first (the seccomp filter is compiled once by the
//! helper, see [`filter`]; on cgroup v1 the helper assembles `/sys/fs/cgroup`).

mod caps;
mod cgroupview;
pub mod client;
pub mod filter;
pub mod helper;
mod ipc;
mod premount;
mod proto;
mod quirks;
mod seccomp;
mod shim;
mod spec;
mod user;

/// Calls `open` (an `openat2` with `RESOLVE_IN_ROOT`) again while it fails with `EAGAIN`.
/// The kernel gives up on a walk through `..` whenever anything on the system was renamed
/// or mounted meanwhile (it can then no longer prove the walk stayed inside the root) and
/// leaves the retry to the caller; on a node making containers' mounts all the time that
/// happens. Bounded: a walk that keeps losing fails with `EAGAIN`.
pub(crate) fn retry_in_root<T, E>(
    mut open: impl FnMut() -> Result<T, E>,
    is_eagain: impl Fn(&E) -> bool,
) -> Result<T, E> {
    const TRIES: usize = 128;
    let mut tries = 1;
    loop {
        match open() {
            Err(e) if is_eagain(&e) && tries < TRIES => tries += 1,
            r => return r,
        }
    }
}

pub use caps::{
    ALL_CAPABILITIES, DEFAULT_CAPABILITIES, capabilities, capabilities_from_mask,
    node_capabilities, parse_capability,
};
pub use client::{Exit, Helper, HelperError};
pub use quirks::for_libcontainer as adapt_for_libcontainer;
pub use seccomp::{native_arch, runtime_default as runtime_default_seccomp};
pub use shim::{ContainerConfig, ContainerShim, HANDLER};
pub use spec::{
    BindMount, CPU_PERIOD_US, DEFAULT_PATH, NOFILE_LIMIT, Resources, SeccompProfile,
    SecurityContext, SpecInput, cpu_quota, cpu_shares, host_cgroup_v2, nofile_limit, runtime_spec,
};
pub use user::{
    MAX_DB_FILE, ResolvedUser, UserError, UserOverrides, resolve_user, verify_run_as_non_root,
};

/// Why a container's spec can't be made. The agent reports these as
/// `CreateContainerConfigError`; each names the pod field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("securityContext.privileged: privileged containers are not supported by this runtime")]
    Privileged,
    #[error("{field}: unknown capability {name:?}")]
    UnknownCapability { field: String, name: String },
    #[error("securityContext.seccompProfile: {0} profiles are not supported by this runtime")]
    SeccompProfile(&'static str),
    #[error("securityContext.seccompProfile: no RuntimeDefault profile for architecture {0}")]
    SeccompArch(String),
    #[error("volumeMounts[{index}].mountPath: {path:?} {reason}")]
    MountPath {
        index: usize,
        path: String,
        reason: &'static str,
    },
    #[error("workingDir: {0:?} is not an absolute path")]
    WorkingDir(String),
    #[error("command: nothing to run (neither the container nor its image names a program)")]
    NoCommand,
    #[error("{field}: contains a NUL byte")]
    Nul { field: String },
    #[error("env: invalid variable name {0:?}")]
    EnvName(String),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("building the runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}
