//! What the Linux containers of one pod share besides its network: an IPC namespace (System
//! V IPC, POSIX message queues) and a `/dev/shm`, as the pause container holds them for the
//! kubelet. Made with the pod's first container, removed with its last; a pod whose
//! containers restart one at a time gets a fresh one each time, as nothing outlives the
//! containers that used it.
//!
//! No mount per pod: every mount in the agent's namespace makes each container build
//! slower (a new mount namespace copies them all). The namespace is held by a descriptor
//! and named `/proc/<agent>/fd/<n>` in the spec; the `/dev/shm`s are directories of one
//! tmpfs for the node, whose pages are charged to the containers that write them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};

/// A pod's shared IPC namespace (a path that opens it) and `/dev/shm` (a directory).
#[derive(Debug, Clone)]
pub struct IpcPaths {
    pub ns: PathBuf,
    pub shm: PathBuf,
}

struct Pod {
    users: usize,
    ns: OwnedFd,
}

/// The pods' shared IPC, by pod uid, with the number of containers using each.
pub struct PodIpc {
    root: PathBuf,
    pods: Mutex<HashMap<String, Pod>>,
}

impl PodIpc {
    /// Keeps the `/dev/shm`s in a tmpfs mounted at `root`; whatever an earlier run of the
    /// node left there goes.
    pub fn new(root: PathBuf) -> io::Result<PodIpc> {
        // Not mounted is fine.
        let _ = nix::mount::umount2(&root, MntFlags::MNT_DETACH);
        match std::fs::remove_dir_all(&root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&root)?;
        nix::mount::mount(
            Some("skiff-shm"),
            &root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0711"),
        )
        .map_err(|e| io::Error::other(format!("mounting a tmpfs at {}: {e}", root.display())))?;
        Ok(PodIpc {
            root,
            pods: Mutex::default(),
        })
    }

    /// The pod's shared IPC, made if this is its first container.
    pub fn acquire(&self, pod_uid: &str) -> io::Result<IpcPaths> {
        if pod_uid.is_empty() || pod_uid.contains('/') || pod_uid.starts_with('.') {
            return Err(io::Error::other(format!("invalid pod uid {pod_uid:?}")));
        }
        let shm = self.root.join(pod_uid);
        let mut pods = self.pods.lock().expect("ipc lock");
        let pod = match pods.get_mut(pod_uid) {
            Some(pod) => {
                pod.users += 1;
                pod
            }
            None => {
                let ns = new_ipc_namespace()?;
                std::fs::create_dir(&shm)?;
                std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o1777))?;
                pods.entry(pod_uid.to_string())
                    .or_insert(Pod { users: 1, ns })
            }
        };
        Ok(IpcPaths {
            ns: PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                pod.ns.as_raw_fd()
            )),
            shm,
        })
    }

    /// One container of the pod is gone; with the last, its IPC goes.
    pub fn release(&self, pod_uid: &str) {
        let mut pods = self.pods.lock().expect("ipc lock");
        let Some(pod) = pods.get_mut(pod_uid) else {
            return;
        };
        pod.users -= 1;
        if pod.users == 0 {
            pods.remove(pod_uid);
            remove_dir(&self.root.join(pod_uid));
        }
    }
}

impl Drop for PodIpc {
    /// The shim is going: so does every pod's IPC still here.
    fn drop(&mut self) {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let _ = nix::mount::umount2(&self.root, MntFlags::MNT_DETACH);
        remove_dir(&self.root);
    }
}

/// A new IPC namespace, made on a thread of its own (which it then belongs to) and held by
/// a descriptor once the thread is gone.
fn new_ipc_namespace() -> io::Result<OwnedFd> {
    std::thread::spawn(|| -> io::Result<OwnedFd> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
            .map_err(|e| io::Error::other(format!("a new IPC namespace: {e}")))?;
        Ok(std::fs::File::open("/proc/thread-self/ns/ipc")?.into())
    })
    .join()
    .map_err(|_| io::Error::other("the IPC namespace thread panicked"))?
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}
