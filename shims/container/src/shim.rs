//! [`ContainerShim`]: the [`skiff_shim::Shim`] that runs Linux images, over the helper.
//!
//! For each container it prepares an overlayfs root filesystem from the image's layers
//! ([`skiff_images::Snapshots`]), writes a bundle (`config.json` from [`runtime_spec`], and
//! the container's `/etc/hosts`, `/etc/resolv.conf` and `/dev/termination-log`), and has
//! the helper create it with stdout and stderr on pipes that feed the agent's log sink.
//! Stopping sends SIGTERM to the container's first process and SIGKILL to everything in it
//! once the grace period is over; dropping it deletes the container, its root filesystem
//! and its bundle.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::Capabilities;
use skiff_images::Snapshots;
use skiff_shim::{
    AttachInput, Container, ContainerSpec, ExecProcess, Exit, ExitReason, PodSandbox, Shim,
    ShimError, Stats, Stream, Workload,
};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use crate::client::Helper;
use crate::spec::{BindMount, Resources, SpecInput};
use crate::user::UserOverrides;

/// The RuntimeClass handler of Linux containers.
pub const HANDLER: &str = "youki";

/// The most of `/dev/termination-log` kubelet reads into a terminated state's message.
const MAX_TERMINATION_MESSAGE: u64 = 4096;

/// Where the shim keeps its state, and how it starts its helper.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Bundles (one directory per container) and libcontainer's state live here.
    pub state_dir: PathBuf,
    /// The node's layer and root filesystem snapshots.
    pub snapshots: Snapshots,
    /// The helper program and the arguments before `--fd N --root DIR`: `skiff
    /// container-helper` in the agent (`/proc/self/exe`, `["container-helper"]`).
    pub helper_program: PathBuf,
    pub helper_args: Vec<String>,
    /// Helper processes: each builds one container at a time (libcontainer cannot build
    /// two in one process), so several build side by side.
    pub helpers: usize,
    /// Mount points whose mounts no container build needs to see (the pod network's
    /// namespace pins). The helpers then run in a mount namespace of their own without
    /// them, which receives the containers' roots through a shared mount: a build copies
    /// every mount its helper sees, so it would otherwise cost more with every pod.
    pub hidden_mounts: Vec<PathBuf>,
    /// Root filesystems kept mounted after containers that wrote nothing to them, for the
    /// next container of the same image (see `skiff_images::Snapshots::release`).
    pub warm_roots: usize,
}

