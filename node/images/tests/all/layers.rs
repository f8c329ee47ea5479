//! Layers as untrusted input: crafted tar layers, unpacked and stacked with overlayfs (as
//! root, as the node agent runs).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use skiff_images::{Error, Layer, Snapshots, UnpackLimits, unpack_layer};

use crate::registry::sha256;

/// One tar entry, names and link targets written as raw bytes (the tar crate's own setters
/// refuse `..`, which is exactly what a hostile layer holds).
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Owned(&'a str, &'a [u8], u64, u64, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str, u32, u32),
    /// A directory with PAX extended attributes.
    DirXattrs(&'a str, &'a [(&'a str, &'a [u8])]),
}

fn header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    let raw = &mut h.as_old_mut().name;
    assert!(name.len() < raw.len(), "test names fit the old header");
    raw[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let raw = &mut h.as_old_mut().linkname;
    raw[..target.len()].copy_from_slice(target.as_bytes());
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(name) => {
                let mut h = header(tar::EntryType::Directory, name, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::File(name, data) => {
                let mut h = header(tar::EntryType::Regular, name, data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Owned(name, data, uid, gid, mode) => {
                let mut h = header(tar::EntryType::Regular, name, data.len() as u64);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_mode(*mode);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Symlink(name, target) => {
                let mut h = header(tar::EntryType::Symlink, name, 0);
                set_link(&mut h, target);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Hardlink(name, target) => {
                let mut h = header(tar::EntryType::Link, name, 0);
                set_link(&mut h, target);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::CharDevice(name, major, minor) => {
                let mut h = header(tar::EntryType::Char, name, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::DirXattrs(name, attrs) => {
                let pax: Vec<(String, &[u8])> = attrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                    .collect();
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                    .unwrap();
                let mut h = header(tar::EntryType::Directory, name, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

/// A layer blob written to `dir`, named by its digest.
fn layer(dir: &Path, blob: Vec<u8>, media_type: &str) -> Layer {
    let digest = sha256(&blob);
    let path = dir.join(digest.trim_start_matches("sha256:"));
    std::fs::write(&path, &blob).unwrap();
    Layer {
        path,
        digest,
        media_type: media_type.to_string(),
        size: blob.len() as u64,
    }
}

const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A scratch directory with `outside/`, a stand-in for the host that no layer may touch.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), b"host").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        Scratch { dir }
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    /// Everything under `outside/`, with contents.
    fn outside_state(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.outside()).unwrap() {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            out.push((e.file_name().to_string_lossy().into_owned(), bytes));
        }
        out.sort();
        out
    }
    fn unpack(&self, entries: &[E]) -> (PathBuf, Result<(), Error>) {
        let layer = layer(&self.dir.path().join("blobs"), tar_of(entries), TAR);
        let dest = self.dir.path().join("layer");
        let _ = std::fs::remove_dir_all(&dest);
        let r = unpack_layer(&layer.path, &layer.digest, &dest, &UnpackLimits::default());
        (dest, r.map(|_| ()))
    }
    /// Unpacks a hostile layer: it must fail naming `why`, leave no unpacked directory, and
    /// change nothing outside.
    fn refused(&self, entries: &[E], why: &str) {
        let before = self.outside_state();
        let (dest, r) = self.unpack(entries);
        match r {
            Err(e @ Error::HostileLayer { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(why), "error {msg:?} should say {why:?}");
            }
            other => panic!("a hostile layer was not refused: {other:?}"),
        }
        assert!(!dest.exists(), "a refused layer left {}", dest.display());
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("unpacking"))
            .collect();
        assert!(leftovers.is_empty(), "temporary unpack left: {leftovers:?}");
        assert_eq!(self.outside_state(), before, "the layer changed outside/");
    }
}

#[test]
fn dot_dot_climbing_out_is_refused() {
    let s = Scratch::new();
    s.refused(
        &[E::File("../outside/planted", b"x")],
        "climbs out of the root",
    );
    s.refused(
        &[E::Dir("a"), E::File("a/../../outside/planted", b"x")],
        "climbs out of the root",
    );
}

#[test]
fn absolute_and_dotted_names_land_inside() {
    let s = Scratch::new();
    let host_path = s.outside().join("abs-planted");
    let name = format!("{}", host_path.display());
    let (dest, r) = s.unpack(&[E::File(&name, b"inside"), E::File("./a/../b", b"b")]);
    r.unwrap();
    assert!(
        !host_path.exists(),
        "an absolute name was written on the host"
    );
    let inside = dest.join(name.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
    assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"b");
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let s = Scratch::new();
    let outside = s.outside().display().to_string();
    // Absolute target.
    s.refused(
        &[E::Symlink("evil", &outside), E::File("evil/planted", b"x")],
        "through the symbolic link /evil",
    );
    // Relative target that climbs.
    s.refused(
        &[
            E::Symlink("up", "../../../../../../../../.."),
            E::File(&format!("up{outside}/planted"), b"x"),
        ],
        "through the symbolic link /up",
    );
    // A directory entry under a link.
    s.refused(
        &[E::Symlink("d", &outside), E::Dir("d/sub")],
        "through the symbolic link /d",
    );
}

#[test]
fn an_entry_replaces_a_symlink_instead_of_following_it() {
    let s = Scratch::new();
    let secret = s.outside().join("secret");
    let (dest, r) = s.unpack(&[
        E::Symlink("f", &secret.display().to_string()),
        E::File("f", b"layer"),
        E::Symlink("g", &s.outside().display().to_string()),
        E::Dir("g"),
    ]);
    r.unwrap();
    assert_eq!(std::fs::read(&secret).unwrap(), b"host");
    let f = std::fs::symlink_metadata(dest.join("f")).unwrap();
    assert!(f.is_file(), "f is the layer's file, not a link");
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"layer");
    assert!(std::fs::symlink_metadata(dest.join("g")).unwrap().is_dir());
    // Symlinks themselves are kept as the image has them (resolved in the container).
    let (dest, r) = s.unpack(&[E::Symlink("etc-link", "/etc/passwd")]);
    r.unwrap();
    assert_eq!(
        std::fs::read_link(dest.join("etc-link")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn hard_links_stay_within_the_layer() {
    let s = Scratch::new();
    s.refused(
        &[E::Hardlink("h", "../outside/secret")],
        "climbs out of the root",
    );
    // An absolute target names the layer's own file, which does not exist: never the host's.
    let secret = s.outside().join("secret").display().to_string();
    s.refused(&[E::Hardlink("h", &secret)], "of this layer");
    s.refused(
        &[E::Hardlink("h", "/secret")],
        "not a file earlier in this layer",
    );
    s.refused(
        &[
            E::Symlink("l", &s.outside().display().to_string()),
            E::Hardlink("h", "l/secret"),
        ],
        "through the symbolic link /l",
    );
    let (dest, r) = s.unpack(&[
        E::Dir("bin"),
        E::File("bin/busybox", b"#!"),
        E::Hardlink("bin/sh", "/bin/busybox"),
    ]);
    r.unwrap();
    let a = std::fs::metadata(dest.join("bin/busybox")).unwrap();
    let b = std::fs::metadata(dest.join("bin/sh")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

#[test]
fn device_nodes_are_refused() {
    let s = Scratch::new();
    s.refused(
        &[E::Dir("dev"), E::CharDevice("dev/mem", 1, 1)],
        "device nodes are not allowed",
    );
}

#[test]
fn owners_modes_and_only_safe_xattrs_are_kept() {
    let s = Scratch::new();
    let (dest, r) = s.unpack(&[
        E::Owned("passwd", b"x", 1234, 5678, 0o4755),
        E::DirXattrs(
            "d",
            &[
                ("user.note", b"kept"),
                ("trusted.overlay.opaque", b"y"),
                ("security.selinux", b"system_u:object_r:etc_t:s0"),
            ],
        ),
    ]);
    r.unwrap();
    let m = std::fs::metadata(dest.join("passwd")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o4755,
        "set-uid survives the chown"
    );
    let d = dest.join("d");
    assert_eq!(
        xattr::get(&d, "user.note").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(xattr::get(&d, "trusted.overlay.opaque").unwrap(), None);
}

#[test]
fn a_layer_over_its_size_cap_is_refused() {
    let s = Scratch::new();
    let big = vec![0u8; 64 * 1024];
    let blob = gzip(&tar_of(&[E::File("zeros", &big)]));
    assert!(blob.len() < 1024, "compresses well, like a bomb");
    let layer = layer(&s.dir.path().join("blobs"), blob, TAR_GZIP);
    let dest = s.dir.path().join("layer");
    let limits = UnpackLimits {
        max_bytes: 4096,
        max_entries: 100,
    };
    let err = unpack_layer(&layer.path, &layer.digest, &dest, &limits).unwrap_err();
    assert!(err.to_string().contains("more than 4096 bytes"), "{err}");
    assert!(!dest.exists());
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn overlay_snapshots_apply_whiteouts_and_share_layers() {
    let s = Scratch::new();
    let blobs = s.dir.path().join("blobs");
    let base = layer(
        &blobs,
        gzip(&tar_of(&[
            E::Dir("a"),
            E::File("a/x", b"x"),
            E::File("a/y", b"y"),
            E::Dir("b"),
            E::File("b/z", b"z"),
            E::Dir("c"),
            E::File("c/keep", b"keep"),
        ])),
        TAR_GZIP,
    );
    let top = layer(
        &blobs,
        zstd(&tar_of(&[
            E::File("a/.wh.x", b""),
            E::Dir("b"),
            E::File("b/.wh..wh..opq", b""),
            E::File("b/new", b"new"),
            E::File("c/added", b"added"),
            E::Dir("etc"),
            E::File("etc/hosts", b"the image's own"),
        ])),
        TAR_ZSTD,
    );
    let snaps = Snapshots::open(s.dir.path().join("snapshots")).unwrap();
    let one = snaps
        .prepare("pod1_app", &[base.clone(), top.clone()])
        .unwrap();
    let two = snaps
        .prepare("pod2_app", &[base.clone(), top.clone()])
        .unwrap();
    assert_eq!(names(&one.path.join("a")), ["y"], "a/x was whited out");
    assert_eq!(
        names(&one.path.join("b")),
        ["new"],
        "b is opaque in the top layer"
    );
    assert_eq!(names(&one.path.join("c")), ["added", "keep"]);
    assert_eq!(std::fs::read(one.path.join("b/new")).unwrap(), b"new");
    // Under every image, the mount points a runtime mounts over; the image's own win.
    assert_eq!(
        names(&one.path),
        ["a", "b", "c", "dev", "etc", "proc", "sys"]
    );
    assert_eq!(
        names(&one.path.join("etc")),
        ["hostname", "hosts", "resolv.conf"]
    );
    assert_eq!(
        std::fs::read(one.path.join("etc/hosts")).unwrap(),
        b"the image's own"
    );
    assert_eq!(
        std::fs::read(one.path.join("etc/resolv.conf")).unwrap(),
        b""
    );

    // Writes stay in the container's own upper directory.
    std::fs::write(one.path.join("a/y"), b"changed").unwrap();
    std::fs::remove_file(one.path.join("c/keep")).unwrap();
    assert_eq!(std::fs::read(two.path.join("a/y")).unwrap(), b"y");
    assert!(two.path.join("c/keep").exists());

    // Each layer was unpacked once for both containers; in use, pruning keeps them.
    let both: BTreeSet<String> = [base.digest.clone(), top.digest.clone()].into();
    assert_eq!(snaps.unpacked_layers().unwrap(), both);
    assert_eq!(snaps.layers_in_use().unwrap(), both);
    assert_eq!(snaps.prune_layers(&BTreeSet::new()).unwrap(), 0);

    // Preparing again (an agent restart) finds the mount as it was.
    let again = snaps
        .prepare("pod1_app", &[base.clone(), top.clone()])
        .unwrap();
    assert_eq!(std::fs::read(again.path.join("a/y")).unwrap(), b"changed");
    // A root left unmounted (its agent was killed and its helper unmounted it) is
    // prepared afresh: a new container does not see what the old one wrote.
    nix::mount::umount2(&again.path, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let fresh = snaps
        .prepare("pod1_app", &[base.clone(), top.clone()])
        .unwrap();
    assert_eq!(std::fs::read(fresh.path.join("a/y")).unwrap(), b"y");
    assert!(fresh.path.join("c/keep").exists());

    snaps.remove("pod1_app").unwrap();
    snaps.remove("pod2_app").unwrap();
    snaps.remove("pod2_app").unwrap();
    assert!(snaps.list().unwrap().is_empty());
    assert!(!one.path.exists());
    // Nothing is mounted under the snapshot root any more.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = s.dir.path().join("snapshots").display().to_string();
    assert!(!mounts.contains(&root), "left mounted: {mounts}");
    // Unused now: pruning takes both, keeping only what it is told to keep.
    let keep: BTreeSet<String> = [base.digest.clone()].into();
    assert_eq!(snaps.prune_layers(&keep).unwrap(), 1);
    assert_eq!(snaps.unpacked_layers().unwrap(), keep);
}

#[test]
fn snapshot_ids_are_checked() {
    let s = Scratch::new();
    let snaps = Snapshots::open(s.dir.path().join("snapshots")).unwrap();
    for bad in ["", "../x", "a/b", ".hidden"] {
        let err = snaps.prepare(bad, &[]).unwrap_err();
        assert!(err.to_string().contains("invalid snapshot id"), "{err}");
    }
    // An image without layers has only the mount points a runtime mounts over.
    let empty = snaps.prepare("scratch", &[]).unwrap();
    assert_eq!(names(&empty.path), ["dev", "etc", "proc", "sys"]);
    snaps.remove("scratch").unwrap();
}

#[test]
fn untouched_roots_are_kept_for_the_next_container_of_the_same_layers() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new();
    let blobs = s.dir.path().join("blobs");
    let base = layer(
        &blobs,
        gzip(&tar_of(&[E::Dir("a"), E::File("a/x", b"x")])),
        TAR_GZIP,
    );
    let other = layer(&blobs, gzip(&tar_of(&[E::File("o", b"o")])), TAR_GZIP);
    let snaps = Snapshots::open(s.dir.path().join("snapshots"))
        .unwrap()
        .with_warm_roots(2);
    // An overlay mount is a filesystem of its own: the same device number means the same
    // mount.
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();

    // A container that wrote nothing leaves its root for the next one of its layers.
    let one = snaps.prepare("one", std::slice::from_ref(&base)).unwrap();
    let mount = dev(&one.path);
    assert_eq!(std::fs::read(one.path.join("a/x")).unwrap(), b"x");
    snaps.release("one").unwrap();
    assert_eq!(snaps.warm_roots(), 1);
    assert_eq!(snaps.list().unwrap(), Vec::<String>::new());
    assert!(!one.path.exists());
    // Not for other layers.
    let foreign = snaps
        .prepare("foreign", std::slice::from_ref(&other))
        .unwrap();
    assert_ne!(dev(&foreign.path), mount);
    assert_eq!(names(&foreign.path), ["dev", "etc", "o", "proc", "sys"]);
    let two = snaps.prepare("two", std::slice::from_ref(&base)).unwrap();
    assert_eq!(dev(&two.path), mount, "the kept root was reused");
    assert_eq!(snaps.warm_roots(), 0);
    assert_eq!(names(&two.path), ["a", "dev", "etc", "proc", "sys"]);

    // Whatever a container changes, its root goes with it: a file written, a file
    // removed, the root's own mode or extended attributes.
    type Change = fn(&Path);
    let changes: [(&str, Change); 4] = [
        ("written", |root| {
            std::fs::write(root.join("new"), b"n").unwrap()
        }),
        ("removed", |root| {
            std::fs::remove_file(root.join("a/x")).unwrap()
        }),
        ("chmod", |root| {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).unwrap()
        }),
        ("xattr", |root| xattr::set(root, "user.mark", b"1").unwrap()),
    ];
    for (what, change) in changes {
        change(&two.path);
        snaps.release("two").unwrap();
        assert_eq!(snaps.warm_roots(), 0, "{what}: not kept");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(
                &s.dir
                    .path()
                    .join("snapshots/rootfs/.")
                    .display()
                    .to_string()
            ),
            "{what}: left mounted"
        );
        let fresh = snaps.prepare("two", std::slice::from_ref(&base)).unwrap();
        assert_eq!(
            std::fs::read(fresh.path.join("a/x")).unwrap(),
            b"x",
            "{what}"
        );
        assert!(!fresh.path.join("new").exists(), "{what}");
        assert_eq!(
            std::fs::metadata(&fresh.path).unwrap().permissions().mode() & 0o777,
            0o755,
            "{what}"
        );
        assert_eq!(
            xattr::get(&fresh.path, "user.mark").unwrap(),
            None,
            "{what}"
        );
    }

    // No more are kept than asked for: past the cap the root kept longest goes, so the
    // kept roots follow what runs now.
    let mut devs = std::collections::HashMap::new();
    for id in ["three", "four"] {
        let root = snaps.prepare(id, std::slice::from_ref(&base)).unwrap();
        devs.insert(id, dev(&root.path));
    }
    devs.insert("foreign", dev(&foreign.path));
    for id in ["two", "three", "foreign", "four"] {
        snaps.release(id).unwrap();
    }
    assert_eq!(snaps.warm_roots(), 2);
    let warm_prefix = s.dir.path().join("snapshots/rootfs/.warm-");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .matches(warm_prefix.to_str().unwrap())
        .count();
    assert_eq!(mounted, 2, "the roots that made room are unmounted");
    let again = snaps.prepare("again", std::slice::from_ref(&base)).unwrap();
    assert_eq!(
        dev(&again.path),
        devs["four"],
        "the newest of the base's is kept"
    );
    let other_again = snaps
        .prepare("other-again", std::slice::from_ref(&other))
        .unwrap();
    assert_eq!(dev(&other_again.path), devs["foreign"]);
    assert_eq!(snaps.warm_roots(), 0);
    for id in ["again", "other-again"] {
        snaps.release(id).unwrap();
    }
    // Kept roots hold their layers; pruning a layer first drops the roots over it.
    let both: BTreeSet<String> = [base.digest.clone(), other.digest.clone()].into();
    assert_eq!(snaps.layers_in_use().unwrap(), both);
    let from_elsewhere = Snapshots::open(s.dir.path().join("snapshots")).unwrap();
    assert_eq!(from_elsewhere.prune_layers(&both).unwrap(), 0);
    assert_eq!(from_elsewhere.prune_layers(&BTreeSet::new()).unwrap(), 2);
    assert!(from_elsewhere.unpacked_layers().unwrap().is_empty());
    // Their keeper notices when it next needs one.
    let five = snaps.prepare("five", std::slice::from_ref(&base)).unwrap();
    assert_eq!(std::fs::read(five.path.join("a/x")).unwrap(), b"x");
    let five_other = snaps
        .prepare("five-other", std::slice::from_ref(&other))
        .unwrap();
    assert_eq!(std::fs::read(five_other.path.join("o")).unwrap(), b"o");
    snaps.release("five").unwrap();
    snaps.release("five-other").unwrap();
    assert_eq!(snaps.warm_roots(), 2);

    // Kept roots go when unused for long enough, and all go with their keeper.
    snaps.expire_warm_roots(std::time::Duration::from_secs(3600));
    assert_eq!(snaps.warm_roots(), 2);
    snaps.expire_warm_roots(std::time::Duration::ZERO);
    assert_eq!(snaps.warm_roots(), 0);
    snaps.prepare("six", std::slice::from_ref(&base)).unwrap();
    snaps.release("six").unwrap();
    assert_eq!(snaps.warm_roots(), 1);
    snaps.remove_all();
    let rootfs: Vec<_> = std::fs::read_dir(s.dir.path().join("snapshots/rootfs"))
        .unwrap()
        .collect();
    assert!(rootfs.is_empty(), "{rootfs:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = s.dir.path().join("snapshots").display().to_string();
    assert!(!mounts.contains(&root), "left mounted: {mounts}");
}
