//! What the agent and the helper say to each other: one JSON message per `SOCK_SEQPACKET`
//! packet, with file descriptors (a container's stdio) passed alongside by `SCM_RIGHTS`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// Largest packet either side sends or accepts.
pub const MAX_PACKET: usize = 64 * 1024;
/// Most descriptors one packet carries.
pub const MAX_FDS: usize = 3;

/// From the agent to the helper. Every request is answered by one [`Event::Reply`] with
/// the same `seq`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Builds the container from `<bundle>/config.json`, stopped before its process runs.
    /// Without a terminal it carries three descriptors: stdin, stdout, stderr; with one
    /// (`process.terminal` in the spec), the reply carries the terminal's master side.
    Create {
        seq: u64,
        id: String,
        bundle: PathBuf,
        #[serde(default)]
        tty: bool,
        /// The last descriptor sent is a detached mount of the root filesystem, to be
        /// attached at the spec's `root.path` in the helper's mount namespace for the build
        /// only.
        #[serde(default)]
        root_mount: bool,
    },
    /// Lets a created container's process run.
    Start { seq: u64, id: String },
    /// Sends `signal` to the container's process (`all`: to every process in it), or to
    /// the exec'd process `id` names.
    Kill {
        seq: u64,
        id: String,
        signal: i32,
        all: bool,
    },
    /// Removes the container: its processes are killed, its cgroup and state deleted.
    Delete { seq: u64, id: String },
    /// Runs another process in container `id` (`kubectl exec`), as `process` (an OCI
    /// `process` object in a file) describes it; its exit is reported as `exec_id`. Without
    /// a terminal it carries stdin, stdout and stderr; with one, the reply carries the
    /// terminal's master side.
    Exec {
        seq: u64,
        id: String,
        exec_id: String,
        process: PathBuf,
        tty: bool,
    },
}

/// From the helper to the agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Reply {
        seq: u64,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        pid: Option<i32>,
    },
    /// A container's process ended (reaped by the helper).
    Exited {
        id: String,
        /// The exit status, or 128 + the signal that ended it.
        code: i32,
        signal: Option<i32>,
        /// The kernel's OOM killer ended a process of the container.
        oom_killed: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("helper socket: {0}")]
    Socket(#[from] nix::Error),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the other side closed the socket")]
    Closed,
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// Sends one message with `fds` attached.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> Result<(), ProtoError> {
    let bytes = serde_json::to_vec(msg)?;
    if bytes.len() > MAX_PACKET {
        return Err(ProtoError::TooLarge(bytes.len()));
    }
    let iov = [IoSlice::new(&bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receives one message and the descriptors that came with it. `Err(Closed)` at EOF;
/// `Err(Socket(EAGAIN))` on a non-blocking socket with nothing to read.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(T, Vec<OwnedFd>), ProtoError> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds, truncated) = {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in this process for
                // this message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (
            msg.bytes,
            fds,
            msg.flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
        )
    };
    if len == 0 && fds.is_empty() {
        return Err(ProtoError::Closed);
    }
    if truncated {
        return Err(ProtoError::TooLarge(len));
    }
    Ok((serde_json::from_slice(&buf[..len])?, fds))
}
