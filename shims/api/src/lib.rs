//! The seam between the node agent and a runtime.
//!
//! A [`Shim`] names itself (the RuntimeClass handler that selects it) and the artifact media
//! types it runs, says whether it can run a given [`Workload`], may precompile one ahead of
//! time, and creates [`Container`]s in a pod's sandbox. The node agent owns everything around
//! a container (images, the pod's network namespace, volumes on disk, log files, restarts);
//! a shim only turns a [`ContainerSpec`] into something that runs and reports how it ended.

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What a container runs, as the image store resolved it.
#[derive(Debug, Clone)]
pub enum Workload {
    /// A WebAssembly core module or component, one file.
    Wasm {
        /// Content digest of the module (`sha256:...`): the precompile cache key.
        digest: String,
        /// Media type of the layer it came from.
        media_type: String,
        path: PathBuf,
    },
    /// A Linux root filesystem made of OCI layers (the container shim).
    Rootfs {
        /// The image manifest's digest.
        digest: String,
        /// Lowest first.
        layers: Vec<Layer>,
        /// The image config's `User` (`name`, `uid`, `uid:gid`, `name:group`), if any.
        user: Option<String>,
    },
}

/// One layer blob of a Linux image, as the image store holds it (verified, compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub media_type: String,
    pub path: PathBuf,
    pub size: u64,
}

impl Workload {
    pub fn digest(&self) -> &str {
        match self {
            Workload::Wasm { digest, .. } | Workload::Rootfs { digest, .. } => digest,
        }
    }
}

/// A directory the agent prepared (emptyDir, configMap, secret, hostPath) and where the
/// container sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Which output a chunk of log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where a container's output goes. Writes are synchronous and short: the agent appends to
/// a file.
pub trait LogSink: Send + Sync {
    fn write(&self, stream: Stream, bytes: &[u8]);
}

/// Everything a shim needs to create one container of a pod.
#[derive(Clone)]
pub struct ContainerSpec {
    /// `<pod uid>/<container name>`, unique on the node.
    pub id: String,
    pub name: String,
    pub workload: Workload,
    /// The full argv: Kubernetes `command` + `args` (or the image's), argv\[0\] first.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    /// TCP ports the container declares (`containerPort`).
    pub ports: Vec<u16>,
    /// Memory limit in bytes (`resources.limits.memory`).
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores (`resources.limits.cpu`).
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores (`resources.requests.cpu`): a Linux container's weight.
    pub cpu_request_millis: Option<u64>,
    /// The securityContext fields that apply (the container's, else the pod's).
    pub security: Security,
    /// `stdin: true`: the process's stdin stays open for `kubectl attach -i` (otherwise it
    /// reads `/dev/null`).
    pub stdin: bool,
    /// `tty: true`: the process runs on a terminal, whose output is its stdout.
    pub tty: bool,
    /// A pid namespace to join instead of one of its own: an ephemeral container's
    /// `targetContainerName`'s ([`Container::pid_namespace`]), so that it sees and may
    /// trace that container's processes. Runtimes without processes ignore it.
    pub pid_namespace: Option<PathBuf>,
    pub logs: Arc<dyn LogSink>,
}

/// `securityContext`, merged: the container's value where it sets one, else the pod's.
/// A Wasm guest has no processes or users, so its shim ignores these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    /// Pod-level only.
    pub supplemental_groups: Vec<i64>,
    /// Pod-level only.
    pub fs_group: Option<i64>,
    pub privileged: bool,
    pub allow_privilege_escalation: Option<bool>,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// `seccompProfile`: `None` when neither the container nor the pod sets one.
    pub seccomp: Option<SeccompProfile>,
    pub read_only_root_filesystem: bool,
}

/// `securityContext.seccompProfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompProfile {
    RuntimeDefault,
    Unconfined,
    /// `localhostProfile`.
    Localhost(String),
}