impl ContainerConfig {
    /// Kept roots for this node: `SKIFF_WARM_ROOTS`, else 32, enough for the containers a
    /// burst of short pods ends at once.
    pub fn default_warm_roots() -> usize {
        std::env::var("SKIFF_WARM_ROOTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32)
    }

    /// Helpers for this machine: `SKIFF_CONTAINER_HELPERS`, else two per CPU. A build
    /// mostly waits on its child processes (about a third of its time on CPU), so more
    /// helpers than CPUs keep the CPUs busy.
    pub fn default_helpers() -> usize {
        std::env::var("SKIFF_CONTAINER_HELPERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() * 2))
    }
}

struct Shared {
    helpers: Vec<Helper>,
    /// Containers each helper holds now: a new one goes to the least busy.
    load: Vec<AtomicU64>,
    /// Containers being prepared and built at once: one per helper. More would only wait
    /// for a helper while their root filesystems sit mounted, and every mount on the node
    /// makes each build slower (a new mount namespace copies them all; libcgroups reads
    /// mountinfo once per controller).
    building: tokio::sync::Semaphore,
    snapshots: Snapshots,
    bundles: PathBuf,
    /// The roots' directory, made a private mount when the helpers have a mount namespace
    /// of their own: they get each root only for its build (see [`Helper::create_rooted`]).
    private_roots: Option<PathBuf>,
    /// Each pod's IPC namespace and /dev/shm, shared by its containers.
    ipc: crate::ipc::PodIpc,
    seq: AtomicU64,
    node_capabilities: Option<Capabilities>,
    nofile: u64,
    cgroup_v2: bool,
}

impl Drop for Shared {
    /// The shim and every container are gone (the agent stops): whatever root filesystem
    /// and bundle a container's own removal did not get to (the runtime stopping cancels
    /// it) goes now. The helper, whose socket closes with this, kills what still runs.
    fn drop(&mut self) {
        self.snapshots.remove_all();
        let _ = std::fs::remove_dir_all(&self.bundles);
        if let Some(roots) = &self.private_roots {
            let _ = nix::mount::umount2(roots, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`): the same
/// filesystem, attachable in another mount namespace.
fn clone_mount(path: &Path) -> Result<OwnedFd, ShimError> {
    use std::os::unix::ffi::OsStrExt;
    const OPEN_TREE_CLONE: nix::libc::c_uint = 1;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ShimError::Start(format!("{} has a NUL byte", path.display())))?;
    // SAFETY: open_tree with a NUL-terminated path; the descriptor returned is ours.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_open_tree,
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | nix::libc::O_CLOEXEC as nix::libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(ShimError::Start(format!(
            "cloning the root filesystem mount {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a new descriptor owned by no one else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

/// Makes `dir` a mount point of its own (bound onto itself) with private propagation, so
/// that what is mounted under it later stays in this mount namespace (on hosts whose `/` is
/// a shared mount, as systemd makes it, it would otherwise reach the helpers' namespaces).
fn privatize(dir: &Path) -> Result<(), ShimError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(io_err("mountinfo"))?;
    let canonical = dir.canonicalize().map_err(io_err(dir.display()))?;
    let wanted = canonical.to_string_lossy();
    let mounted = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == wanted);
    let failed = |what: &str, e: nix::errno::Errno| {
        ShimError::Start(format!("{what} {}: {e}", dir.display()))
    };
    if !mounted {
        nix::mount::mount(
            Some(&canonical),
            &canonical,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| failed("binding onto itself", e))?;
    }
    nix::mount::mount(
        None::<&str>,
        &canonical,
        None::<&str>,
        nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| failed("making private", e))
}

/// Runs Linux OCI images with youki's libcontainer. One per node.
pub struct ContainerShim {
    shared: Arc<Shared>,
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ShimError {
    move |e| ShimError::Start(format!("{what}: {e}"))
}

impl ContainerShim {
    /// Starts the helper. Containers of an earlier run of this node are gone (the helper
    /// deletes them when its agent goes), so their root filesystems and bundles are
    /// removed here.
    pub fn new(config: ContainerConfig) -> Result<Self, ShimError> {
        let bundles = config.state_dir.join("bundles");
        let ipc = crate::ipc::PodIpc::new(config.state_dir.join("pods"))
            .map_err(io_err(config.state_dir.join("pods").display()))?;
        let runtime_root = config.state_dir.join("runtime");
        if bundles.exists() {
            std::fs::remove_dir_all(&bundles).map_err(io_err(bundles.display()))?;
        }
        std::fs::create_dir_all(&bundles).map_err(io_err(bundles.display()))?;
        std::fs::create_dir_all(&runtime_root).map_err(io_err(runtime_root.display()))?;
        config.snapshots.remove_all();
        let mut args: Vec<String> = config.helper_args.clone();
        let private_roots = if config.hidden_mounts.is_empty() {
            None
        } else {
            let roots = config.snapshots.roots_dir();
            privatize(&roots)?;
            for hidden in &config.hidden_mounts {
                args.push("--hide".into());
                args.push(hidden.to_string_lossy().into_owned());
            }
            Some(roots)
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let count = config.helpers.max(1);
        let mut helpers = Vec::with_capacity(count);
        for n in 0..count {
            let root = runtime_root.join(n.to_string());
            helpers.push(
                Helper::spawn(&config.helper_program, &args, &root)
                    .map_err(|e| ShimError::Start(e.to_string()))?,
            );
        }
        let shim = ContainerShim {
            shared: Arc::new(Shared {
                helpers,
                load: (0..count).map(|_| AtomicU64::new(0)).collect(),
                building: tokio::sync::Semaphore::new(count),
                snapshots: config.snapshots.with_warm_roots(config.warm_roots),
                bundles,
                private_roots,
                ipc,
                seq: AtomicU64::new(0),
                node_capabilities: crate::node_capabilities().ok(),
                nofile: crate::nofile_limit(),
                cgroup_v2: crate::host_cgroup_v2(),
            }),
        };
        if config.warm_roots > 0 {
            let shared = Arc::downgrade(&shim.shared);
            std::thread::Builder::new()
                .name("skiff-warm-roots".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(WARM_ROOT_CHECK);
                        match shared.upgrade() {
                            Some(shared) => shared.snapshots.expire_warm_roots(WARM_ROOT_IDLE),
                            None => break,
                        }
                    }
                })
                .map_err(io_err("starting the warm roots' expiry"))?;
        }
        Ok(shim)
    }
}

/// A kept root filesystem unused this long is unmounted and removed.
const WARM_ROOT_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
const WARM_ROOT_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// kubelet's hosts file for a pod with its own network namespace.
fn hosts_file(sandbox: &PodSandbox) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = sandbox.ip {
        match &sandbox.domain {
            Some(domain) => s.push_str(&format!("{ip}\t{0}.{domain}\t{0}\n", sandbox.hostname)),
            None => s.push_str(&format!("{ip}\t{}\n", sandbox.hostname)),
        }
    }
    if !sandbox.host_aliases.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in &sandbox.host_aliases {
            s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    s
}

fn user_overrides(s: &skiff_shim::Security) -> UserOverrides {
    UserOverrides {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        supplemental_groups: s.supplemental_groups.clone(),
        fs_group: s.fs_group,
    }
}

/// The cgroup every container of this node lives under, one level deep, so that nothing
/// per pod is left behind in any hierarchy when containers go.
fn cgroups_path(id: &str) -> PathBuf {
    Path::new("/skiff").join(id)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ShimError::Start(format!("creating an output pipe: {e}")))
}

/// Copies a terminal's output into the log sink, as stdout, until the last process holding
/// it has exited (reads fail with EIO then). Blocking reads on a thread of its own: a
/// terminal is not a pipe tokio can poll, and its master side stays in blocking mode for
/// the agent's writers.
fn forward_terminal(master: OwnedFd, logs: Arc<dyn skiff_shim::LogSink>) {
    use std::io::Read;
    let mut terminal = std::fs::File::from(master);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match terminal.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => logs.write(Stream::Stdout, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Copies one output pipe into the log sink until every writer has closed it.
async fn forward(fd: OwnedFd, stream: Stream, logs: Arc<dyn skiff_shim::LogSink>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => logs.write(stream, &buf[..n]),
        }
    }
}

#[async_trait::async_trait]
impl Shim for ContainerShim {
    fn name(&self) -> &'static str {
        HANDLER
    }

    fn media_types(&self) -> &'static [&'static str] {
        &[
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ]
    }

    fn runs(&self) -> skiff_shim::WorkloadKind {
        skiff_shim::WorkloadKind::Linux
    }

    fn can_run(&self, workload: &Workload) -> bool {
        matches!(workload, Workload::Rootfs { .. })
    }

    /// Without NET_ADMIN (or SYS_ADMIN, or ALL), which the default capability set leaves
    /// out, a container's processes cannot change its network namespace's addresses,
    /// routes, firewall rules or sysctls (`/proc/sys` is read-only): they can only open
    /// sockets in it, and those end with the container's pid namespace.
    fn sandbox_reusable_for(&self, security: &skiff_shim::Security) -> bool {
        !security.privileged
            && !security.capabilities_add.iter().any(|c| {
                let c = c.trim_start_matches("CAP_").to_ascii_uppercase();
                matches!(c.as_str(), "NET_ADMIN" | "SYS_ADMIN" | "ALL")
            })
    }

    async fn create(
        &self,
        spec: ContainerSpec,
        sandbox: &PodSandbox,
    ) -> Result<Box<dyn Container>, ShimError> {
        let Workload::Rootfs { layers, user, .. } = &spec.workload else {
            return Err(ShimError::InvalidWorkload(
                "a WebAssembly artifact, not a Linux image: run it with the wasmtime runtime"
                    .into(),
            ));
        };
        if sandbox.shared {
            // Its processes could bind any address there, or change the namespace.
            return Err(ShimError::Config(
                "a Linux container needs a network namespace of its own, not the node's shared one"
                    .into(),
            ));
        }
        let shared = self.shared.clone();
        let _building = self
            .shared
            .building
            .acquire()
            .await
            .map_err(|_| ShimError::Start("the container runtime is shutting down".into()))?;
        // One id per attempt: a restarted container's predecessor may still be going.
        let id = format!(
            "{}-{}",
            spec.id.replace('/', "_"),
            shared.seq.fetch_add(1, Ordering::Relaxed)
        );
        let layers: Vec<skiff_images::Layer> = layers
            .iter()
            .map(|l| skiff_images::Layer {
                path: l.path.clone(),
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect();
        let image_user = user.clone().unwrap_or_default();
        let overrides = user_overrides(&spec.security);
        let pod = format!(
            "{}_{}({})",
            sandbox.hostname, sandbox.namespace, sandbox.uid
        );
        crate::verify_run_as_non_root(&overrides, &image_user, &pod, &spec.name)
            .map_err(|e| ShimError::Config(e.to_string()))?;

        // Unpacking layers, reading the image's user database, and the pod's shared IPC
        // block.
        let pod_uid = sandbox.uid.clone();
        let host_ipc = sandbox.host_ipc;
        let prepared = {
            let shared = shared.clone();
            let id = id.clone();
            let pod_uid = pod_uid.clone();
            tokio::task::spawn_blocking(move || {
                let rootfs = shared
                    .snapshots
                    .prepare(&id, &layers)
                    .map_err(|e| ShimError::InvalidWorkload(e.to_string()))?;
                let user = match crate::resolve_user(&rootfs.path, &image_user, &overrides) {
                    Ok(u) => u,
                    Err(e) => {
                        let _ = shared.snapshots.remove(&id);
                        return Err(ShimError::Config(e.to_string()));
                    }
                };
                // hostIPC: the node's IPC namespace and /dev/shm, nothing of the pod's.
                if host_ipc {
                    return Ok((rootfs, user, None));
                }
                match shared.ipc.acquire(&pod_uid) {
                    Ok(ipc) => Ok((rootfs, user, Some(ipc))),
                    Err(e) => {
                        let _ = shared.snapshots.remove(&id);
                        Err(ShimError::Start(format!("the pod's IPC namespace: {e}")))
                    }
                }
            })
            .await
            .map_err(|e| ShimError::Start(format!("preparing the root filesystem: {e}")))??
        };
        let (rootfs, resolved, ipc) = prepared;
        let bundle = shared.bundles.join(&id);
        let pod_ipc = ipc.is_some();
        let cleanup = |shared: &Shared| {
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = shared.snapshots.remove(&id);
            if pod_ipc {
                shared.ipc.release(&pod_uid);
            }
        };
        let built = (|| -> Result<(), ShimError> {
            std::fs::create_dir_all(&bundle).map_err(io_err(bundle.display()))?;
            let file = |name: &str, bytes: &[u8]| -> Result<PathBuf, ShimError> {
                let path = bundle.join(name);
                std::fs::write(&path, bytes).map_err(io_err(path.display()))?;
                Ok(path)
            };
            let hosts = file("hosts", hosts_file(sandbox).as_bytes())?;
            let resolv = file("resolv.conf", sandbox.dns.resolv_conf().as_bytes())?;
            let hostname = file("hostname", format!("{}\n", sandbox.hostname).as_bytes())?;
            let termination = file("termination-log", b"")?;
            // Whoever the container runs as may write its termination message.
            std::os::unix::fs::chown(&termination, Some(resolved.uid), Some(resolved.gid))
                .map_err(io_err(termination.display()))?;
            let mut mounts: Vec<BindMount> = spec
                .mounts
                .iter()
                .map(|m| BindMount {
                    source: m.host_path.clone(),
                    destination: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect();
            let bind = |source: PathBuf, destination: &str| BindMount {
                source,
                destination: destination.into(),
                read_only: false,
            };
            mounts.push(bind(hosts, "/etc/hosts"));
            mounts.push(bind(hostname, "/etc/hostname"));
            mounts.push(bind(resolv, "/etc/resolv.conf"));
            mounts.push(bind(termination, "/dev/termination-log"));
            // The pod's /dev/shm, in place of the container's own.
            mounts.push(bind(
                ipc.as_ref()
                    .map_or_else(|| PathBuf::from("/dev/shm"), |i| i.shm.clone()),
                "/dev/shm",
            ));
            let input = SpecInput {
                argv: spec.argv.clone(),
                env: spec.env.clone(),
                working_dir: spec.working_dir.clone(),
                user: resolved.clone(),
                rootfs: rootfs.path.clone(),
                // Named through the agent's root: a helper may not see the pin itself.
                netns: sandbox.netns.as_ref().map(|ns| {
                    let mut path = PathBuf::from(format!("/proc/{}/root", std::process::id()));
                    path.push(ns.strip_prefix("/").unwrap_or(ns));
                    path
                }),
                ipcns: ipc.as_ref().map(|i| i.ns.clone()),
                host_ipc: sandbox.host_ipc,
                host_pid: sandbox.host_pid,
                pidns: spec.pid_namespace.clone(),
                hostname: sandbox.hostname.clone(),
                cgroups_path: cgroups_path(&id),
                cgroup_v2: shared.cgroup_v2,
                mounts,
                resources: Resources {
                    memory_limit: spec.memory_limit,
                    cpu_request_millis: spec.cpu_request_millis,
                    cpu_limit_millis: spec.cpu_limit_millis,
                    pids_limit: None,
                },
                security: spec.security.clone(),
                // libcontainer would write it into the helper itself, before it forks.
                oom_score_adj: None,
                nofile: Some(shared.nofile),
                node_capabilities: shared.node_capabilities.clone(),
                tty: spec.tty,
            };
            let mut oci =
                crate::runtime_spec(&input).map_err(|e| ShimError::Config(e.to_string()))?;
            crate::adapt_for_libcontainer(&mut oci, &bundle)
                .map_err(|e| ShimError::Config(e.to_string()))?;
            let json = serde_json::to_vec(&oci)
                .map_err(|e| ShimError::Start(format!("writing config.json: {e}")))?;
            file("config.json", &json)?;
            Ok(())
        })();
        if let Err(e) = built {
            cleanup(&shared);
            return Err(e);
        }
        // Without a terminal: stdout and stderr on pipes, stdin on a pipe the container
        // keeps for `kubectl attach -i` when its spec asks (`stdin: true`), else /dev/null.
        let stdio = if spec.tty {
            None
        } else {
            let pipes = (|| -> Result<_, ShimError> {
                let (stdin, input) = if spec.stdin {
                    let (r, w) = pipe()?;
                    (r, Some(w))
                } else {
                    let null: OwnedFd = std::fs::File::open("/dev/null")
                        .map_err(io_err("/dev/null"))?
                        .into();
                    (null, None)
                };
                Ok((stdin, input, pipe()?, pipe()?))
            })();
            match pipes {
                Ok(p) => Some(p),
                Err(e) => {
                    cleanup(&shared);
                    return Err(e);
                }
            }
        };
        let slot = (0..shared.helpers.len())
            .min_by_key(|&i| shared.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        shared.load[slot].fetch_add(1, Ordering::Relaxed);
        let helper = shared.helpers[slot].clone();
        // Helpers in a namespace of their own get the root as a detached copy of its mount.
        let root = match &shared.private_roots {
            None => None,
            Some(_) => match clone_mount(&rootfs.path) {
                Ok(m) => Some(m),
                Err(e) => {
                    shared.load[slot].fetch_sub(1, Ordering::Relaxed);
                    cleanup(&shared);
                    return Err(e);
                }
            },
        };
        let created = match (stdio, root) {
            (Some((stdin, input, (out_r, out_w), (err_r, err_w))), root) => {
                // The container's user owns its stdout and stderr, as runc arranges: a
                // process that drops root may still open /dev/stdout and /dev/stderr.
                for fd in [&out_w, &err_w] {
                    let _ = std::os::unix::fs::fchown(fd, Some(resolved.uid), Some(resolved.gid));
                }
                let made = match root {
                    Some(root) => helper
                        .create_rooted(&id, &bundle, Some([stdin, out_w, err_w]), root)
                        .await
                        .map(|(pid, _)| pid),
                    None => helper.create(&id, &bundle, stdin, out_w, err_w).await,
                };
                made.map(|pid| {
                    let readers = vec![
                        tokio::spawn(forward(out_r, Stream::Stdout, spec.logs.clone())),
                        tokio::spawn(forward(err_r, Stream::Stderr, spec.logs.clone())),
                    ];
                    (pid, readers, input.map(|fd| (fd, false)))
                })
            }
            // With a terminal, its output is the container's stdout, and its master side is
            // the input.
            (None, root) => {
                let made = match root {
                    Some(root) => helper
                        .create_rooted(&id, &bundle, None, root)
                        .await
                        .and_then(|(pid, master)| {
                            master.map(|m| (pid, m)).ok_or_else(|| {
                                crate::client::HelperError::Runtime("no terminal".into())
                            })
                        }),
                    None => helper.create_tty(&id, &bundle).await,
                };
                match made {
                    Err(e) => Err(e),
                    Ok((pid, master)) => match master.try_clone() {
                        Err(e) => Err(crate::client::HelperError::Runtime(format!(
                            "the terminal: {e}"
                        ))),
                        Ok(reader) => {
                            let logs = spec.logs.clone();
                            let readers = vec![tokio::task::spawn_blocking(move || {
                                forward_terminal(reader, logs)
                            })];
                            Ok((pid, readers, spec.stdin.then_some((master, true))))
                        }
                    },
                }
            }
        };
        let (pid, readers, input) = match created {
            Ok(c) => c,
            Err(e) => {
                let _ = helper.delete(&id).await;
                shared.load[slot].fetch_sub(1, Ordering::Relaxed);
                cleanup(&shared);
                return Err(ShimError::Start(e.to_string()));
            }
        };
        Ok(Box::new(LinuxContainer {
            shared,
            helper,
            slot,
            id,
            bundle,
            pid,
            pod_uid: pod_ipc.then_some(pod_uid),
            readers: tokio::sync::Mutex::new(readers),
            input: std::sync::Mutex::new(input),
            exit: OnceCell::new(),
            runtime: tokio::runtime::Handle::current(),
        }))
    }
}

struct LinuxContainer {
    shared: Arc<Shared>,
    /// The helper that made it, and its index in `Shared::helpers`.
    helper: Helper,
    slot: usize,
    id: String,
    bundle: PathBuf,
    /// Its first process, as the helper (and this process: one pid namespace) sees it.
    pid: i32,
    /// The pod whose shared IPC it holds (none with hostIPC).
    pod_uid: Option<String>,
    /// The output forwarders: an exit is reported once they have drained the pipes.
    readers: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The write end of its stdin, or its terminal's master side (`true`), while open.
    input: std::sync::Mutex<Option<(OwnedFd, bool)>>,
    exit: OnceCell<Exit>,
    runtime: tokio::runtime::Handle,
}

impl LinuxContainer {
    fn signal(&self, signal: Signal, all: bool) {
        let helper = self.helper.clone();
        let id = self.id.clone();
        self.runtime.spawn(async move {
            if let Err(e) = helper.kill(&id, signal as i32, all).await {
                tracing::debug!(container = %id, "{signal}: {e}");
            }
        });
    }

    fn cgroup_file(&self, controller: &str, file: &str) -> PathBuf {
        let mut p = PathBuf::from("/sys/fs/cgroup");
        if !self.shared.cgroup_v2 {
            p.push(controller);
        }
        p.join(
            cgroups_path(&self.id)
                .strip_prefix("/")
                .unwrap_or(Path::new("")),
        )
        .join(file)
    }

    fn termination_message(&self) -> Option<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(self.bundle.join("termination-log"))
            .ok()?
            .take(MAX_TERMINATION_MESSAGE)
            .read_to_string(&mut text)
            .ok()?;
        Some(text).filter(|t| !t.is_empty())
    }
}

#[async_trait::async_trait]
impl Container for LinuxContainer {
    async fn start(&self) -> Result<(), ShimError> {
        self.helper
            .start(&self.id)
            .await
            .map_err(|e| ShimError::Start(e.to_string()))
    }

    async fn wait(&self) -> Exit {
        self.exit
            .get_or_init(|| async {
                let exit = self.helper.wait(&self.id).await;
                // The container's pid namespace ended with its first process, so every
                // writer of the pipes is gone and the forwarders finish.
                for reader in self.readers.lock().await.drain(..) {
                    let _ = reader.await;
                }
                match exit {
                    None => Exit {
                        code: 128 + Signal::SIGKILL as i32,
                        reason: ExitReason::Error,
                        message: Some("the container runtime helper went away".into()),
                    },
                    Some(e) => Exit {
                        code: e.code,
                        reason: if e.oom_killed {
                            ExitReason::OOMKilled
                        } else if e.code == 0 {
                            ExitReason::Completed
                        } else {
                            ExitReason::Error
                        },
                        message: self.termination_message(),
                    },
                }
            })
            .await
            .clone()
    }

    fn stop(&self, grace: Duration) {
        let helper = self.helper.clone();
        let id = self.id.clone();
        self.runtime.spawn(async move {
            let _ = helper.kill(&id, Signal::SIGTERM as i32, false).await;
            if tokio::time::timeout(grace, helper.wait(&id)).await.is_err() {
                let _ = helper.kill(&id, Signal::SIGKILL as i32, true).await;
            }
        });
    }

    fn kill(&self) {
        self.signal(Signal::SIGKILL, true);
    }

    fn stats(&self) -> Stats {
        let read = |controller: &str, file: &str| {
            std::fs::read_to_string(self.cgroup_file(controller, file)).unwrap_or_default()
        };
        if self.shared.cgroup_v2 {
            let cpu_usec = read("", "cpu.stat")
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            Stats {
                memory_bytes: read("", "memory.current").trim().parse().unwrap_or(0),
                cpu_nanos: cpu_usec * 1000,
            }
        } else {
            Stats {
                memory_bytes: read("memory", "memory.usage_in_bytes")
                    .trim()
                    .parse()
                    .unwrap_or(0),
                cpu_nanos: read("cpuacct", "cpuacct.usage").trim().parse().unwrap_or(0),
            }
        }
    }

    fn exec_refusal(&self) -> Option<String> {
        None
    }

    /// The first process's: the container's own, or the node's with hostPID. While the
    /// container runs its first process holds that namespace; once it has exited a
    /// container joining it fails (or, the pid reused, would join another's: the agent
    /// asks only while the container runs).
    fn pid_namespace(&self) -> Option<PathBuf> {
        Some(PathBuf::from(format!("/proc/{}/ns/pid", self.pid)))
    }

    fn attach_input(&self) -> Option<AttachInput> {
        let input = self.input.lock().expect("input lock");
        let (fd, terminal) = input.as_ref()?;
        Some(AttachInput {
            fd: fd.try_clone().ok()?,
            terminal: *terminal,
        })
    }

    fn close_stdin(&self) {
        self.input.lock().expect("input lock").take();
    }

    async fn exec(&self, argv: Vec<String>, tty: bool) -> Result<ExecProcess, ShimError> {
        if argv.is_empty() {
            return Err(ShimError::Config("command: nothing to run".into()));
        }
        let n = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let exec_id = format!("{}.exec-{n}", self.id);
        // The container's own process, with another command: same user, environment,
        // working directory and capabilities, as runc exec does for the kubelet.
        let config = self.bundle.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&config)
            .map_err(|e| ShimError::Start(format!("reading {}: {e}", config.display())))?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| ShimError::Start("the container's spec has no process".into()))?;
        process.set_args(Some(argv));
        process.set_terminal(Some(tty));
        let path = self.bundle.join(format!("exec-{n}.json"));
        let json = serde_json::to_vec(&process)
            .map_err(|e| ShimError::Start(format!("writing the exec process: {e}")))?;
        std::fs::write(&path, json).map_err(io_err(path.display()))?;
        let mut ours = (None, None, None);
        let stdio = if tty {
            None
        } else {
            let (in_r, in_w) = pipe()?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            ours = (Some(in_w), Some(out_r), Some(err_r));
            Some([in_r, out_w, err_w])
        };
        let started = self
            .helper
            .exec(&self.id, &exec_id, &path, tty, stdio)
            .await;
        let _ = std::fs::remove_file(&path);
        let (_pid, pty) = started.map_err(|e| ShimError::Start(e.to_string()))?;
        let helper = self.helper.clone();
        // Whoever stops waiting for the process (a probe that timed out) ends it.
        let mut unwaited = KillUnwaited {
            helper: helper.clone(),
            exec_id: Some(exec_id.clone()),
            runtime: self.runtime.clone(),
        };
        let exit = Box::pin(async move {
            let exit = helper.wait(&exec_id).await;
            unwaited.disarm();
            helper.forget(&exec_id);
            exit.map(|e| e.code)
                .ok_or_else(|| ShimError::Start("the container runtime helper went away".into()))
        });
        Ok(ExecProcess {
            pty,
            stdin: ours.0,
            stdout: ours.1,
            stderr: ours.2,
            exit,
        })
    }
}

/// Kills an exec'd process whose exit nobody waits for any more (the future was dropped
/// before it resolved), and stops tracking it.
struct KillUnwaited {
    helper: Helper,
    exec_id: Option<String>,
    runtime: tokio::runtime::Handle,
}

impl KillUnwaited {
    /// The process's exit was seen: nothing to kill.
    fn disarm(&mut self) {
        self.exec_id = None;
    }
}

impl Drop for KillUnwaited {
    fn drop(&mut self) {
        let Some(exec_id) = self.exec_id.take() else {
            return;
        };
        let helper = self.helper.clone();
        self.runtime.spawn(async move {
            if let Err(e) = helper.kill(&exec_id, Signal::SIGKILL as i32, false).await {
                tracing::debug!(exec = %exec_id, "killing an exec nobody waits for: {e}");
            }
            let _ = helper.wait(&exec_id).await;
            helper.forget(&exec_id);
        });
    }
}

impl Drop for LinuxContainer {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        let helper = self.helper.clone();
        let slot = self.slot;
        let id = self.id.clone();
        let bundle = self.bundle.clone();
        let pod_uid = self.pod_uid.clone();
        self.runtime.spawn(async move {
            // Delete kills whatever still runs in it first.
            let deleted = helper.delete(&id).await;
            if let Err(e) = &deleted {
                tracing::warn!(container = %id, "deleting: {e}");
            }
            shared.load[slot].fetch_sub(1, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || {
                // Kept for another container only when none of this one's processes is
                // left to write to it.
                let removed = if deleted.is_ok() {
                    shared.snapshots.release(&id)
                } else {
                    shared.snapshots.remove(&id)
                };
                if let Err(e) = removed {
                    tracing::warn!(container = %id, "removing its root filesystem: {e}");
                }
                let _ = std::fs::remove_dir_all(&bundle);
                if let Some(pod_uid) = pod_uid {
                    shared.ipc.release(&pod_uid);
                }
            })
            .await;
        });
    }
}
