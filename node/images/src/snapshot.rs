//! Container root filesystems as overlayfs snapshots over shared, read-only layers.
//!
//! Every layer is unpacked once per node, into a directory of its own named by the layer's
//! digest (`layers/<hex>`), and shared read-only by every container of every image that has
//! it. A container's root filesystem is an overlayfs mount (`rootfs/<id>/merged`) of its
//! image's layers with a writable upper directory of its own, so writes never reach a
//! layer and removing the container removes everything it wrote.
//!
//! Layout under the snapshot root:
//! * `layers/<hex>/`: an unpacked layer, complete once it has its name (see `unpack.rs`);
//!   `layers/<hex>.lock` serializes unpacking and pruning of one layer;
//! * `rootfs/<id>/{upper,work,merged}` and `rootfs/<id>/layers`, the digests it stacks
//!   (lowest first), which keep those layers from being pruned;
//! * `base/`: the lowest layer of every root, holding only the mount points a container
//!   runtime mounts over (`/dev`, `/proc`, `/sys`, `/etc/hosts`, `/etc/hostname`,
//!   `/etc/resolv.conf`), empty. An image that has them shows its own; one that lacks them
//!   would otherwise have them made in its writable layer by every container (with a
//!   copy-up of `/etc`), files made and removed on disk for nothing.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::store::Lock;
use crate::unpack::{UnpackLimits, unpack_layer};
use crate::{Error, Layer};

/// overlayfs takes its options in one page.
const MAX_MOUNT_OPTIONS: usize = 4000;

/// The unpacked layers and container root filesystems of one node.
#[derive(Debug, Clone)]
pub struct Snapshots {
    root: PathBuf,
    limits: UnpackLimits,
}

/// A prepared container root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub id: String,
    /// The merged view, the container's `/`.
    pub path: PathBuf,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn hex_of(digest: &str) -> Result<&str, Error> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(Error::InvalidDigest(digest.to_string())),
    }
}

/// The mount points every root starts with (see the module's documentation), made if
/// missing: idempotent, so agents opening one store at once agree.
fn make_base(base: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    for (dir, mode) in [
        ("", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("etc", 0o755),
    ] {
        let path = base.join(dir);
        match fs::DirBuilder::new().mode(mode).create(&path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_err(&path)(e)),
            _ => {}
        }
    }
    for file in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        let path = base.join(file);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io_err(&path))?;
    }
    Ok(())
}

impl Snapshots {
    /// Opens (creating if needed) the snapshot directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        let text = root.to_string_lossy();
        // These separate overlayfs mount options.
        if text.contains([',', ':', '\\']) {
            return Err(Error::Unsupported(format!(
                "the snapshot directory {text} has a ',', ':' or '\\' in its path, which overlayfs options cannot carry"
            )));
        }
        for dir in ["layers", "rootfs"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        make_base(&root.join("base"))?;
        Ok(Snapshots {
            root,
            limits: UnpackLimits::default(),
        })
    }