/// The pod-level environment containers of one pod share.
#[derive(Debug, Clone, Default)]
pub struct PodSandbox {
    /// The pod's network namespace (a bind-mounted nsfs file), or `None` for the host's.
    pub netns: Option<PathBuf>,
    pub ip: Option<IpAddr>,
    /// `netns` is not the pod's own but the one the node's address-only pods share: the
    /// pod has only `ip` there. Its sockets bind `ip` and nothing else, and a loopback
    /// destination means `ip`. Only containers whose shim [`Shim::shares_network`] may be
    /// created in such a sandbox.
    pub shared: bool,
    /// The pod's hostname: `spec.hostname`, else its name.
    pub hostname: String,
    /// Its domain when it has a `subdomain` (`<subdomain>.<ns>.svc.<cluster domain>`):
    /// `/etc/hosts` names it by its fully qualified name too.
    pub domain: Option<String>,
    /// The pod's resolver configuration, as its `dnsPolicy` and `dnsConfig` make it.
    pub dns: DnsConfig,
    /// `spec.hostAliases`: more lines of `/etc/hosts` (an address and its names).
    pub host_aliases: Vec<(IpAddr, Vec<String>)>,
    pub namespace: String,
    pub uid: String,
    /// `hostIPC`: Linux containers use the node's IPC namespace and `/dev/shm`, not the
    /// pod's.
    pub host_ipc: bool,
    /// `hostPID`: Linux containers use the node's pid namespace.
    pub host_pid: bool,
}

/// A resolver configuration: what `/etc/resolv.conf` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, as written.
    pub options: Vec<String>,
}

impl DnsConfig {
    /// What `text`, a `resolv.conf`, configures (`domain` counts as a search list of one,
    /// as in glibc; the last `search` or `domain` line wins).
    pub fn parse(text: &str) -> DnsConfig {
        let mut c = DnsConfig::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        c.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => {
                    c.searches = words.map(str::to_string).collect();
                }
                Some("options") => c.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        c
    }

    /// The `resolv.conf` of this configuration.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }

    /// `options ndots:N`: names with fewer dots are tried with the search list first
    /// (glibc's default: 1).
    pub fn ndots(&self) -> usize {
        self.options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix("ndots:")?.parse().ok())
            .map_or(1, |n: usize| n.min(15))
    }
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub reason: ExitReason,
    pub message: Option<String>,
}

/// The kubelet's termination reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Exit code 0.
    Completed,
    /// A non-zero exit or a trap.
    Error,
    /// Over its memory limit.
    OOMKilled,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
        }
    }
}

