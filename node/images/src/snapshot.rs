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
//! * `rootfs/.warm-<n>/`: a root kept mounted after its container (see below).
//!
//! Warm roots. Most short containers write nothing to their root. When a container is
//! gone and its upper directory is exactly as its overlay mount left it (no entry, the
//! same mode, owner and extended attributes; an empty work directory), the mount is kept,
//! up to a cap (past it the root unused longest goes), and the next container of the same
//! layers gets it by a rename instead of
//! a new overlay mount. A mount and its directories cost about a tenth of a short
//! container pod's CPU, and each one leaves inodes the filesystem must step over until
//! they are old (ext4 without a journal does not reuse an inode freed in the last minute).
//! The view is the same as a fresh mount's: overlayfs keeps every change in the upper
//! directory. Kept roots go after a minute unused, when a layer they stack is pruned,
//! and with the agent.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::store::Lock;
use crate::unpack::{UnpackLimits, unpack_layer};
use crate::{Error, Layer};

/// overlayfs takes its options in one page.
const MAX_MOUNT_OPTIONS: usize = 4000;

/// The name prefix of a kept root's directory under `rootfs/` (ids never start with '.').
const WARM_PREFIX: &str = ".warm-";

/// The unpacked layers and container root filesystems of one node. Clones share the warm
/// roots.
#[derive(Debug, Clone)]
pub struct Snapshots {
    root: PathBuf,
    limits: UnpackLimits,
    warm: Arc<Mutex<Warm>>,
}

/// Roots mounted by this process, and those kept for reuse.
#[derive(Debug, Default)]
struct Warm {
    /// Most roots kept; 0 keeps none.
    cap: usize,
    /// Each root this process mounted or handed out, by id: its lower directories and its
    /// upper directory as the mount left it.
    live: HashMap<String, Mounted>,
    kept: Vec<Kept>,
    seq: u64,
}

#[derive(Debug, Clone)]
struct Mounted {
    lowerdir: String,
    upper: UpperState,
}

#[derive(Debug)]
struct Kept {
    /// Its directory's name under `rootfs/`.
    name: String,
    mounted: Mounted,
    since: Instant,
}

/// What a container could change in the upper directory itself (the root of its `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpperState {
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: Vec<(OsString, Option<Vec<u8>>)>,
}

impl UpperState {
    fn of(upper: &Path) -> io::Result<Self> {
        let meta = fs::symlink_metadata(upper)?;
        let mut xattrs = Vec::new();
        for name in xattr::list(upper)? {
            let value = xattr::get(upper, &name)?;
            xattrs.push((name, value));
        }
        xattrs.sort();
        Ok(UpperState {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            xattrs,
        })
    }
}

/// Whether the root in `dir` holds nothing its container did: an empty upper directory in
/// the state its mount left it, and an empty work directory.
fn untouched(dir: &Path, mounted: &Mounted) -> bool {
    let empty = |d: &Path| fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_none());
    let upper = dir.join("upper");
    let work = dir.join("work");
    let work_entries: Option<Vec<OsString>> = fs::read_dir(&work)
        .ok()
        .and_then(|entries| entries.map(|e| e.ok().map(|e| e.file_name())).collect());
    empty(&upper)
        && UpperState::of(&upper).is_ok_and(|now| now == mounted.upper)
        && work_entries.is_some_and(|names| names == ["work"])
        && empty(&work.join("work"))
}

