//! Unpacking image layers, which are untrusted input.
//!
//! A layer is a tar archive (plain, gzip or zstd; the compression is read from the bytes,
//! not trusted from the media type) unpacked into a directory of its own, which becomes one
//! overlayfs lower layer. The rules, each shown by a test with a crafted layer:
//! * no entry lands outside the directory: names are resolved lexically, a name whose `..`
//!   climbs above the root is refused, a leading `/` means the layer's root, and no entry is
//!   written through a symbolic link (every parent must be a real directory; an existing
//!   entry is replaced, never written into);
//! * symbolic links are created as they are (their targets are resolved later, inside the
//!   container); hard links must name a file of the same layer, resolved the same way;
//! * device nodes are refused; FIFOs are allowed;
//! * OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0/0 character device, and
//!   `.wh..wh..opq` the `trusted.overlay.opaque` attribute of its directory. A layer's own
//!   extended attributes are kept only in the `user.` and `security.capability` namespaces,
//!   so a layer cannot forge overlayfs' `trusted.` attributes;
//! * the unpacked size and the number of entries are capped (a compression bomb stops at
//!   the cap with an error).
//!
//! Unpacking goes to a temporary directory next to the destination, renamed into place only
//! when the whole layer succeeded, so a failed or interrupted unpack leaves nothing that
//! looks unpacked.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::mkfifo;

use crate::Error;

/// How much one layer may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Bytes of file content.
    pub max_bytes: u64,
    /// Tar entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 16 << 30,
            max_entries: 1 << 20,
        }
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Opens a layer blob as a tar stream, decompressing gzip or zstd as its first bytes say.
pub(crate) fn open_layer(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match reader.read(&mut magic[n..])? {
            0 => break,
            m => n += m,
        }
    }
    let head = io::Cursor::new(magic[..n].to_vec());
    let stream = head.chain(reader);
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(stream))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(stream)?)
    } else {
        Box::new(stream)
    })
}

