//! Network namespaces: a socket belongs to the namespace of the thread that created it, so a
//! pod's listeners are made on a thread that has joined the pod's namespace, and a command
//! pod runs on such a thread for its whole life (its wasi:sockets then live in the pod).

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// Moves the calling thread into the network namespace at `path`. Only for threads Skiff
/// made for that purpose: the thread never goes back.
pub fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open netns {}: {e}", path.display())))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("setns {}: {e}", path.display())))
}

/// A nonblocking TCP listener on `addr`, inside `netns` when given.
pub fn bind_tcp(netns: Option<&Path>, addr: SocketAddr) -> io::Result<TcpListener> {
    let bind = move || {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    match netns {
        None => bind(),
        Some(path) => std::thread::scope(|s| {
            s.spawn(|| {
                enter(path)?;
                bind()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns bind thread panicked")))
        }),
    }
}