/// Unmounts and deletes a kept root's directory.
fn discard(dir: &Path) {
    let _ = umount2(&dir.join("merged"), MntFlags::MNT_DETACH);
    let _ = fs::remove_dir_all(dir);
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
            warm: Arc::default(),
        })
    }

    /// Keeps up to `cap` roots mounted after their containers, for the next container of
    /// the same layers (see the module's documentation). None by default.
    pub fn with_warm_roots(self, cap: usize) -> Self {
        self.warm.lock().expect("warm roots lock").cap = cap;
        self
    }

    /// How many roots are kept for reuse now.
    pub fn warm_roots(&self) -> usize {
        self.warm.lock().expect("warm roots lock").kept.len()
    }

    /// Unmounts and deletes the kept roots unused for `idle` or more.
    pub fn expire_warm_roots(&self, idle: Duration) {
        let old: Vec<Kept> = {
            let mut warm = self.warm.lock().expect("warm roots lock");
            let (old, young) = std::mem::take(&mut warm.kept)
                .into_iter()
                .partition(|k| k.since.elapsed() >= idle);
            warm.kept = young;
            old
        };
        for kept in old {
            discard(&self.roots_dir().join(&kept.name));
        }
    }

    /// Unmounts and deletes every root: the containers' and the kept ones.
    pub fn remove_all(&self) {
        {
            let mut warm = self.warm.lock().expect("warm roots lock");
            warm.kept.clear();
            warm.live.clear();
        }
        for id in self.list().unwrap_or_default() {
            if let Err(e) = self.remove(&id) {
                tracing::warn!("removing the root filesystem of container {id}: {e}");
            }
        }
        for dir in self.kept_dirs() {
            discard(&dir);
        }
    }

    /// The directories of kept roots, whoever kept them (and any left half removed).
    fn kept_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.roots_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect()
    }

    /// Takes a kept root of `lowerdir` for container `id`, renamed to `dir`.
    fn take_warm(&self, id: &str, lowerdir: &str, dir: &Path) -> bool {
        loop {
            let kept = {
                let mut warm = self.warm.lock().expect("warm roots lock");
                match warm
                    .kept
                    .iter()
                    .rposition(|k| k.mounted.lowerdir == lowerdir)
                {
                    Some(i) => warm.kept.swap_remove(i),
                    None => return false,
                }
            };
            // Gone when a pruner in another process dropped it meanwhile.
            if fs::rename(self.roots_dir().join(&kept.name), dir).is_ok() {
                self.warm
                    .lock()
                    .expect("warm roots lock")
                    .live
                    .insert(id.to_string(), kept.mounted);
                return true;
            }
        }
    }

    /// Done with the root filesystem `id`, whose container is gone: kept for the next
    /// container of the same layers when nothing was written to it (in place of the root
    /// kept longest when as many are kept as allowed), else removed as
    /// [`Snapshots::remove`] does.
    pub fn release(&self, id: &str) -> Result<(), Error> {
        let dir = self.rootfs_dir(id)?;
        let (mounted, keeps) = {
            let mut warm = self.warm.lock().expect("warm roots lock");
            (warm.live.remove(id), warm.cap > 0)
        };
        if let Some(mounted) = mounted
            && keeps
            && is_mount_point(&dir.join("merged"))
            && untouched(&dir, &mounted)
        {
            let mut warm = self.warm.lock().expect("warm roots lock");
            // When full, the root unused longest makes room: the kept roots follow what
            // the node runs now (a burst of one image after many pods of another).
            let evicted = if warm.cap > 0 && warm.kept.len() >= warm.cap {
                let oldest = (0..warm.kept.len()).min_by_key(|&i| warm.kept[i].since);
                oldest.map(|i| warm.kept.swap_remove(i))
            } else {
                None
            };
            if warm.kept.len() < warm.cap {
                warm.seq += 1;
                let name = format!("{WARM_PREFIX}{}-{}", std::process::id(), warm.seq);
                if fs::rename(&dir, self.roots_dir().join(&name)).is_ok() {
                    warm.kept.push(Kept {
                        name,
                        mounted,
                        since: Instant::now(),
                    });
                    drop(warm);
                    if let Some(old) = evicted {
                        discard(&self.roots_dir().join(&old.name));
                    }
                    return Ok(());
                }
            }
            warm.kept.extend(evicted);
        }
        self.remove(id)
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
        let mut lower = Vec::with_capacity(layers.len() + 1);
        lower.push(self.root.join("base"));
        for layer in layers {
            lower.push(self.layer(layer)?);
        }
        // overlayfs lists the uppermost lower layer first.
        let lowerdir = lower
            .iter()
            .rev()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let rootfs = Rootfs {
            id: id.to_string(),
            path: merged.clone(),
        };
        if !dir.exists() && self.take_warm(id, &lowerdir, &dir) {
            return Ok(rootfs);
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
        // As the mount left it, to tell later whether its container changed it.
        if let Ok(state) = UpperState::of(&upper) {
            self.warm.lock().expect("warm roots lock").live.insert(
                id.to_string(),
                Mounted {
                    lowerdir,
                    upper: state,
                },
            );
        }
        Ok(rootfs)
    }

    /// Unmounts and deletes the root filesystem `id` and everything written to it. Removing
    /// one that does not exist is not an error.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let dir = self.rootfs_dir(id)?;
        self.warm.lock().expect("warm roots lock").live.remove(id);
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
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kept roots, which are no container's.
            if !name.starts_with('.') {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The digests of the layers some prepared or kept root filesystem stacks.
    pub fn layers_in_use(&self) -> Result<BTreeSet<String>, Error> {
        let mut used = BTreeSet::new();
        let dir = self.root.join("rootfs");
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let list = entry.map_err(io_err(&dir))?.path().join("layers");
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
        // Kept roots of layers that go, whichever process kept them: claimed by a rename,
        // which fails if their keeper took one for a container meanwhile.
        for dir in self.kept_dirs() {
            let stacks = fs::read_to_string(dir.join("layers")).unwrap_or_default();
            if stacks.lines().all(|d| keep.contains(d)) {
                continue;
            }
            let mut claimed = dir.clone().into_os_string();
            claimed.push(format!(".dropped-{}", std::process::id()));
            if fs::rename(&dir, &claimed).is_ok() {
                discard(Path::new(&claimed));
            }
        }
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