/// Resource use of a running container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_bytes: u64,
    pub cpu_nanos: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The artifact can't be loaded (bad bytes, wrong kind): `CreateContainerError`.
    #[error("invalid workload: {0}")]
    InvalidWorkload(String),
    /// The pod asks for something the runtime will not or cannot give (a user, a
    /// capability, a profile): `CreateContainerConfigError`. Names the field at fault.
    #[error("{0}")]
    Config(String),
    /// It loaded but could not start: `RunContainerError`.
    #[error("start failed: {0}")]
    Start(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The two kinds of [`Workload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Wasm,
    Linux,
}

/// A runtime. One instance per node, shared by every pod it runs.
#[async_trait::async_trait]
pub trait Shim: Send + Sync + 'static {
    /// The RuntimeClass handler that selects this shim (`wasmtime`, `runc`-like).
    fn name(&self) -> &'static str;
    /// Layer media types this shim runs.
    fn media_types(&self) -> &'static [&'static str];
    /// Whether this shim can run the workload (its kind and, for Wasm, its bytes).
    fn can_run(&self, workload: &Workload) -> bool;
    /// What this shim runs, for taking the right entry of an image index that offers both
    /// a Wasm and a Linux image.
    fn runs(&self) -> WorkloadKind;
    /// Whether a pod sandbox this shim's containers ran in can serve another pod once they
    /// are gone: true when its workloads cannot change their network namespace (addresses,
    /// routes, firewall rules, sysctls) but only open sockets in it. The node then recycles
    /// the sandbox instead of tearing it down and building another.
    fn sandbox_reusable(&self) -> bool {
        false
    }
    /// As [`Shim::sandbox_reusable`], for one container with this securityContext (a Linux
    /// container can change its network namespace only with capabilities it may be
    /// granted).
    fn sandbox_reusable_for(&self, _security: &Security) -> bool {
        self.sandbox_reusable()
    }
    /// Whether a container of `workload` can live in a sandbox whose namespace is shared
    /// ([`PodSandbox::shared`]): the shim makes every socket it has, binding the pod's IP.
    /// Answers from what the shim knows already, without loading anything: `false` when
    /// unsure.
    fn shares_network(&self, _workload: &Workload) -> bool {
        false
    }
    /// Compile ahead of the first start, so that start only instantiates. Optional.
    async fn precompile(&self, _workload: &Workload) -> Result<(), ShimError> {
        Ok(())
    }
    /// Create a container, ready to start.
    async fn create(
        &self,
        spec: ContainerSpec,
        sandbox: &PodSandbox,
    ) -> Result<Box<dyn Container>, ShimError>;
}

/// A process `kubectl exec` started in a container: its stdio (pipes, or one terminal)
/// and its exit code to come.
pub struct ExecProcess {
    /// With a terminal: its master side, for input, output and resizing.
    pub pty: Option<OwnedFd>,
    /// Without one: the write end of its stdin, the read ends of its stdout and stderr.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Resolves to its exit code (128 + signal when killed).
    pub exit: Pin<Box<dyn Future<Output = Result<i32, ShimError>> + Send>>,
}

/// The input side of a running container's own process, for `kubectl attach -i`.
pub struct AttachInput {
    /// The write end of its stdin, or with a terminal the terminal's master side (which
    /// also takes window sizes). A duplicate: dropping it closes only this copy.
    pub fd: OwnedFd,
    pub terminal: bool,
}

/// One created container. Dropping it releases everything it holds (kill first).
#[async_trait::async_trait]
pub trait Container: Send + Sync {
    /// Runs it; returns once it is running (or failed to).
    async fn start(&self) -> Result<(), ShimError>;
    /// Resolves when it has exited; may be called more than once.
    async fn wait(&self) -> Exit;
    /// Asks it to stop, and stops it for good after `grace`. Returns at once.
    fn stop(&self, grace: Duration);
    /// Stops it now.
    fn kill(&self);
    fn stats(&self) -> Stats;
    /// Why `kubectl exec` cannot reach this container, or `None` when it can. The agent
    /// answers with this reason before any stream is set up. (`kubectl attach` reaches every
    /// running container: its output comes from the log sink.)
    fn exec_refusal(&self) -> Option<String> {
        Some("its runtime runs no processes that could be exec'd into".into())
    }
    /// Its own process's stdin or terminal, when its spec keeps one open
    /// ([`ContainerSpec::stdin`]) and it has not been closed.
    fn attach_input(&self) -> Option<AttachInput> {
        None
    }
    /// Closes the process's stdin for good (`stdinOnce`, after the first attach): it reads
    /// end-of-file once every attached copy is gone too.
    fn close_stdin(&self) {}
    /// The pod's network moved (an address-only pod got a namespace of its own, with the
    /// same IP): listen and connect from `sandbox` from now on. Connections already open
    /// carry on.
    fn network_moved(&self, _sandbox: &PodSandbox) -> Result<(), ShimError> {
        Ok(())
    }
    /// Its processes' pid namespace (an nsfs path another container can join), when it
    /// has processes.
    fn pid_namespace(&self) -> Option<PathBuf> {
        None
    }
    /// Runs `argv` in the running container, as its own process runs (user, environment,
    /// working directory, confinement), with a terminal when `tty`.
    async fn exec(&self, _argv: Vec<String>, _tty: bool) -> Result<ExecProcess, ShimError> {
        Err(ShimError::Start(self.exec_refusal().unwrap_or_default()))
    }
}

/// Helpers the shims' tests share. Always compiled (it is small and needs no dependency):
/// behind a feature that only the shims' dev-dependencies turned on, a workspace test build
/// compiled this crate and everything above it a second time.
#[doc(hidden)]
pub mod testing {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A network namespace made with `ip netns add`, deleted on drop.
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

        /// Where `ip netns` pins it: what a pod sandbox's `netns` names.
        pub fn path(&self) -> PathBuf {
            Path::new("/run/netns").join(&self.0)
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
}
