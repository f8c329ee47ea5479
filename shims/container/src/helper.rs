//! The container helper: one single-threaded process per node that makes every libcontainer
//! call, so that libcontainer's process-wide changes (working directory, dumpable flag) and
//! its raw `clone3` never meet another thread. It is the parent of every container process,
//! waits for their exits through pidfds, and reports each one with whether the kernel's OOM
//! killer struck in the container's cgroup (read after the exit, before the cgroup goes).
//!
//! It serves one agent over the socket it inherited: requests are handled one at a time, in
//! order (libcontainer could not do two at once anyway). When the agent goes away (the
//! socket closes), the helper kills and deletes every container it made and exits: nothing
//! is left running that no one could reap or stop.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};

use crate::proto::{self, Event, MAX_PACKET, ProtoError, Request};

/// A console socket listening for a terminal's master side, and its path.
type Console = (std::os::unix::net::UnixListener, PathBuf);

/// `skiff container-helper --fd N --root DIR [--hide PREFIX]...`: serves the agent on
/// socket `N`, keeping libcontainer's state under `DIR`, in a mount namespace of its own
/// without the mounts under each `PREFIX` (see [`private_mounts`]). Returns the process's
/// exit code.
pub fn main_from_args(args: impl Iterator<Item = String>) -> i32 {
    let mut fd: Option<RawFd> = None;
    let mut root: Option<PathBuf> = None;
    let mut hide: Vec<PathBuf> = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fd" => fd = args.next().and_then(|v| v.parse().ok()),
            "--root" => root = args.next().map(PathBuf::from),
            "--hide" => hide.extend(args.next().map(PathBuf::from)),
            other => {
                eprintln!("container-helper: unknown argument {other:?}");
                return 2;
            }
        }
    }
    let (Some(fd), Some(root)) = (fd, root) else {
        eprintln!("container-helper: usage: container-helper --fd N --root DIR");
        return 2;
    };
    // SAFETY: the agent started this process with `fd` open for it and nothing else in
    // this process knows the number.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let agent_mounts = match private_mounts(&hide) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("container-helper: {e}");
            return 1;
        }
    };
    match Helper::new(sock, root, agent_mounts).and_then(|mut h| h.run()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("container-helper: {e}");
            1
        }
    }
}

struct Running {
    container: Container,
    pid: i32,
    /// Until the process is reaped.
    pidfd: Option<OwnedFd>,
    /// Where its cgroup counts OOM kills.
    oom_file: Option<PathBuf>,
    /// Its root filesystem, as its bundle names it.
    rootfs: Option<PathBuf>,
    /// Its seccomp filter and loading capabilities, for processes exec'd into it too.
    plan: crate::filter::Plan,
    /// Whether it has a pid namespace of its own (not `hostPID`): the kernel then ends
    /// every process of it with the first.
    own_pids: bool,
    /// Its `linux.cgroupsPath`.
    cgroups_path: Option<PathBuf>,
}

/// A process started in a running container by `exec`.
struct Exec {
    /// The container it runs in.
    container: String,
    pid: i32,
    pidfd: OwnedFd,
}

struct Helper {
    sock: OwnedFd,
    root: PathBuf,
    containers: HashMap<String, Running>,
    execs: HashMap<String, Exec>,
    buf: Vec<u8>,
    /// The agent is gone: nothing is reported any more.
    closing: bool,
    /// The agent's mount namespace, when this process has one of its own.
    agent_mounts: Option<OwnedFd>,
    /// Seccomp filters compiled so far, by profile.
    filters: crate::filter::Cache,
    /// Roots attached for a build, to detach after answering.
    detach: Vec<PathBuf>,
    /// This process's own mount namespace, to come back to after preparing one for a
    /// container.
    own_mount_ns: Option<OwnedFd>,
    /// On cgroup v1, the host's hierarchies: found once here, where libcontainer's
    /// `delete` looks them up again for every container (see [`Helper::remove_reaped`]),
    /// and the pieces of each container's `/sys/fs/cgroup` (see [`crate::cgroupview`]).
    cgroup_v1: Option<crate::cgroupview::Hierarchies>,
}

