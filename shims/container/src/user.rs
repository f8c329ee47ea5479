//! Who a container's process runs as.
//!
//! The image's `User` (`""`, `name`, `uid`, `uid:gid`, `name:group`) is resolved against the
//! image's own `/etc/passwd` and `/etc/group`, then the pod's securityContext overrides it.
//! The rootfs is untrusted: both files are opened with every path component resolved inside
//! the rootfs (`openat2` with `RESOLVE_IN_ROOT`), so a symlink to `/etc/shadow` names the
//! image's `/etc/shadow`, never the node's. Only regular files are read, and at most
//! [`MAX_DB_FILE`] bytes of them.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::sys::stat::Mode;

/// The largest `/etc/passwd` or `/etc/group` read from an image.
pub const MAX_DB_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "container's runAsUser breaks non-root policy (pod: \"{pod}\", container: {container})"
    )]
    RunAsUserIsRoot { pod: String, container: String },
    #[error(
        "container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: {container})"
    )]
    ImageRunsAsRoot { pod: String, container: String },
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod}\", container: {container})"
    )]
    NonNumericUser {
        user: String,
        pod: String,
        container: String,
    },
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("{field}: {value} is not a valid id")]
    InvalidId { field: String, value: i64 },
    #[error("image user {0:?}: a uid or gid above 4294967294")]
    InvalidImageId(String),
    #[error("reading {path} of the image: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("{0} of the image is not a regular file")]
    NotAFile(&'static str),
    #[error("{0} of the image is larger than {MAX_DB_FILE} bytes")]
    TooLarge(&'static str),
}

/// The securityContext fields that choose the user, as the pod gives them (the container's
/// value, else the pod's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserOverrides {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    /// Pod-level `supplementalGroups`.
    pub supplemental_groups: Vec<i64>,
    /// Pod-level `fsGroup`: also a supplementary group of every container.
    pub fs_group: Option<i64>,
}

/// The numeric identity the process runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, sorted, the primary gid included (as `id` shows them in a pod).
    pub additional_gids: Vec<u32>,
    /// `HOME` unless the container sets it: the user's directory in the image's
    /// `/etc/passwd`, else `/`, as runc sets it. (libcontainer would look it up again
    /// inside every container, through the C library's user database.)
    pub home: String,
}

/// One half of an image's `User`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    Numeric(u32),
    Name(String),
}

fn parse_id(part: &str, whole: &str) -> Result<Id, UserError> {
    if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
        // u32::MAX is (uid_t)-1, "no change" to the kernel.
        match part.parse::<u32>() {
            Ok(id) if id != u32::MAX => Ok(Id::Numeric(id)),
            _ => Err(UserError::InvalidImageId(whole.to_string())),
        }
    } else {
        Ok(Id::Name(part.to_string()))
    }
}

/// Splits an image's `User` into its user and optional group.
fn parse_image_user(user: &str) -> Result<(Option<Id>, Option<Id>), UserError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() {
        None
    } else {
        Some(parse_id(u, user)?)
    };
    let g = match g {
        Some(g) if !g.is_empty() => Some(parse_id(g, user)?),
        _ => None,
    };
    Ok((u, g))
}

fn checked_id(field: &str, value: i64) -> Result<u32, UserError> {
    // Kubernetes validates ids into 0..=2147483647; anything else can't be a real id.
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= i32::MAX as u32)
        .ok_or_else(|| UserError::InvalidId {
            field: field.to_string(),
            value,
        })
}