    /// Caps what one layer may unpack to.
    pub fn with_limits(mut self, limits: UnpackLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The directory the containers' roots are mounted under (`rootfs/<id>/merged`).
    pub fn roots_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    fn layer_dir(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(hex)
    }

    fn rootfs_dir(&self, id: &str) -> Result<PathBuf, Error> {
        let valid = !id.is_empty()
            && id.len() <= 200
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            return Err(Error::Unsupported(format!(
                "invalid snapshot id {id:?}: use letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(self.root.join("rootfs").join(id))
    }

    /// The unpacked directory of `layer`, unpacking it first if this node has not yet.
    pub fn layer(&self, layer: &Layer) -> Result<PathBuf, Error> {
        let hex = hex_of(&layer.digest)?;
        let dir = self.layer_dir(hex);
        if dir.is_dir() {
            return Ok(dir);
        }
        let _lock = Lock::exclusive(&dir.with_extension("lock"))?;
        // Another unpacker may have finished while this one waited.
        if !dir.is_dir() {
            unpack_layer(&layer.path, &layer.digest, &dir, &self.limits)?;
        }
        Ok(dir)
    }

    /// Prepares the root filesystem `id` from `layers` (lowest first): unpacks the layers
    /// this node lacks and mounts the overlay. Preparing an id that is already mounted
    /// returns it as it is (an agent restarting finds its containers' roots in place).
    pub fn prepare(&self, id: &str, layers: &[Layer]) -> Result<Rootfs, Error> {
        let dir = self.rootfs_dir(id)?;
        let merged = dir.join("merged");
        if is_mount_point(&merged) {
            return Ok(Rootfs {
                id: id.to_string(),
                path: merged,
            });
        }
        let mut lower = Vec::with_capacity(layers.len());
        for layer in layers {
            lower.push(self.layer(layer)?);
        }
        let upper = dir.join("upper");
        let work = dir.join("work");
        // What a root left unmounted (its agent or node went down) wrote is not a new
        // container's to see.
        for d in [&upper, &work] {
            match fs::remove_dir_all(d) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(d)(e)),
                _ => {}
            }
        }
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        // The digests first, so that pruning never takes a layer this root is about to use.
        let digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let list = dir.join("layers");
        fs::write(&list, digests.join("\n")).map_err(io_err(&list))?;
        lower.insert(0, self.root.join("base"));
        // overlayfs lists the uppermost lower layer first.
        let lowerdir = lower
            .iter()
            .rev()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let options = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        if options.len() > MAX_MOUNT_OPTIONS {
            return Err(Error::Unsupported(format!(
                "an image of {} layers is more than overlayfs can stack from {}",
                layers.len(),
                self.root.display()
            )));
        }
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| Error::Io {
            path: merged.clone(),
            source: io::Error::other(format!("mount overlay: {e}")),
        })?;
        Ok(Rootfs {
            id: id.to_string(),
            path: merged,
        })
    }

    /// Unmounts and deletes the root filesystem `id` and everything written to it. Removing
    /// one that does not exist is not an error.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let dir = self.rootfs_dir(id)?;
        let merged = dir.join("merged");
        if is_mount_point(&merged) {
            // Detached: a process that still has a file open in it must not block removal.
            umount2(&merged, MntFlags::MNT_DETACH).map_err(|e| Error::Io {
                path: merged.clone(),
                source: io::Error::other(format!("unmount: {e}")),
            })?;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                path: dir,
                source: e,
            }),
        }
    }

    /// The ids of the prepared root filesystems.
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let dir = self.root.join("rootfs");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            ids.push(entry.file_name().to_string_lossy().into_owned());
        }
        ids.sort();
        Ok(ids)
    }

    /// The digests of the layers some prepared root filesystem stacks.
    pub fn layers_in_use(&self) -> Result<BTreeSet<String>, Error> {
        let mut used = BTreeSet::new();
        for id in self.list()? {
            let list = self.root.join("rootfs").join(&id).join("layers");
            match fs::read_to_string(&list) {
                Ok(text) => used.extend(text.lines().map(str::to_string)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&list)(e)),
            }
        }
        Ok(used)
    }

    /// The digests of the layers unpacked on this node.
    pub fn unpacked_layers(&self) -> Result<BTreeSet<String>, Error> {
        let dir = self.root.join("layers");
        let mut layers = BTreeSet::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if hex_of(&digest).is_ok() && entry.path().is_dir() {
                layers.insert(digest);
            }
        }
        Ok(layers)
    }

    /// Deletes the unpacked layers that are neither in `keep` nor stacked by a prepared root
    /// filesystem, and leftovers of interrupted unpacks. Returns how many layers went.
    pub fn prune_layers(&self, keep: &BTreeSet<String>) -> Result<usize, Error> {
        let in_use = self.layers_in_use()?;
        let mut removed = 0;
        for digest in self.unpacked_layers()? {
            if keep.contains(&digest) || in_use.contains(&digest) {
                continue;
            }
            let hex = hex_of(&digest)?;
            let dir = self.layer_dir(hex);
            let lock_path = dir.with_extension("lock");
            let _lock = Lock::exclusive(&lock_path)?;
            // A root prepared while this waited for the lock keeps its layer.
            if self.layers_in_use()?.contains(&digest) {
                continue;
            }
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            let _ = fs::remove_file(&lock_path);
            removed += 1;
        }
        let dir = self.root.join("layers");
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `<hex>.unpacking-<pid>-<n>`: only a process that is gone left it.
            let pid = name
                .split_once(".unpacking-")
                .and_then(|(_, rest)| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(removed)
    }
}

/// Whether `path` is the root of a mount (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (
        fs::symlink_metadata(path),
        path.parent().map(fs::symlink_metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev() || me.ino() == parent.ino()
}