impl Helper {
    fn new(sock: OwnedFd, root: PathBuf, agent_mounts: Option<OwnedFd>) -> Result<Helper, String> {
        std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        Ok(Helper {
            sock,
            root,
            containers: HashMap::new(),
            execs: HashMap::new(),
            buf: vec![0; MAX_PACKET],
            closing: false,
            agent_mounts,
            filters: crate::filter::Cache::default(),
            detach: Vec::new(),
            own_mount_ns: std::fs::File::open("/proc/self/ns/mnt")
                .ok()
                .map(OwnedFd::from),
            cgroup_v1: crate::cgroupview::Hierarchies::of_host(),
        })
    }

    fn run(&mut self) -> Result<(), String> {
        loop {
            let waiting: Vec<(String, RawFd)> = self
                .containers
                .iter()
                .filter_map(|(id, r)| r.pidfd.as_ref().map(|fd| (id.clone(), fd.as_raw_fd())))
                .chain(
                    self.execs
                        .iter()
                        .map(|(id, e)| (id.clone(), e.pidfd.as_raw_fd())),
                )
                .collect();
            let (sock_ready, exited) = {
                let mut fds = vec![PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
                let borrowed: Vec<_> = waiting
                    .iter()
                    // SAFETY: each descriptor is owned by `self.containers` and stays open
                    // for the whole poll.
                    .map(|(_, fd)| unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) })
                    .collect();
                fds.extend(
                    borrowed
                        .iter()
                        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("poll: {e}")),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let exited: Vec<String> = fds[1..]
                    .iter()
                    .zip(&waiting)
                    .filter(|(f, _)| ready(f))
                    .map(|(_, (id, _))| id.clone())
                    .collect();
                (ready(&fds[0]), exited)
            };
            for id in exited {
                self.reap(&id);
            }
            if sock_ready {
                match proto::recv::<Request>(self.sock.as_fd(), &mut self.buf) {
                    Ok((request, fds)) => self.handle(request, fds),
                    Err(ProtoError::Closed) => {
                        self.shutdown();
                        return Ok(());
                    }
                    Err(ProtoError::Socket(nix::errno::Errno::EINTR)) => {}
                    Err(ProtoError::Socket(e)) => {
                        self.shutdown();
                        return Err(format!("agent socket: {e}"));
                    }
                    // A message this helper cannot read: answer nothing (there is no
                    // sequence number to answer), keep serving.
                    Err(e) => eprintln!("container-helper: {e}"),
                }
            }
        }
    }

    fn send(&self, event: &Event) {
        self.send_with(event, &[]);
    }

    fn send_with(&self, event: &Event, fds: &[RawFd]) {
        if self.closing {
            return;
        }
        match proto::send(self.sock.as_fd(), event, fds) {
            Ok(()) => {}
            // The agent is gone; the socket's end, read next, shuts everything down.
            Err(ProtoError::Socket(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET)) => {}
            Err(e) => eprintln!("container-helper: sending to the agent: {e}"),
        }
    }

    fn reply(&self, seq: u64, result: Result<Option<i32>, String>) {
        let event = match result {
            Ok(pid) => Event::Reply {
                seq,
                error: None,
                pid,
            },
            Err(e) => Event::Reply {
                seq,
                error: Some(e),
                pid: None,
            },
        };
        self.send(&event);
    }

    /// Answers a request that started a process: its pid, and its terminal's master side
    /// when it has one.
    fn reply_process(&self, seq: u64, result: Result<(i32, Option<OwnedFd>), String>) {
        match result {
            Err(e) => self.reply(seq, Err(e)),
            Ok((pid, master)) => {
                let fds: Vec<RawFd> = master.iter().map(|m| m.as_raw_fd()).collect();
                let event = Event::Reply {
                    seq,
                    error: None,
                    pid: Some(pid),
                };
                self.send_with(&event, &fds);
            }
        }
    }

    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) {
        match request {
            Request::Create {
                seq,
                id,
                bundle,
                tty,
                root_mount,
            } => {
                let mut fds = fds;
                let root = if root_mount { fds.pop() } else { None };
                let r = self.create(&id, &bundle, tty, fds, root);
                self.reply_process(seq, r);
                for path in self.detach.drain(..) {
                    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
                }
            }
            Request::Start { seq, id } => {
                let r = match self.containers.get_mut(&id) {
                    None => Err(format!("no container {id}")),
                    Some(c) => c.container.start().map_err(|e| e.to_string()).map(|_| None),
                };
                self.reply(seq, r);
            }
            Request::Kill {
                seq,
                id,
                signal,
                all,
            } => {
                let r = self.kill(&id, signal, all).map(|_| None);
                self.reply(seq, r);
            }
            Request::Delete { seq, id } => {
                let r = self.delete(&id).map(|_| None);
                self.reply(seq, r);
            }
            Request::Exec {
                seq,
                id,
                exec_id,
                process,
                tty,
            } => {
                let r = self.exec(&id, &exec_id, &process, tty, fds);
                self.reply_process(seq, r);
            }
        }
    }

    /// Starts `process` in container `id`. With a terminal, libcontainer hands the
    /// terminal's master side over a console socket, which is returned.
    fn exec(
        &mut self,
        id: &str,
        exec_id: &str,
        process: &Path,
        tty: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<(i32, Option<OwnedFd>), String> {
        let plan = match self.containers.get(id) {
            Some(r) if r.pidfd.is_some() => r.plan.clone(),
            _ => return Err(format!("container {id} is not running")),
        };
        if self.execs.contains_key(exec_id) {
            return Err(format!("exec {exec_id} exists already"));
        }
        let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&self.root)
            .map_err(|e| e.to_string())?;
        let (builder, console) = self.stdio(builder, tty, fds, "exec")?;
        let built = builder
            .validate_id()
            .map_err(|e| e.to_string())?
            .with_executor(crate::filter::FilteredExecutor(plan))
            .as_tenant()
            .with_process(Some(process))
            .with_detach(true)
            .build()
            .map_err(|e| e.to_string());
        let master = match (&console, &built) {
            (Some((listener, _)), Ok(_)) => Some(receive_master(listener)?),
            _ => None,
        };
        if let Some((_, path)) = console {
            let _ = std::fs::remove_file(path);
        }
        if built.is_err() {
            reap_strays(&self.tracked());
        }
        let pid = built?.as_raw();
        let pidfd = pidfd_open(pid)?;
        self.execs.insert(
            exec_id.to_string(),
            Exec {
                container: id.to_string(),
                pid,
                pidfd,
            },
        );
        Ok((pid, master))
    }

    /// A process's stdio: the three descriptors sent with the request, or with `tty` a
    /// console socket libcontainer's process sends its terminal's master side to; take it
    /// with [`receive_master`], then remove the socket's path. (Named by a counter: a
    /// socket's path must fit in 108 bytes, and container ids may not.)
    fn stdio(
        &self,
        builder: ContainerBuilder,
        tty: bool,
        fds: Vec<OwnedFd>,
        what: &str,
    ) -> Result<(ContainerBuilder, Option<Console>), String> {
        if tty {
            static CONSOLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = CONSOLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.root.join(format!("console-{n}"));
            let _ = std::fs::remove_file(&path);
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .map_err(|e| format!("console socket {}: {e}", path.display()))?;
            let builder = builder.with_console_socket(Some(&path));
            Ok((builder, Some((listener, path))))
        } else {
            let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
                .try_into()
                .map_err(|_| format!("{what} needs stdin, stdout and stderr descriptors"))?;
            let builder = builder
                .with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr);
            Ok((builder, None))
        }
    }

    fn create(
        &mut self,
        id: &str,
        bundle: &Path,
        tty: bool,
        fds: Vec<OwnedFd>,
        root: Option<OwnedFd>,
    ) -> Result<(i32, Option<OwnedFd>), String> {
        if self.containers.contains_key(id) {
            return Err(format!("container {id} exists already"));
        }
        let config = bundle.join("config.json");
        // Read whole and parsed from memory: `Spec::load` parses from a buffered reader,
        // several times slower (libcontainer reads it again that way for its build).
        let spec: oci_spec::runtime::Spec = std::fs::read(&config)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| format!("reading {}: {e}", config.display()))?;
        // Relative to the bundle, as libcontainer reads it.
        let rootfs = spec.root().as_ref().map(|r| bundle.join(r.path()));
        let prepared = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|n| {
                n.iter().any(|n| {
                    n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount
                        && n.path().as_deref() == Some(Path::new(crate::quirks::PREPARED_MOUNT_NS))
                })
            });
        // In the namespace prepared for the container, or else attached here for the
        // build only (a build copies every mount of this namespace, and libcgroups parses
        // them all).
        if prepared {
            self.prepare_mount_ns()?;
        }
        let mounted = (|| {
            let attached = match (root, &rootfs) {
                (Some(mount), Some(path)) => {
                    attach(&mount, path)?;
                    Some(path.clone())
                }
                _ => None,
            };
            let view = self.cgroup_view(&spec);
            if !prepared {
                self.detach.extend(attached);
            }
            let view = view?;
            // Only where the container's namespace is this one, to be dropped with it.
            match (&rootfs, prepared) {
                (Some(path), true) => crate::premount::make(&spec, path)?,
                _ if has_helper_mounts(&spec) => {
                    return Err(format!(
                        "{} needs the mount namespace at {}",
                        crate::premount::ANNOTATION,
                        crate::quirks::PREPARED_MOUNT_NS
                    ));
                }
                _ => {}
            }
            Ok(view)
        })();
        let ns = if prepared {
            Some(self.leave_mount_ns())
        } else {
            None
        };
        let ns = ns.transpose()?;
        let view = mounted?;
        if !prepared {
            self.detach.extend(view.clone());
        }
        let r = self.build(id, bundle, tty, fds, &spec);
        // The container's process holds its namespace now, or nothing does.
        drop(ns);
        // The cgroups made for the view, when no container came of them.
        if r.is_err()
            && view.is_some()
            && let (Some(hierarchies), Some(path)) = (
                &self.cgroup_v1,
                spec.linux()
                    .as_ref()
                    .and_then(|l| l.cgroups_path().as_ref()),
            )
        {
            let relative = path.strip_prefix("/").unwrap_or(path);
            for mount in hierarchies.managed_mounts() {
                let _ = std::fs::remove_dir(mount.join(relative));
            }
        }
        r
    }

    /// Moves this process into a new mount namespace, a copy of its own, for a container
    /// to join ([`crate::quirks::PREPARED_MOUNT_NS`]); [`Helper::leave_mount_ns`] comes back.
    fn prepare_mount_ns(&self) -> Result<(), String> {
        if self.own_mount_ns.is_none() {
            return Err("no mount namespace to come back to".into());
        }
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("a mount namespace for the container: {e}"))
    }

    /// Returns to this process's own mount namespace, keeping the one it was in open at
    /// [`crate::quirks::PREPARED_MOUNT_NS_FD`] for the container's process to join.
    fn leave_mount_ns(&self) -> Result<OwnedFd, String> {
        let own = self.own_mount_ns.as_ref().expect("checked when prepared");
        let prepared = std::fs::File::open("/proc/self/ns/mnt").map(OwnedFd::from);
        if let Err(e) = nix::sched::setns(own, nix::sched::CloneFlags::CLONE_NEWNS) {
            // Still in the container's namespace: nothing more can be built here.
            eprintln!("container-helper: back to its own mount namespace: {e}");
            std::process::exit(1);
        }
        let prepared = prepared.map_err(|e| format!("the container's mount namespace: {e}"))?;
        // SAFETY: dup3 onto a descriptor number this process keeps for this purpose.
        let fd = unsafe {
            libc::dup3(
                prepared.as_raw_fd(),
                crate::quirks::PREPARED_MOUNT_NS_FD,
                libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "the container's mount namespace at descriptor {}: {}",
                crate::quirks::PREPARED_MOUNT_NS_FD,
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: the descriptor dup3 made is this process's own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Assembles the container's `/sys/fs/cgroup` where its spec asks (see
    /// [`crate::cgroupview`]); returns where, to detach after the build.
    fn cgroup_view(&self, spec: &oci_spec::runtime::Spec) -> Result<Option<PathBuf>, String> {
        let Some(view) = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::cgroupview::ANNOTATION))
        else {
            return Ok(None);
        };
        let view = PathBuf::from(view);
        let Some(hierarchies) = &self.cgroup_v1 else {
            return Err(format!(
                "{}: the spec asks for a cgroup v1 view and this host has no cgroup v1 hierarchy",
                crate::cgroupview::ANNOTATION
            ));
        };
        let mount = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.source().as_deref() == Some(view.as_path()));
        let read_only = mount.is_some_and(|m| m.options().iter().flatten().any(|o| o == "ro"));
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .ok_or("the spec has a cgroup view and no linux.cgroupsPath")?;
        hierarchies.assemble(&view, &cgroups_path, read_only)?;
        Ok(Some(view))
    }

    fn build(
        &mut self,
        id: &str,
        bundle: &Path,
        tty: bool,
        fds: Vec<OwnedFd>,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(i32, Option<OwnedFd>), String> {
        let plan = crate::filter::Plan::from_spec(spec, &mut self.filters)?;
        let rootfs = spec.root().as_ref().map(|r| r.path().clone());
        let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&self.root)
            .map_err(|e| e.to_string())?;
        let (builder, console) = self.stdio(builder, tty, fds, "create")?;
        let built = builder
            .validate_id()
            .map_err(|e| e.to_string())?
            .with_executor(crate::filter::FilteredExecutor(plan.clone()))
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| e.to_string());
        let master = match (&console, &built) {
            (Some((listener, _)), Ok(_)) => Some(receive_master(listener)),
            _ => None,
        };
        if let Some((_, path)) = console {
            let _ = std::fs::remove_file(path);
        }
        let container = built?;
        let pid = container
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| "the container has no process".to_string())?;
        let pidfd = pidfd_open(pid)?;
        let oom_file = oom_counter_file(spec);
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let own_pids = spec.linux().as_ref().is_some_and(|l| {
            l.namespaces().iter().flatten().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none()
            })
        });
        self.containers.insert(
            id.to_string(),
            Running {
                container,
                pid,
                pidfd: Some(pidfd),
                oom_file,
                rootfs,
                plan,
                own_pids,
                cgroups_path,
            },
        );
        match master.transpose() {
            Ok(master) => Ok((pid, master)),
            Err(e) => {
                let _ = self.delete(id);
                Err(e)
            }
        }
    }

    fn kill(&mut self, id: &str, signal: i32, all: bool) -> Result<(), String> {
        if let Some(exec) = self.execs.get(id) {
            // An exec'd process (a timed-out probe): signalled through its pidfd, which
            // cannot reach another process that reused its pid.
            // SAFETY: pidfd_send_signal with a pidfd this helper owns and no siginfo.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    exec.pidfd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            return if r == 0 {
                Ok(())
            } else {
                Err(format!(
                    "signalling exec {id}: {}",
                    std::io::Error::last_os_error()
                ))
            };
        }
        let running = self
            .containers
            .get_mut(id)
            .ok_or_else(|| format!("no container {id}"))?;
        if running.pidfd.is_none() {
            // Exited and reaped already: nothing to signal.
            return Ok(());
        }
        let signal = libcontainer::signal::Signal::try_from(signal).map_err(|e| e.to_string())?;
        running
            .container
            .kill(signal, all)
            .map_err(|e| e.to_string())
    }

    /// Waits for the container's process, reports how it ended, and stops watching it.
    /// The pids of the processes this helper watches (containers' and execs' first ones).
    fn tracked(&self) -> std::collections::HashSet<i32> {
        self.containers
            .values()
            .filter(|r| r.pidfd.is_some())
            .map(|r| r.pid)
            .chain(self.execs.values().map(|e| e.pid))
            .collect()
    }

    fn reap(&mut self, id: &str) {
        if let Some(exec) = self.execs.remove(id) {
            let mut tracked = self.tracked();
            tracked.insert(exec.pid);
            let (code, signal) = wait_status(id, exec.pid, &exec.pidfd, &tracked);
            self.send(&Event::Exited {
                id: id.to_string(),
                code,
                signal,
                oom_killed: false,
            });
            return;
        }
        let Some(running) = self.containers.get_mut(id) else {
            return;
        };
        if running.pidfd.is_none() {
            return;
        }
        // Without a pid namespace of its own (hostPID) the container's other processes
        // outlive its first: they go with it, as containerd's shim ends them, or they would
        // keep its output open (and exec'd ones would never be reaped below).
        if !running.own_pids {
            let _ = running.container.kill(
                libcontainer::signal::Signal::try_from(9).expect("SIGKILL"),
                true,
            );
        }
        // The container's first process ends only once every process of its pid namespace
        // is reaped, and exec'd ones are this helper's children: they go first, or this
        // wait would never end.
        let execs: Vec<String> = self
            .execs
            .iter()
            .filter(|(_, e)| e.container == id)
            .map(|(exec_id, _)| exec_id.clone())
            .collect();
        for exec_id in execs {
            self.reap(&exec_id);
        }
        let Some(running) = self.containers.get_mut(id) else {
            return;
        };
        let Some(pidfd) = running.pidfd.take() else {
            return;
        };
        let pid = running.pid;
        let mut tracked = self.tracked();
        tracked.insert(pid);
        let (code, signal) = wait_status(id, pid, &pidfd, &tracked);
        let Some(running) = self.containers.get_mut(id) else {
            return;
        };
        let oom_killed = running.oom_file.as_deref().is_some_and(oom_killed);
        self.send(&Event::Exited {
            id: id.to_string(),
            code,
            signal,
            oom_killed,
        });
    }

    fn delete(&mut self, id: &str) -> Result<(), String> {
        let Some(running) = self.containers.get_mut(id) else {
            return Ok(());
        };
        if let Some(pidfd) = &running.pidfd {
            // Still running: killed, then reaped, so its exit is reported before it goes.
            let _ = running.container.kill(
                libcontainer::signal::Signal::try_from(9).expect("SIGKILL"),
                true,
            );
            // Its first process directly too: the kill above finds the processes through
            // the container's cgroups, which something else may have moved it out of.
            // SAFETY: pidfd_send_signal with a pidfd this helper owns and no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            self.reap(id);
        }
        let mut running = self.containers.remove(id).expect("checked above");
        match self.remove_reaped(&running) {
            Ok(true) => Ok(()),
            Ok(false) => running.container.delete(true).map_err(|e| e.to_string()),
            Err(e) => {
                // libcontainer's own delete retries and reports what is left.
                eprintln!("container-helper: removing {id}: {e}");
                running.container.delete(true).map_err(|e| e.to_string())
            }
        }
    }

    /// Removes a reaped container on cgroup v1 as libcontainer's `delete` does for one
    /// without hooks: its cgroup in every controller, then its state directory. Its
    /// `delete` builds a cgroup manager for that, which parses `/proc/self/mountinfo` and
    /// `/proc/self/cgroup` once per controller: a tenth of a container burst's CPU.
    /// False when the container is not one this can remove (cgroup v2, whose manager is
    /// cheap, or a spec without a plain cgroups path); libcontainer's `delete` then does.
    fn remove_reaped(&self, running: &Running) -> Result<bool, String> {
        let (Some(mounts), Some(path)) = (&self.cgroup_v1, &running.cgroups_path) else {
            return Ok(false);
        };
        let relative = path.strip_prefix("/").unwrap_or(path);
        let plain = relative.components().count() > 0
            && relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || running.pidfd.is_some() {
            return Ok(false);
        }
        for mount in mounts.managed_mounts() {
            remove_cgroup(&mount.join(relative))?;
        }
        match std::fs::remove_dir_all(&running.container.root) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(format!("{}: {e}", running.container.root.display())),
        }
    }

    /// The agent went away (it stopped, or crashed): every container goes, and so do their
    /// root filesystem mounts, which the agent would have removed and now cannot.
    fn shutdown(&mut self) {
        self.closing = true;
        // The roots are the agent's mounts: unmounted where it mounted them.
        if let Some(agent) = self.agent_mounts.take()
            && let Err(e) = nix::sched::setns(&agent, nix::sched::CloneFlags::CLONE_NEWNS)
        {
            eprintln!("container-helper: back in the agent's mount namespace: {e}");
        }
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        for id in ids {
            let rootfs = self.containers.get(&id).and_then(|r| r.rootfs.clone());
            if let Err(e) = self.delete(&id) {
                eprintln!("container-helper: removing {id}: {e}");
            }
            if let Some(rootfs) = rootfs {
                let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Moves this process into a mount namespace of its own, a copy of the agent's that
/// receives the agent's later mounts (the containers' roots, under a shared mount) but
/// sends none back, and unmounts there every mount at or under one of `hide` (the pod
/// networks' namespace pins: a thousand pods pin a thousand namespaces). Every container
/// build copies this process's mounts, and libcgroups reads them once per controller, so
/// a build costs the same however many pods the node runs. Returns the agent's mount
/// namespace, for the roots to be unmounted there when the agent is gone. Must run before
/// any thread starts (`unshare(CLONE_NEWNS)` needs an unshared filesystem context).
fn private_mounts(hide: &[PathBuf]) -> Result<Option<OwnedFd>, String> {
    if hide.is_empty() {
        return Ok(None);
    }
    let agent: OwnedFd = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(|e| format!("opening the agent's mount namespace: {e}"))?
        .into();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("a mount namespace of its own: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("making its mounts receive-only: {e}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading its mounts: {e}"))?;
    let mut hidden: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| hide.iter().any(|h| Path::new(mp).starts_with(h)))
        .collect();
    // Deepest first; a detached parent takes what is under it anyway.
    hidden.sort_by_key(|mp| std::cmp::Reverse(mp.len()));
    for mp in hidden {
        let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
    }
    Ok(Some(agent))
}

fn has_helper_mounts(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::premount::ANNOTATION))
}

/// Attaches the detached mount `mount` (from `open_tree(OPEN_TREE_CLONE)`) at `path`.
fn attach(mount: &OwnedFd, path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let target = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("root path {} has a NUL byte", path.display()))?;
    // SAFETY: move_mount with a descriptor this process owns, an empty source path and a
    // NUL-terminated target path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(format!(
            "attaching the root filesystem at {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A descriptor for process `pid`, a child of this process: it stays a zombie (so the
/// number cannot be reused) until this process waits for it.
fn pidfd_open(pid: i32) -> Result<OwnedFd, String> {
    // SAFETY: a plain syscall.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(format!(
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel returned a new descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// Reaps the process behind `pidfd`: its exit status (128 + signal when killed), and the
/// signal.
fn wait_status(
    id: &str,
    pid: i32,
    pidfd: &OwnedFd,
    tracked: &std::collections::HashSet<i32>,
) -> (i32, Option<i32>) {
    // A pid namespace's first process ends only once every process of the namespace is
    // reaped: strays of this helper in it are reaped while waiting.
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u8)) {
            Ok(n) if n > 0 => break,
            Err(e) if e != nix::errno::Errno::EINTR => break,
            _ => reap_strays(tracked),
        }
    }
    let status = loop {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, code)) => (code, None),
        Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
        Ok(other) => {
            eprintln!("container-helper: {id}: unexpected wait status {other:?}");
            (255, None)
        }
        Err(e) => {
            eprintln!("container-helper: {id}: wait for pid {pid}: {e}");
            (255, None)
        }
    }
}

