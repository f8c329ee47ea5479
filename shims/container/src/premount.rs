//! Mounts the helper makes before the build, in the mount namespace it prepares for the
//! container (see [`crate::quirks::PREPARED_MOUNT_NS`]).
//!
//! libcontainer 0.7 makes every spec mount in the container's init through pathrs: per
//! mount it opens the root again, walks and re-checks each directory of the destination
//! through a private procfs handle (`mkdir_all` even when all exist), reads the mount
//! table once, and mounts with five new-API calls. That was a tenth of a short container
//! pod's CPU. Binds and the `/dev` filesystems (`tmpfs`, `devpts`) depend on no namespace
//! of the container's, so the helper makes them itself, each with one `openat2`
//! resolution of the destination inside the root and one to three mount calls; the
//! container's recursive bind of its root takes them along. What depends on the
//! container's namespaces (`proc`: its pid namespace; `sysfs`: its network namespace;
//! `mqueue`: its IPC namespace) and whatever is mounted under one of those stays with
//! libcontainer, so every mount still lands where the spec's order puts it.
//!
//! The destination is resolved as libcontainer resolves it: symlinks inside the image are
//! followed as if the root were `/` (`RESOLVE_IN_ROOT`), so a hostile image cannot send a
//! mount outside its root; a missing destination is made the same way (directories
//! 0755, a file 0644 for a file's bind).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use libcontainer::rootfs::utils::parse_mount;
use nix::libc;
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::SpecError;

/// The mounts the helper makes, as a JSON array of spec mounts, in the spec's order.
pub const ANNOTATION: &str = "dev.skiff.helper-mounts";

/// Whether `m` is a bind mount, as libcontainer tells (its type does not matter).
fn is_bind(m: &Mount) -> bool {
    m.options()
        .iter()
        .flatten()
        .any(|o| o == "bind" || o == "rbind")
}

/// Mounts that belong to no namespace of the container's.
fn helper_can_make(m: &Mount) -> bool {
    is_bind(m) || matches!(m.typ().as_deref(), Some("tmpfs" | "devpts"))
}

/// Moves the mounts the helper can make out of `spec.mounts` into [`ANNOTATION`]: those
/// that [`helper_can_make`] and that lie under no mount left to libcontainer (which would
/// hide them, as it is made after). Not for specs with a user namespace (a `devpts` or
/// `tmpfs` belongs to the mounter's) or an SELinux mount label (libcontainer adds it to
/// each mount).
pub fn for_libcontainer(spec: &mut Spec) -> Result<(), SpecError> {
    let linux = spec.linux().as_ref();
    let user_ns = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    if user_ns || linux.is_some_and(|l| l.mount_label().is_some()) {
        return Ok(());
    }
    let Some(mounts) = spec.mounts_mut() else {
        return Ok(());
    };
    let left: Vec<&Path> = mounts
        .iter()
        .filter(|m| !helper_can_make(m))
        .map(|m| m.destination().as_path())
        .collect();
    let (helper, kept): (Vec<Mount>, Vec<Mount>) = mounts
        .iter()
        .cloned()
        .partition(|m| helper_can_make(m) && !left.iter().any(|l| m.destination().starts_with(l)));
    if helper.is_empty() {
        return Ok(());
    }
    *mounts = kept;
    let json = serde_json::to_string(&helper).map_err(oci_spec::OciSpecError::from)?;
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(ANNOTATION.to_string(), json);
    spec.set_annotations(Some(annotations));
    Ok(())
}

/// Makes the mounts `spec` names in [`ANNOTATION`] in the root at `rootfs`, in order.
/// Called in the mount namespace the container will join, with its root attached.
pub fn make(spec: &Spec, rootfs: &Path) -> Result<(), String> {
    let Some(json) = spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) else {
        return Ok(());
    };
    let mounts: Vec<Mount> =
        serde_json::from_str(json).map_err(|e| format!("{ANNOTATION}: {e}"))?;
    let root = open_path(libc::AT_FDCWD, rootfs, libc::O_DIRECTORY)
        .map_err(|e| format!("opening the root {}: {e}", rootfs.display()))?;
    for m in &mounts {
        make_one(&root, m).map_err(|e| {
            format!(
                "mounting {} at {}: {e}",
                m.source()
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .to_string_lossy(),
                m.destination().display()
            )
        })?;
    }
    Ok(())
}

