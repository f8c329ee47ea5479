//! The runtime spec itself.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::{ResolvedUser, SpecError, caps, seccomp};

/// The `PATH` a container gets when neither its image nor the pod sets one (containerd's,
/// and libcontainer refuses to start a process without a `PATH`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period kubelet uses, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The open-files limit containerd's containers start with (its own, inherited from
/// systemd's `LimitNOFILE=infinity`).
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// containerd's masked paths: unreadable in the container.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A host file or directory the container sees at `destination`: a volume, or one of the
/// files the agent writes for it (`/etc/hosts`, `/etc/resolv.conf`, `/dev/termination-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Compute resources, as the pod spec gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `limits.memory`, bytes.
    pub memory_limit: Option<u64>,
    /// `requests.cpu`, millicores.
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu`, millicores.
    pub cpu_limit_millis: Option<u64>,
    /// The pod's pids limit (kubelet's `podPidsLimit`).
    pub pids_limit: Option<i64>,
}

/// The securityContext fields, as the agent merges them (the container's, else the pod's).
/// The user fields are read by [`crate::resolve_user`] through [`crate::UserOverrides`].
pub use skiff_shim::{SeccompProfile, Security as SecurityContext};

/// Everything [`runtime_spec`] needs about one container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecInput {
    /// The full argv, argv\[0\] first (the agent merges command/args with the image's).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `workingDir`, else the image's; `/` when neither sets one.
    pub working_dir: Option<String>,
    pub user: ResolvedUser,
    /// The container's root filesystem (the overlay mount), absolute.
    pub rootfs: PathBuf,
    /// The pod's network namespace (an nsfs file) to join; `None` for the host's.
    pub netns: Option<PathBuf>,
    /// An IPC namespace to join (the pod's shared one); `None` for a new one.
    pub ipcns: Option<PathBuf>,
    /// `hostIPC`: no IPC namespace entry, so the node's (`ipcns` is then unused).
    pub host_ipc: bool,
    /// `hostPID`: no pid namespace entry, so the node's (unless `pidns` names one).
    pub host_pid: bool,
    /// A pid namespace to join (an ephemeral container's target's); `None` for a new one,
    /// or the node's with `host_pid`.
    pub pidns: Option<PathBuf>,
    /// The pod's hostname, in a new UTS namespace.
    pub hostname: String,
    /// `linux.cgroupsPath`, e.g. `/skiff/<pod uid>/<container>`.
    pub cgroups_path: PathBuf,
    /// Whether the node runs the unified cgroup v2 hierarchy: containerd then gives each
    /// container its own cgroup namespace.
    pub cgroup_v2: bool,
    /// Volumes and files, in the pod's `volumeMounts` order.
    pub mounts: Vec<BindMount>,
    pub resources: Resources,
    pub security: SecurityContext,
    /// kubelet's OOM score for the container's QoS class. Note libcontainer 0.7 writes it
    /// into the *calling* process before it forks: a caller that must keep its own score
    /// should clear this and write `/proc/<pid>/oom_score_adj` itself.
    pub oom_score_adj: Option<i32>,
    /// `RLIMIT_NOFILE` (soft and hard). `None` sets none: the process keeps the runtime's.
    /// Raising it past the caller's hard limit needs `CAP_SYS_RESOURCE`, which not every
    /// node's root holds; [`nofile_limit`] gives containerd's value where the node allows it.
    pub nofile: Option<u64>,
    /// What `capabilities.add: [ALL]` grants: the node's capabilities
    /// ([`crate::node_capabilities`]), as containerd grants its own. `None`: every
    /// capability Linux knows, which fails on a node whose root lacks some of them.
    pub node_capabilities: Option<Capabilities>,
    pub tty: bool,
}

/// containerd's open-files limit ([`NOFILE_LIMIT`]), or this process's hard limit if lower
/// and it cannot raise it (no `CAP_SYS_RESOURCE`, as on some sandboxed nodes).
pub fn nofile_limit() -> u64 {
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(NOFILE_LIMIT);
    if hard >= NOFILE_LIMIT || has_sys_resource() {
        NOFILE_LIMIT
    } else {
        hard
    }
}

/// Whether this process holds `CAP_SYS_RESOURCE` (bit 24 of `CapEff`).
fn has_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|eff| eff & (1 << 24) != 0)
}

/// Whether this node runs cgroup v2 alone (not v1 or hybrid).
pub fn host_cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// kubelet's CPU shares for a request in millicores: 1024 per core, at least 2 (the
/// BestEffort value, also for no request), at most 262144.
pub fn cpu_shares(request_millis: Option<u64>) -> u64 {
    let millis = request_millis.unwrap_or(0);
    (millis.saturating_mul(1024) / 1000).clamp(2, 262_144)
}

/// kubelet's CFS quota for a limit in millicores, over [`CPU_PERIOD_US`]: at least 1000 µs.
pub fn cpu_quota(limit_millis: u64) -> i64 {
    let quota = limit_millis.saturating_mul(CPU_PERIOD_US) / 1000;
    i64::try_from(quota.max(1000)).unwrap_or(i64::MAX)
}

fn no_nul(field: impl FnOnce() -> String, value: &str) -> Result<(), SpecError> {
    if value.contains('\0') {
        return Err(SpecError::Nul { field: field() });
    }
    Ok(())
}

/// A mount destination must be absolute and must not climb (`..`): the runtime resolves it
/// inside the rootfs, but a clear error here beats a runtime failure.
fn check_destination(index: usize, path: &str) -> Result<(), SpecError> {
    let err = |reason| SpecError::MountPath {
        index,
        path: path.to_string(),
        reason,
    };
    if path.contains('\0') {
        return Err(err("contains a NUL byte"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(err("must be an absolute path"));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(err("must not contain '..'"));
    }
    if p.components().all(|c| c == Component::RootDir) {
        return Err(err("must not be /"));
    }
    Ok(())
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's mounts for a Kubernetes container.
fn default_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

fn mounts(input: &SpecInput) -> Result<Vec<Mount>, SpecError> {
    let mut binds = Vec::with_capacity(input.mounts.len());
    for (index, m) in input.mounts.iter().enumerate() {
        check_destination(index, &m.destination)?;
        let options = ["rbind", "rprivate", if m.read_only { "ro" } else { "rw" }];
        let source = m.source.to_string_lossy();
        no_nul(|| format!("volumeMounts[{index}]: host path"), &source)?;
        binds.push(mount(&m.destination, "bind", &source, &options)?);
    }
    // As containerd: parents before children (a volume at /a must not hide one at /a/b
    // listed before it), otherwise the pod's order.
    binds.sort_by_key(|m| m.destination().components().count());
    // A volume at a default mount's place replaces it (the pod's /dev/shm, for one).
    let mut all: Vec<Mount> = default_mounts()?
        .into_iter()
        .filter(|d| !binds.iter().any(|b| b.destination() == d.destination()))
        .collect();
    all.extend(binds);
    Ok(all)
}

fn env(input: &SpecInput) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::with_capacity(input.env.len() + 3);
    for (name, value) in &input.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(SpecError::EnvName(name.clone()));
        }
        no_nul(|| format!("env {name}"), value)?;
        out.push(format!("{name}={value}"));
    }
    let has = |n: &str| input.env.iter().any(|(k, _)| k == n);
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    // containerd sets both; the pod's own values win.
    if !has("HOSTNAME") {
        out.push(format!("HOSTNAME={}", input.hostname));
    }
    if !has("HOME") && !input.user.home.is_empty() {
        out.push(format!("HOME={}", input.user.home));
    }
    if input.tty && !has("TERM") {
        out.push("TERM=xterm".to_string());
    }
    Ok(out)
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let ns = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(p) => ns.path(p).build()?,
        None => ns.build()?,
    })
}

fn namespaces(input: &SpecInput) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = Vec::new();
    match (&input.pidns, input.host_pid) {
        (Some(pidns), _) => out.push(namespace(LinuxNamespaceType::Pid, Some(pidns))?),
        (None, false) => out.push(namespace(LinuxNamespaceType::Pid, None)?),
        (None, true) => {}
    }
    if !input.host_ipc {
        out.push(namespace(LinuxNamespaceType::Ipc, input.ipcns.as_deref())?);
    }
    out.push(namespace(LinuxNamespaceType::Uts, None)?);
    out.push(namespace(LinuxNamespaceType::Mount, None)?);
    // No entry means the host's network: hostNetwork pods.
    if let Some(netns) = &input.netns {
        out.push(namespace(LinuxNamespaceType::Network, Some(netns))?);
    }
    if input.cgroup_v2 {
        out.push(namespace(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(out)
}

fn resources(r: &Resources) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    // Deny every device; the runtime allows its standard few (/dev/null, zero, full,
    // random, urandom, tty, ptmx, pts) as it does for containerd.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let mut cpu =
        LinuxCpuBuilder::default().shares(cpu_shares(r.cpu_request_millis.or(r.cpu_limit_millis)));
    if let Some(limit) = r.cpu_limit_millis {
        cpu = cpu.quota(cpu_quota(limit)).period(CPU_PERIOD_US);
    }
    let mut out = LinuxResourcesBuilder::default()
        .devices(vec![deny_all])
        .cpu(cpu.build()?);
    if let Some(limit) = r.memory_limit {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // kubelet's NoSwap: memory+swap equal to memory.
        out = out.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()?,
        );
    }
    if let Some(pids) = r.pids_limit {
        out = out.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    Ok(out.build()?)
}

fn capability_sets(caps: &Capabilities) -> Result<oci_spec::runtime::LinuxCapabilities, SpecError> {
    // containerd's sets: bounding, effective and permitted. Inheritable stays empty since
    // CVE-2022-24769, ambient too, so for a non-root user execve leaves nothing effective
    // (the kernel clears it) while the bounding set still caps what setuid files can gain.
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?)
}

/// The OCI runtime spec for one container of a pod. Pure: it reads nothing and checks the
/// input's fields, naming the pod field at fault in its errors.
pub fn runtime_spec(input: &SpecInput) -> Result<Spec, SpecError> {
    let sc = &input.security;
    // Privileged needs every host device, writable sysfs and cgroupfs and no confinement
    // at all; half of it would be a trap, so Skiff refuses it for now.
    if sc.privileged {
        return Err(SpecError::Privileged);
    }
    if input.argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    for (i, arg) in input.argv.iter().enumerate() {
        no_nul(|| format!("command[{i}]"), arg)?;
    }
    let cwd = input.working_dir.as_deref().unwrap_or("/");
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(SpecError::WorkingDir(cwd.to_string()));
    }

    let caps = caps::capabilities(
        &sc.capabilities_add,
        &sc.capabilities_drop,
        input.node_capabilities.as_ref(),
    )?;
    let seccomp = match &sc.seccomp {
        // Kubernetes' own default is Unconfined unless kubelet runs with
        // --seccomp-default; Skiff always behaves as if it did.
        None | Some(SeccompProfile::RuntimeDefault) => {
            Some(seccomp::runtime_default(&caps, seccomp::native_arch())?)
        }
        Some(SeccompProfile::Unconfined) => None,
        Some(SeccompProfile::Localhost(_)) => return Err(SpecError::SeccompProfile("Localhost")),
    };

    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()?;
    let mut process = ProcessBuilder::default()
        .terminal(input.tty)
        .user(user)
        .args(input.argv.clone())
        .env(env(input)?)
        .cwd(cwd)
        .capabilities(capability_sets(&caps)?)
        // kubelet: no_new_privs only when allowPrivilegeEscalation is explicitly false.
        .no_new_privileges(sc.allow_privilege_escalation == Some(false));
    if let Some(adj) = input.oom_score_adj {
        process = process.oom_score_adj(adj);
    }
    // The builder starts from oci-spec's defaults, which include a 1024 open-files limit.
    let mut process = process.build()?;
    process.set_rlimits(None);
    if let Some(limit) = input.nofile {
        let nofile = PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(limit)
            .soft(limit)
            .build()?;
        process.set_rlimits(Some(vec![nofile]));
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input)?)
        .resources(resources(&input.resources)?)
        .cgroups_path(input.cgroups_path.clone())
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        );
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }

    Ok(SpecBuilder::default()
        // What crun 1.8 (Debian 12) still accepts; every field used here exists in 1.0.2.
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs.clone())
                .readonly(sc.read_only_root_filesystem)
                .build()?,
        )
        .hostname(input.hostname.clone())
        .mounts(mounts(input)?)
        .process(process)
        .linux(linux.build()?)
        .build()?)
}
