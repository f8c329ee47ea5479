//! The agent's side of the container helper: starts it, sends it requests, and routes its
//! replies and exit reports to the tasks waiting for them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

use crate::proto::{self, Event, MAX_PACKET, ProtoError, Request};

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit status, or 128 + the signal that ended it.
    pub code: i32,
    pub signal: Option<i32>,
    /// The kernel's OOM killer struck in its cgroup.
    pub oom_killed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("start the container helper {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
    #[error("container helper: {0}")]
    Proto(#[from] ProtoError),
    #[error("the container helper is gone")]
    Gone,
    /// libcontainer's own error, as the helper reported it.
    #[error("{0}")]
    Runtime(String),
}

type Reply = Result<(Option<i32>, Vec<OwnedFd>), String>;
type Pending = Mutex<HashMap<u64, oneshot::Sender<Reply>>>;

struct Inner {
    sock: AsyncFd<OwnedFd>,
    seq: AtomicU64,
    pending: Pending,
    exits: Mutex<HashMap<String, watch::Sender<Option<Exit>>>>,
    gone: AtomicBool,
}

/// A running container helper. Cheap to clone; when the last clone goes, the helper's
/// socket closes and it removes every container it made, then exits.
#[derive(Clone)]
pub struct Helper {
    inner: Arc<Inner>,
    _closer: Arc<Closer>,
}

/// Shuts the socket down when the last handle goes: the helper then cleans up and exits,
/// and the reader task (which holds `Inner`) sees the end too.
struct Closer(Arc<Inner>);

impl Drop for Closer {
    fn drop(&mut self) {
        let fd = self.0.sock.get_ref().as_raw_fd();
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
}

impl Helper {
    /// Starts `program args... --fd 3 --root <root>` (`skiff container-helper`, or this
    /// crate's `skiff-container-helper`), which keeps libcontainer's state under `root`.
    pub fn spawn(program: &Path, args: &[&str], root: &Path) -> Result<Helper, HelperError> {
        let spawn_err = |source| HelperError::Spawn {
            program: program.to_owned(),
            source,
        };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| spawn_err(e.into()))?;
        // The helper's end is blocking: it waits in poll and handles one thing at a time.
        set_blocking(theirs.as_raw_fd()).map_err(spawn_err)?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .args(["--fd", "3", "--root"])
            .arg(root)
            .stdin(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_raw == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_raw, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The helper outlives this handle only until the socket closes; tokio reaps it.
        let _child = cmd.spawn().map_err(spawn_err)?;
        drop(theirs);
        let inner = Arc::new(Inner {
            // SAFETY: the AsyncFd owns `ours`, which stays open exactly as long as it does.
            sock: unsafe { AsyncFd::register(ours) }
                .map_err(|e| spawn_err(io::Error::other(e.to_string())))?,
            seq: AtomicU64::new(1),
            pending: Mutex::default(),
            exits: Mutex::default(),
            gone: AtomicBool::new(false),
        });
        tokio::spawn(read_events(inner.clone()));
        Ok(Helper {
            _closer: Arc::new(Closer(inner.clone())),
            inner,
        })
    }

    async fn request(
        &self,
        make: impl FnOnce(u64) -> Request,
        fds: &[RawFd],
    ) -> Result<Option<i32>, HelperError> {
        self.request_fds(make, fds).await.map(|(pid, _)| pid)
    }

    /// A request whose reply may carry descriptors.
    async fn request_fds(
        &self,
        make: impl FnOnce(u64) -> Request,
        fds: &[RawFd],
    ) -> Result<(Option<i32>, Vec<OwnedFd>), HelperError> {
        if self.inner.gone.load(Ordering::Acquire) {
            return Err(HelperError::Gone);
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .insert(seq, tx);
        let request = make(seq);
        let sent = self
            .inner
            .sock
            .async_io(Interest::WRITABLE, |fd| {
                proto::send(fd.as_fd(), &request, fds).map_err(would_block)
            })
            .await;
        if let Err(e) = sent {
            self.inner
                .pending
                .lock()
                .expect("pending lock")
                .remove(&seq);
            return Err(HelperError::Proto(ProtoError::Socket(
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )));
        }
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(HelperError::Runtime(e)),
            Err(_) => Err(HelperError::Gone),
        }
    }

    /// Builds container `id` from `<bundle>/config.json` with the given stdio, stopped
    /// before its process runs. Returns the process id.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<i32, HelperError> {
        self.create_with(id, bundle, Some([stdin, stdout, stderr]), None)
            .await
            .map(|(pid, _)| pid)
    }

    /// As [`Helper::create`] (with `stdio`) or [`Helper::create_tty`] (without), for a
    /// helper in a mount namespace of its own: `root` is a detached mount of the root
    /// filesystem (`open_tree(OPEN_TREE_CLONE)`), which the helper attaches at the spec's
    /// `root.path` for the build and detaches right after, so that its namespace holds no
    /// running container's root.
    pub async fn create_rooted(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Option<[OwnedFd; 3]>,
        root: OwnedFd,
    ) -> Result<(i32, Option<OwnedFd>), HelperError> {
        let tty = stdio.is_none();
        match self.create_with(id, bundle, stdio, Some(root)).await? {
            (_, None) if tty => {
                let _ = self.delete(id).await;
                Err(HelperError::Runtime(
                    "create returned no terminal for a process that asked for one".into(),
                ))
            }
            created => Ok(created),
        }
    }

    /// As [`Helper::create`], for a spec whose process runs on a terminal
    /// (`process.terminal`): returns the terminal's master side with the process id.
    pub async fn create_tty(&self, id: &str, bundle: &Path) -> Result<(i32, OwnedFd), HelperError> {
        match self.create_with(id, bundle, None, None).await? {
            (pid, Some(master)) => Ok((pid, master)),
            (_, None) => {
                let _ = self.delete(id).await;
                Err(HelperError::Runtime(
                    "create returned no terminal for a process that asked for one".into(),
                ))
            }
        }
    }

    async fn create_with(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Option<[OwnedFd; 3]>,
        root: Option<OwnedFd>,
    ) -> Result<(i32, Option<OwnedFd>), HelperError> {
        // Watching starts before the process can exist, so no exit is missed.
        let (tx, _) = watch::channel(None);
        self.inner
            .exits
            .lock()
            .expect("exits lock")
            .insert(id.to_string(), tx);
        let raw: Vec<RawFd> = stdio
            .iter()
            .flatten()
            .chain(root.iter())
            .map(|f| f.as_raw_fd())
            .collect();
        let tty = stdio.is_none();
        let root_mount = root.is_some();
        let result = self
            .request_fds(
                |seq| Request::Create {
                    seq,
                    id: id.to_string(),
                    bundle: bundle.to_owned(),
                    tty,
                    root_mount,
                },
                &raw,
            )
            .await;
        // The helper has its own copies now (or failed): ours close here.
        drop(stdio);
        drop(root);
        match result {
            Ok((Some(pid), mut fds)) => Ok((pid, fds.pop())),
            Ok((None, _)) => Err(HelperError::Runtime("create returned no process id".into())),
            Err(e) => {
                self.inner.exits.lock().expect("exits lock").remove(id);
                Err(e)
            }
        }
    }

    /// Lets the created container's process run.
    pub async fn start(&self, id: &str) -> Result<(), HelperError> {
        self.request(
            |seq| Request::Start {
                seq,
                id: id.to_string(),
            },
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Sends `signal` to the container's process, or with `all` to every process in it;
    /// `id` may also name an exec'd process.
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), HelperError> {
        self.request(
            |seq| Request::Kill {
                seq,
                id: id.to_string(),
                signal,
                all,
            },
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Removes the container (killing what still runs in it), its cgroup and state.
    pub async fn delete(&self, id: &str) -> Result<(), HelperError> {
        let r = self
            .request(
                |seq| Request::Delete {
                    seq,
                    id: id.to_string(),
                },
                &[],
            )
            .await
            .map(|_| ());
        self.inner.exits.lock().expect("exits lock").remove(id);
        r
    }

    /// Runs the process `process` (an OCI `process` object in a file) in running container
    /// `id`; [`Helper::wait`] on `exec_id` reports its exit, after which [`Helper::forget`]
    /// drops the record. `stdio` (stdin, stdout, stderr) without a terminal; with `tty`,
    /// the terminal's master side is returned.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &Path,
        tty: bool,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<(i32, Option<OwnedFd>), HelperError> {
        let (tx, _) = watch::channel(None);
        self.inner
            .exits
            .lock()
            .expect("exits lock")
            .insert(exec_id.to_string(), tx);
        let raw: Vec<RawFd> = stdio.iter().flatten().map(|f| f.as_raw_fd()).collect();
        let result = self
            .request_fds(
                |seq| Request::Exec {
                    seq,
                    id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    process: process.to_owned(),
                    tty,
                },
                &raw,
            )
            .await;
        drop(stdio);
        match result {
            Ok((Some(pid), mut fds)) => Ok((pid, fds.pop())),
            Ok((None, _)) => {
                self.forget(exec_id);
                Err(HelperError::Runtime("exec returned no process id".into()))
            }
            Err(e) => {
                self.forget(exec_id);
                Err(e)
            }
        }
    }

    /// Stops tracking the exit of an exec'd process.
    pub fn forget(&self, exec_id: &str) {
        self.inner.exits.lock().expect("exits lock").remove(exec_id);
    }

    /// Resolves when the container's process has ended (at once if it has); `None` if the
    /// container is unknown or the helper went away before reporting it.
    pub async fn wait(&self, id: &str) -> Option<Exit> {
        let mut rx = self
            .inner
            .exits
            .lock()
            .expect("exits lock")
            .get(id)?
            .subscribe();
        let exit = rx.wait_for(Option::is_some).await.ok()?;
        *exit
    }
}

fn would_block(e: ProtoError) -> io::Error {
    match e {
        ProtoError::Socket(nix::errno::Errno::EAGAIN) => io::ErrorKind::WouldBlock.into(),
        ProtoError::Socket(errno) => io::Error::from_raw_os_error(errno as i32),
        other => io::Error::other(other.to_string()),
    }
}

fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Routes the helper's messages until it goes away (or every handle does).
async fn read_events(inner: Arc<Inner>) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let received = match inner.sock.readable().await {
            Ok(mut guard) => match guard.try_io(|fd| {
                proto::recv::<Event>(fd.get_ref().as_fd(), &mut buf).map_err(would_block)
            }) {
                Ok(r) => r,
                Err(_would_block) => continue,
            },
            Err(e) => Err(e),
        };
        match received {
            Ok((event, fds)) => dispatch(&inner, event, fds),
            Err(_) => {
                inner.gone.store(true, Ordering::Release);
                // Pending requests fail (their senders drop); waiters see no exit.
                inner.pending.lock().expect("pending lock").clear();
                inner.exits.lock().expect("exits lock").clear();
                return;
            }
        }
    }
}

fn dispatch(inner: &Inner, event: Event, fds: Vec<OwnedFd>) {
    match event {
        Event::Reply { seq, error, pid } => {
            if let Some(tx) = inner.pending.lock().expect("pending lock").remove(&seq) {
                let _ = tx.send(match error {
                    Some(e) => Err(e),
                    None => Ok((pid, fds)),
                });
            }
        }
        Event::Exited {
            id,
            code,
            signal,
            oom_killed,
        } => {
            if let Some(tx) = inner.exits.lock().expect("exits lock").get(&id) {
                tx.send_replace(Some(Exit {
                    code,
                    signal,
                    oom_killed,
                }));
            }
        }
    }
}