/// kubelet's `runAsNonRoot` check, before anything is resolved: it trusts only a numeric
/// `runAsUser` or a numeric image user, and an image without a user runs as root.
/// `pod` is kubelet's rendering of the pod (`name_namespace(uid)`).
pub fn verify_run_as_non_root(
    overrides: &UserOverrides,
    image_user: &str,
    pod: &str,
    container: &str,
) -> Result<(), UserError> {
    if overrides.run_as_non_root != Some(true) {
        return Ok(());
    }
    let ids = || (pod.to_string(), container.to_string());
    if let Some(uid) = overrides.run_as_user {
        if uid == 0 {
            let (pod, container) = ids();
            return Err(UserError::RunAsUserIsRoot { pod, container });
        }
        return Ok(());
    }
    // The image user's group part plays no role here.
    let user = image_user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        let (pod, container) = ids();
        return Err(UserError::ImageRunsAsRoot { pod, container });
    }
    match user.parse::<u64>() {
        Ok(0) => {
            let (pod, container) = ids();
            Err(UserError::ImageRunsAsRoot { pod, container })
        }
        Ok(_) => Ok(()),
        Err(_) => {
            let (pod, container) = ids();
            Err(UserError::NonNumericUser {
                user: user.to_string(),
                pod,
                container,
            })
        }
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            let _gecos = f.next();
            let home = f.next().unwrap_or_default();
            (!name.is_empty()).then(|| PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
                home: home.to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let gid = f.next()?.parse().ok()?;
            let members = f
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            (!name.is_empty()).then(|| GroupEntry {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// Reads `shown` (`/etc/passwd`) of the rootfs, resolved inside it. `None` if the image
/// has no such file.
fn read_in_root(rootfs: &Path, shown: &'static str) -> Result<Option<String>, UserError> {
    let path = shown.trim_start_matches('/');
    let read_err = |source: std::io::Error| UserError::Read {
        path: shown,
        source,
    };
    let root: OwnedFd = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| read_err(e.into()))?;
    // O_NONBLOCK: a FIFO planted as /etc/passwd must not hang the agent on open.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd =
        match crate::retry_in_root(|| openat2(root.as_fd(), path, how), |e| *e == Errno::EAGAIN) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(read_err(e.into())),
        };
    let file = File::from(fd);
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(UserError::NotAFile(shown));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DB_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_DB_FILE {
        return Err(UserError::TooLarge(shown));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Resolves the process's identity: the image's `User` against the rootfs's `/etc/passwd`
/// and `/etc/group`, then `runAsUser`/`runAsGroup` over it, plus the primary gid, the
/// groups `/etc/group` lists the user in, `fsGroup` and `supplementalGroups` as
/// supplementary groups. Without a group anywhere, the gid is the user's passwd entry's, or
/// 0. An image without the files runs numeric users fine; one whose files are not regular
/// files or are too large fails, whatever the user.
pub fn resolve_user(
    rootfs: &Path,
    image_user: &str,
    overrides: &UserOverrides,
) -> Result<ResolvedUser, UserError> {
    let run_as_user = overrides
        .run_as_user
        .map(|v| checked_id("securityContext.runAsUser", v))
        .transpose()?;
    let run_as_group = overrides
        .run_as_group
        .map(|v| checked_id("securityContext.runAsGroup", v))
        .transpose()?;
    let (image_uid, image_gid) = parse_image_user(image_user)?;
    // runAsUser replaces the image's user, group part included, as with containerd.
    let (user, group) = match run_as_user {
        Some(uid) => (Some(Id::Numeric(uid)), None),
        None => (image_uid, image_gid),
    };

    let passwd = parse_passwd(&read_in_root(rootfs, "/etc/passwd")?.unwrap_or_default());
    let (uid, entry) = match user {
        None => (0, passwd.iter().find(|e| e.uid == 0)),
        Some(Id::Numeric(uid)) => (uid, passwd.iter().find(|e| e.uid == uid)),
        Some(Id::Name(name)) => {
            let entry = passwd
                .iter()
                .find(|e| e.name == name)
                .ok_or(UserError::UnknownUser(name))?;
            (entry.uid, Some(entry))
        }
    };
    let groups = parse_group(&read_in_root(rootfs, "/etc/group")?.unwrap_or_default());
    let gid = match (run_as_group, group) {
        (Some(gid), _) => gid,
        (None, Some(Id::Numeric(gid))) => gid,
        (None, Some(Id::Name(name))) => {
            groups
                .iter()
                .find(|g| g.name == name)
                .ok_or(UserError::UnknownGroup(name))?
                .gid
        }
        (None, None) => entry.map_or(0, |e| e.gid),
    };

    let mut additional = vec![gid];
    if let Some(entry) = entry {
        additional.extend(
            groups
                .iter()
                .filter(|g| g.members.contains(&entry.name))
                .map(|g| g.gid),
        );
    }
    if let Some(fs_group) = overrides.fs_group {
        additional.push(checked_id("securityContext.fsGroup", fs_group)?);
    }
    for (i, g) in overrides.supplemental_groups.iter().enumerate() {
        additional.push(checked_id(
            &format!("securityContext.supplementalGroups[{i}]"),
            *g,
        )?);
    }
    additional.sort_unstable();
    additional.dedup();
    let home = entry
        .map(|e| e.home.as_str())
        .filter(|h| h.starts_with('/') && !h.contains('\0'))
        .unwrap_or("/")
        .to_string();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}