fn make_one(root: &OwnedFd, m: &Mount) -> Result<(), String> {
    let config = parse_mount(m).map_err(|e| e.to_string())?;
    // libcontainer's nix is another version.
    let flags = MsFlags::from_bits_truncate(config.flags.bits());
    let source = m.source().as_deref().ok_or("the mount has no source")?;
    let bind = is_bind(m);
    let dir = !bind
        || std::fs::metadata(source)
            .map_err(|e| e.to_string())?
            .is_dir();
    let target = destination(root, m.destination(), dir)?;
    let propagation =
        MsFlags::MS_SHARED | MsFlags::MS_SLAVE | MsFlags::MS_PRIVATE | MsFlags::MS_UNBINDABLE;
    if bind {
        let recursive = m.options().iter().flatten().any(|o| o == "rbind");
        let tree = open_tree(source, recursive).map_err(|e| e.to_string())?;
        // As libcontainer: the flags on the top mount, `r*` attributes on all of it.
        let mut attr = libc::mount_attr {
            attr_set: attrs(flags),
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        if attr.attr_set & libc::MOUNT_ATTR__ATIME != 0 {
            attr.attr_clr |= libc::MOUNT_ATTR__ATIME;
        }
        setattr(&tree, &attr, false).map_err(|e| e.to_string())?;
        if let Some(rec) = &config.rec_attr {
            let rec = libc::mount_attr {
                attr_set: rec.attr_set,
                attr_clr: rec.attr_clr,
                propagation: rec.propagation,
                userns_fd: rec.userns_fd,
            };
            setattr(&tree, &rec, true).map_err(|e| e.to_string())?;
        }
        let wanted = flags & propagation;
        if !wanted.is_empty() {
            let attr = libc::mount_attr {
                attr_set: 0,
                attr_clr: 0,
                propagation: wanted.bits() as u64,
                userns_fd: 0,
            };
            setattr(&tree, &attr, flags.contains(MsFlags::MS_REC)).map_err(|e| e.to_string())?;
        }
        move_mount(&tree, &target).map_err(|e| e.to_string())
    } else {
        let at = format!("/proc/self/fd/{}", target.as_raw_fd());
        let data = config.data.join(",");
        nix::mount::mount(
            Some(source),
            at.as_str(),
            m.typ().as_deref(),
            flags & !(propagation | MsFlags::MS_REC),
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| e.to_string())
    }
}

/// `MOUNT_ATTR_*` of the mount flags libcontainer carries over to a bind.
fn attrs(flags: MsFlags) -> u64 {
    [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NOATIME, libc::MOUNT_ATTR_NOATIME),
        (MsFlags::MS_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
        (MsFlags::MS_RELATIME, libc::MOUNT_ATTR_RELATIME),
        (MsFlags::MS_STRICTATIME, libc::MOUNT_ATTR_STRICTATIME),
    ]
    .into_iter()
    .filter(|(f, _)| flags.contains(*f))
    .fold(0, |set, (_, a)| set | a)
}

/// The destination `dest` inside `root`, opened `O_PATH`, made first if missing (a
/// directory when `dir`, else an empty file; missing parents as directories).
fn destination(root: &OwnedFd, dest: &Path, dir: bool) -> Result<OwnedFd, String> {
    let names: Vec<&std::ffi::OsStr> = dest
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|()| "the destination climbs out with '..'".to_string())?;
    if names.is_empty() {
        return Err("the destination is the root".into());
    }
    let relative: std::path::PathBuf = names.iter().collect();
    match resolve(root, &relative) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other.map_err(|e| e.to_string()),
    }
    // Made one name at a time, each in a directory resolved inside the root.
    let mut parent = resolve(root, Path::new(".")).map_err(|e| e.to_string())?;
    for (i, name) in names.iter().enumerate() {
        let so_far: std::path::PathBuf = names[..=i].iter().collect();
        let last = i + 1 == names.len();
        match resolve(root, &so_far) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(format!("{}: {e}", so_far.display())),
        }
        let name = CString::new(name.as_bytes()).map_err(|_| "a NUL byte in the path")?;
        let made = if !last || dir {
            // SAFETY: mkdirat with a descriptor this process owns and a C string.
            unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) }
        } else {
            // SAFETY: as above; the new file's descriptor is closed at once.
            let fd = unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: the descriptor openat just returned.
                unsafe { libc::close(fd) };
            }
            fd.min(0)
        };
        if made != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("making {}: {e}", so_far.display()));
            }
        }
        parent = resolve(root, &so_far).map_err(|e| format!("{}: {e}", so_far.display()))?;
    }
    Ok(parent)
}

/// `path` inside `root`, symlinks followed as if `root` were `/`, opened `O_PATH`.
fn resolve(root: &OwnedFd, path: &Path) -> std::io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    crate::retry_in_root(
        || {
            // SAFETY: openat2 with a descriptor this process owns, a C string and an
            // open_how of the size given.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    root.as_raw_fd(),
                    path.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            owned(fd)
        },
        |e| e.raw_os_error() == Some(libc::EAGAIN),
    )
}

fn open_path(dirfd: i32, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat with a C string.
    let fd = unsafe { libc::openat(dirfd, path.as_ptr(), flags | libc::O_PATH | libc::O_CLOEXEC) };
    owned(fd as libc::c_long)
}

fn open_tree(source: &Path, recursive: bool) -> std::io::Result<OwnedFd> {
    let source = CString::new(source.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree with a C string; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags) };
    owned(fd)
}

fn setattr(tree: &OwnedFd, attr: &libc::mount_attr, recursive: bool) -> std::io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr on a descriptor this process owns with an attr of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn move_mount(tree: &OwnedFd, target: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: move_mount between two descriptors this process owns, empty paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned to this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