/// Reaps the children of this helper that no container or exec of it tracks (`tracked`):
/// the processes libcontainer leaves behind when a build fails late (an exec of a program
/// the image lacks fails in its init, after that joined the container's pid namespace).
/// A zombie of them would keep the container's first process from ever ending.
fn reap_strays(tracked: &std::collections::HashSet<i32>) {
    let me = std::process::id();
    let Ok(children) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
        return;
    };
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if !tracked.contains(&pid) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// Takes the terminal master libcontainer's process sent over the console socket.
fn receive_master(listener: &std::os::unix::net::UnixListener) -> Result<OwnedFd, String> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("console socket: {e}"))?;
    for c in msg.cmsgs().map_err(|e| format!("console socket: {e}"))? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel installed this descriptor for this message; the others
            // (none are expected) are closed.
            for &extra in &fds[1..] {
                drop(unsafe { OwnedFd::from_raw_fd(extra) });
            }
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err("console socket: no terminal was sent".into())
}

/// Removes one v1 cgroup directory of a container whose processes have ended, killing
/// any left in it first (as libcgroups does); an absent one is not an error.
fn remove_cgroup(dir: &Path) -> Result<(), String> {
    let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(procs) => procs,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // A cgroup whose last process is still exiting is busy for a moment.
    let mut delay = std::time::Duration::from_millis(10);
    for attempt in 0..4 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == 3 => return Err(format!("{}: {e}", dir.display())),
            Err(_) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
        }
    }
    Ok(())
}

/// The file that counts OOM kills in the container's memory cgroup: cgroup v1's
/// `memory.oom_control`, or v2's `memory.events`.
fn oom_counter_file(spec: &oci_spec::runtime::Spec) -> Option<PathBuf> {
    let path = spec.linux().as_ref()?.cgroups_path().clone()?;
    let relative = path.strip_prefix("/").unwrap_or(&path).to_path_buf();
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if v1.is_dir() {
        Some(v1.join(relative).join("memory.oom_control"))
    } else {
        Some(
            Path::new("/sys/fs/cgroup")
                .join(relative)
                .join("memory.events"),
        )
    }
}

/// Whether the counter file shows an OOM kill (`oom_kill N`, N > 0).
fn oom_killed(file: &Path) -> bool {
    std::fs::read_to_string(file).is_ok_and(|text| {
        text.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    })
}
