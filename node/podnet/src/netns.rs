//! Network namespaces kept alive by bind mounts, the way `ip netns` keeps them, so that a
//! namespace outlives the thread that made it and survives an agent restart.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};

use crate::Error;

/// A namespace just made: the file that pins it, and a route netlink socket created inside
/// it (a socket keeps the namespace it was created in, so it configures the pod's side
/// from the tokio side).
pub(crate) struct NewNetns {
    pub ns: File,
    pub netlink: OwnedFd,
}

/// Makes a network namespace pinned at `path`. Runs on a thread of its own: `unshare` moves
/// the calling thread into the new namespace, and that thread ends right after.
pub(crate) async fn create(path: PathBuf) -> Result<NewNetns, Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("podnet-netns".into())
        .spawn(move || {
            let _ = tx.send(create_here(&path));
        })
        .map_err(|e| Error::io("spawn netns thread", e))?;
    rx.await
        .map_err(|_| Error::io("netns thread", io::Error::other("ended without answer")))?
}

fn create_here(path: &Path) -> Result<NewNetns, Error> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let made = (|| {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::io("unshare net", e.into()))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::io(format!("bind mount netns on {}", path.display()), e.into()))?;
        let ns = File::open(path).map_err(|e| Error::io("open netns", e))?;
        Ok(NewNetns {
            ns,
            netlink: netlink_socket()?,
        })
    })();
    if made.is_err() {
        remove(path);
    }
    made
}

/// A netlink socket made inside the namespace pinned at `path`.
pub(crate) fn netlink_socket_in(path: &Path) -> Result<OwnedFd, Error> {
    run_in(path, netlink_socket)?
}

/// A netlink socket in the calling thread's namespace.
fn netlink_socket() -> Result<OwnedFd, Error> {
    let socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("netlink socket in netns", e))?;
    // SAFETY: into_raw_fd hands over the socket's only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
}

/// Unmounts and deletes a pinned namespace; what is already gone is not an error. The
/// kernel frees the namespace (and the veth end inside it) once nothing else holds it.
pub(crate) fn remove(path: &Path) {
    // MNT_DETACH: a namespace file that some process still has open must not block removal.
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Whether `path` is a mounted namespace file (and not the empty file left under it).
pub(crate) fn is_pinned(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => fstatfs(f.as_fd())
            .map(|s| s.filesystem_type() == NSFS_MAGIC)
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Runs `f` on the calling thread moved into the namespace pinned at `path` for the
/// call, and back to its own afterwards, also when `f` panics. (A thread made per call
/// cost tens of microseconds and, in a process whose threads run on every CPU, a TLB
/// flush interrupt to each for its stacks: a twentieth of a Wasm burst.) `f` must not
/// block for long or start threads (they would stay in the pod's namespace).
pub(crate) fn run_in<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, Error> {
    let ns = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let own = File::open("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("open /proc/thread-self/ns/net", e))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io("setns into pod netns", e.into()))?;
    drop(ns);
    let _back = Back(own);
    Ok(f())
}

/// Returns the calling thread to the namespace it came from when dropped, also while
/// unwinding.
struct Back(File);

impl Drop for Back {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A thread of the agent left in a pod's namespace would make the agent's own
            // connections there: nothing safe is left to do.
            eprintln!("skiff: cannot return to the thread's own network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Whether the calling thread's network namespace holds no socket that has an address in
/// it: no TCP socket listening or connected (or closing, or in TIME_WAIT), no bound UDP
/// or raw socket, for IPv4 or IPv6.
/// Call it from inside the namespace ([`run_in`]): `/proc/thread-self/net` shows the
/// thread's own namespace. Reads the namespace's socket counters (`sockstat`), which cost
/// the same however many sockets the host has, unlike the socket tables (`/proc/net/tcp`
/// walks the host's whole connection hash).
pub(crate) fn holds_no_sockets() -> io::Result<bool> {
    for table in ["sockstat", "sockstat6"] {
        let path = format!("/proc/thread-self/net/{table}");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // IPv6 disabled: no such table, no such sockets.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !sockstat_is_empty(&text) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a `sockstat` text counts no socket of its namespace. Lines are a label, then
/// name-value pairs: `sockets: used N`, `TCP: inuse N orphan N tw N alloc N mem N`,
/// `UDP: inuse N mem N`, ... Of those, `inuse` (sockets with an address) and `tw` count the
/// namespace's own; `orphan`, `alloc` and the memory figures are the host's. `used` counts
/// socket objects, which the kernel frees after an RCU grace period (seconds, with lazy
/// RCU): a netlink socket closed a moment ago still counts there, so it is not read.
pub(crate) fn sockstat_is_empty(text: &str) -> bool {
    text.lines().all(|line| {
        let mut words = line.split_whitespace().skip(1);
        std::iter::from_fn(|| Some((words.next()?, words.next()?)))
            .filter(|(name, _)| matches!(*name, "inuse" | "tw"))
            .all(|(_, value)| value == "0")
    })
}

/// Makes `dir` a mount point of its own with shared propagation, as `ip netns` does for
/// /run/netns: an unmount there then also reaches the copies that mount namespaces made
/// later (a container started while the pod lived) took, which would otherwise pin the
/// network namespace after the pod is gone.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), Error> {
    if !is_mount_point(dir)? {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| Error::io(format!("bind mount {} on itself", dir.display()), e.into()))?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| Error::io(format!("make {} shared", dir.display()), e.into()))?;
    Ok(())
}

/// Undoes `prepare_dir`.
pub(crate) fn release_dir(dir: &Path) {
    if is_mount_point(dir).unwrap_or(false) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
}

fn is_mount_point(dir: &Path) -> Result<bool, Error> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("resolve {}", dir.display()), e))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read mountinfo", e))?;
    let wanted = canonical.to_string_lossy();
    Ok(mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mount_path(mp) == wanted))
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
pub(crate) fn unescape_mount_path(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_counts_the_namespaces_own_sockets() {
        let empty = "sockets: used 0\nTCP: inuse 0 orphan 3 tw 0 alloc 12 mem 308\n\
                     UDP: inuse 0 mem 0\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n";
        assert!(sockstat_is_empty(empty));
        assert!(sockstat_is_empty(
            "TCP6: inuse 0\nUDP6: inuse 0\nRAW6: inuse 0\n"
        ));
        assert!(sockstat_is_empty(&empty.replace("used 0", "used 1")));
        assert!(!sockstat_is_empty(&empty.replace("tw 0", "tw 2")));
        assert!(!sockstat_is_empty(
            &empty.replace("UDP: inuse 0", "UDP: inuse 1")
        ));
        assert!(!sockstat_is_empty("TCP6: inuse 1\nUDP6: inuse 0\n"));
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape_mount_path(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