/// Unpacks the layer blob at `blob` into `dest`, which must not exist yet; `digest` names the
/// layer in errors.
pub fn unpack_layer(
    blob: &Path,
    digest: &str,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, Error> {
    let stream = open_layer(blob).map_err(|source| Error::Io {
        path: blob.to_owned(),
        source,
    })?;
    unpack_stream(stream, digest, dest, limits)
}

/// As [`unpack_layer`], from a tar stream already decompressed.
pub fn unpack_stream(
    stream: impl Read,
    digest: &str,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, Error> {
    let name = dest
        .file_name()
        .ok_or_else(|| io_err(dest, io::Error::other("destination has no file name")))?;
    static UNPACKS: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(
        ".unpacking-{}-{}",
        std::process::id(),
        UNPACKS.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dest.with_file_name(tmp_name);
    // A leftover of a crashed unpack that had the same pid and number.
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(|e| io_err(&tmp, e))?;
    let result = Unpacker {
        root: &tmp,
        digest,
        limits,
        stats: UnpackStats::default(),
    }
    .run(stream);
    match result {
        Ok(stats) => match fs::rename(&tmp, dest) {
            Ok(()) => Ok(stats),
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(io_err(dest, e))
            }
        },
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

struct Unpacker<'a> {
    root: &'a Path,
    digest: &'a str,
    limits: &'a UnpackLimits,
    stats: UnpackStats,
}

/// A name inside the layer, relative to its root, as path components.
type Components = Vec<Vec<u8>>;

impl Unpacker<'_> {
    fn hostile(&self, entry: &[u8], reason: impl Into<String>) -> Error {
        Error::HostileLayer {
            digest: self.digest.to_string(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn bad(&self, e: impl std::fmt::Display) -> Error {
        Error::BadLayer {
            digest: self.digest.to_string(),
            reason: e.to_string(),
        }
    }

    fn run(mut self, stream: impl Read) -> Result<UnpackStats, Error> {
        let mut archive = tar::Archive::new(stream);
        // Directory times are set last: creating entries inside a directory changes its mtime.
        let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
        for entry in archive.entries().map_err(|e| self.bad(e))? {
            let mut entry = entry.map_err(|e| self.bad(e))?;
            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(self.hostile(
                    b"",
                    format!("more than {} entries", self.limits.max_entries),
                ));
            }
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let parts = self.components(&raw, &raw)?;
            let Some((base, parents)) = parts.split_last() else {
                // The root itself (`./`): its metadata stays the layer directory's own.
                continue;
            };
            let parent = self.parent_dir(&raw, parents)?;
            if base.as_slice() == OPAQUE_MARKER {
                xattr::set(&parent, OPAQUE_XATTR, b"y").map_err(|e| io_err(&parent, e))?;
                continue;
            }
            if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/')
                {
                    return Err(self.hostile(&raw, "a whiteout that names no entry"));
                }
                let target = parent.join(OsStr::from_bytes(hidden));
                remove_existing(&target)?;
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| io_err(&target, e.into()))?;
                continue;
            }
            let target = parent.join(OsStr::from_bytes(base));
            let header = entry.header().clone();
            let mode = header.mode().map_err(|e| self.bad(e))? & 0o7777;
            match kind {
                tar::EntryType::Directory => match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        remove_existing(&target)?;
                        fs::create_dir(&target).map_err(|e| io_err(&target, e))?;
                    }
                },
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let budget = self.limits.max_bytes - self.stats.bytes;
                    remove_existing(&target)?;
                    let mut file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                        .open(&target)
                        .map_err(|e| io_err(&target, e))?;
                    // Counted as read (a sparse entry reads as its full size).
                    let copied = io::copy(&mut (&mut entry).take(budget + 1), &mut file)
                        .map_err(|e| self.bad(e))?;
                    if copied > budget {
                        return Err(self.hostile(
                            &raw,
                            format!(
                                "the layer unpacks to more than {} bytes",
                                self.limits.max_bytes
                            ),
                        ));
                    }
                    self.stats.bytes += copied;
                }
                tar::EntryType::Symlink => {
                    let link = entry
                        .link_name_bytes()
                        .ok_or_else(|| self.hostile(&raw, "a symbolic link without a target"))?
                        .into_owned();
                    remove_existing(&target)?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                        .map_err(|e| io_err(&target, e))?;
                }
                tar::EntryType::Link => {
                    let link = entry
                        .link_name_bytes()
                        .ok_or_else(|| self.hostile(&raw, "a hard link without a target"))?
                        .into_owned();
                    let source_parts = self.components(&raw, &link)?;
                    let Some((source_base, source_parents)) = source_parts.split_last() else {
                        return Err(self.hostile(&raw, "a hard link to the layer's root"));
                    };
                    let source = self
                        .existing_dir(&raw, source_parents)?
                        .join(OsStr::from_bytes(source_base));
                    match fs::symlink_metadata(&source) {
                        Ok(m) if !m.is_dir() => {}
                        _ => {
                            return Err(self.hostile(
                                &raw,
                                format!(
                                    "a hard link to {}, which is not a file earlier in this layer",
                                    String::from_utf8_lossy(&link)
                                ),
                            ));
                        }
                    }
                    if source != target {
                        remove_existing(&target)?;
                        fs::hard_link(&source, &target).map_err(|e| io_err(&target, e))?;
                    }
                    // A hard link shares its inode's metadata: nothing more to set.
                    continue;
                }
                tar::EntryType::Fifo => {
                    remove_existing(&target)?;
                    mkfifo(&target, Mode::from_bits_truncate(0o600))
                        .map_err(|e| io_err(&target, e.into()))?;
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(self.hostile(&raw, "device nodes are not allowed in image layers"));
                }
                other => {
                    return Err(self.hostile(&raw, format!("unsupported tar entry type {other:?}")));
                }
            }
            self.set_metadata(&mut entry, &target, kind, mode, &mut dir_times)?;
        }
        for (dir, mtime) in dir_times.into_iter().rev() {
            set_mtime(&dir, mtime)?;
        }
        Ok(self.stats)
    }

    /// `name`'s components relative to the layer root; `..` may not climb above it.
    fn components(&self, entry: &[u8], name: &[u8]) -> Result<Components, Error> {
        if name.contains(&0) {
            return Err(self.hostile(entry, "a name with a NUL byte"));
        }
        let mut parts: Components = Vec::new();
        for part in name.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(self.hostile(
                            entry,
                            format!(
                                "{} climbs out of the root with ..",
                                String::from_utf8_lossy(name)
                            ),
                        ));
                    }
                }
                p => parts.push(p.to_vec()),
            }
        }
        Ok(parts)
    }

    /// The directory that holds an entry, made (as 0755 root:root, like Docker) where the
    /// layer has no entry for it. Every existing component must be a real directory.
    fn parent_dir(&self, entry: &[u8], parents: &[Vec<u8>]) -> Result<PathBuf, Error> {
        self.walk(entry, parents, true)
    }

    /// As [`Self::parent_dir`], for a path that must exist already (a hard link's target).
    fn existing_dir(&self, entry: &[u8], parents: &[Vec<u8>]) -> Result<PathBuf, Error> {
        self.walk(entry, parents, false)
    }

    fn walk(&self, entry: &[u8], parents: &[Vec<u8>], create: bool) -> Result<PathBuf, Error> {
        let mut dir = self.root.to_path_buf();
        for part in parents {
            dir.push(OsStr::from_bytes(part));
            let not_dir = || {
                self.hostile(
                    entry,
                    format!("{} is not a directory of this layer", self.relative(&dir)),
                )
            };
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.through_link(entry, &dir));
                }
                Ok(_) => return Err(not_dir()),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .map_err(|e| io_err(&dir, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_dir()),
                Err(e) => return Err(io_err(&dir, e)),
            }
        }
        Ok(dir)
    }

    fn through_link(&self, entry: &[u8], link: &Path) -> Error {
        self.hostile(
            entry,
            format!(
                "it would be written through the symbolic link {}",
                self.relative(link)
            ),
        )
    }

    fn relative(&self, path: &Path) -> String {
        format!(
            "/{}",
            path.strip_prefix(self.root).unwrap_or(path).display()
        )
    }

    fn set_metadata<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        kind: tar::EntryType,
        mode: u32,
        dir_times: &mut Vec<(PathBuf, i64)>,
    ) -> Result<(), Error> {
        let header = entry.header();
        let uid = header.uid().map_err(|e| self.bad(e))?;
        let gid = header.gid().map_err(|e| self.bad(e))?;
        let mtime = header.mtime().map_err(|e| self.bad(e))? as i64;
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(self.bad(format!("uid {uid} or gid {gid} out of range")));
        };
        std::os::unix::fs::lchown(target, Some(uid), Some(gid)).map_err(|e| io_err(target, e))?;
        if kind != tar::EntryType::Symlink {
            // After the chown, which clears set-id bits.
            fs::set_permissions(target, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err(target, e))?;
        }
        if let Some(extensions) = entry.pax_extensions().map_err(|e| self.bad(e))? {
            for ext in extensions {
                let ext = ext.map_err(|e| self.bad(e))?;
                let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                if !(name.starts_with(b"user.") || name == b"security.capability") {
                    continue;
                }
                if kind == tar::EntryType::Symlink {
                    continue;
                }
                xattr::set(target, OsStr::from_bytes(name), ext.value_bytes())
                    .map_err(|e| io_err(target, e))?;
            }
        }
        if kind == tar::EntryType::Directory {
            dir_times.push((target.to_owned(), mtime));
        } else {
            set_mtime(target, mtime)?;
        }
        Ok(())
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<(), Error> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err(path, e.into()))
}

/// Removes whatever is at `path` (a directory with its contents), never following a link.
fn remove_existing(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| io_err(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| io_err(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}
