use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use skiff_shim_container::{
    ResolvedUser, UserError, UserOverrides, resolve_user, verify_run_as_non_root,
};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
    # a comment and a broken line\n\
    broken:x:notanumber:1::/:/bin/sh\n\
    app:x:1000:1000:app:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

const GROUP: &str = "root:x:0:\n\
    daemon:x:1:\n\
    app:x:1000:\n\
    audio:x:29:app,other\n\
    video:x:44:other\n\
    staff:x:50:app\n\
    nogroup:x:65534:\n";

/// A rootfs with the image's /etc/passwd and /etc/group.
fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("etc")).unwrap();
    fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
    fs::write(dir.path().join("etc/group"), GROUP).unwrap();
    dir
}

fn resolve(root: &Path, image_user: &str) -> Result<ResolvedUser, UserError> {
    resolve_user(root, image_user, &UserOverrides::default())
}

/// The user `uid`, with the home directory PASSWD gives it (`/` when it has none).
fn user(uid: u32, gid: u32, groups: &[u32]) -> ResolvedUser {
    let home = PASSWD
        .lines()
        .map(|l| l.trim().split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2] == uid.to_string())
        .map_or("/", |f| f[5]);
    ResolvedUser {
        uid,
        gid,
        additional_gids: groups.to_vec(),
        home: home.to_string(),
    }
}

#[test]
fn image_user_forms() {
    let root = rootfs();
    let r = root.path();
    assert_eq!(resolve(r, "").unwrap(), user(0, 0, &[0]));
    assert_eq!(
        resolve(r, "app").unwrap(),
        user(1000, 1000, &[29, 50, 1000])
    );
    assert_eq!(
        resolve(r, "1000").unwrap(),
        user(1000, 1000, &[29, 50, 1000])
    );
    assert_eq!(
        resolve(r, "1000:44").unwrap(),
        user(1000, 44, &[29, 44, 50])
    );
    assert_eq!(
        resolve(r, "app:video").unwrap(),
        user(1000, 44, &[29, 44, 50])
    );
    assert_eq!(resolve(r, "nobody").unwrap(), user(65534, 65534, &[65534]));
    // A numeric user without an entry: gid 0, no memberships.
    assert_eq!(resolve(r, "4242").unwrap(), user(4242, 0, &[0]));
    assert_eq!(resolve(r, "4242:4343").unwrap(), user(4242, 4343, &[4343]));
}

#[test]
fn unknown_names_fail_with_runcs_messages() {
    let root = rootfs();
    assert_eq!(
        resolve(root.path(), "ghost").unwrap_err().to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
    assert_eq!(
        resolve(root.path(), "app:ghosts").unwrap_err().to_string(),
        "unable to find group ghosts: no matching entries in group file"
    );
    // "broken" has a malformed line, so it is not a user.
    assert!(matches!(
        resolve(root.path(), "broken"),
        Err(UserError::UnknownUser(_))
    ));
}

#[test]
fn an_image_without_passwd_runs_numeric_users_only() {
    let root = tempfile::tempdir().unwrap();
    // With no home to read, HOME is / (as runc has it).
    let homeless = |uid, gid, groups: &[u32]| ResolvedUser {
        home: "/".into(),
        ..user(uid, gid, groups)
    };
    assert_eq!(resolve(root.path(), "").unwrap(), homeless(0, 0, &[0]));
    assert_eq!(
        resolve(root.path(), "123:456").unwrap(),
        homeless(123, 456, &[456])
    );
    assert!(matches!(
        resolve(root.path(), "app"),
        Err(UserError::UnknownUser(_))
    ));
}

#[test]
fn security_context_overrides() {
    let root = rootfs();
    let o = UserOverrides {
        run_as_user: Some(1000),
        run_as_group: Some(3000),
        supplemental_groups: vec![4000, 4000],
        fs_group: Some(2000),
        ..Default::default()
    };
    // runAsUser replaces the image user, group part included.
    assert_eq!(
        resolve_user(root.path(), "nobody:nogroup", &o).unwrap(),
        user(1000, 3000, &[29, 50, 2000, 3000, 4000])
    );
    // runAsGroup alone keeps the image's user.
    let o = UserOverrides {
        run_as_group: Some(5),
        ..Default::default()
    };
    assert_eq!(
        resolve_user(root.path(), "app", &o).unwrap(),
        user(1000, 5, &[5, 29, 50])
    );
    let o = UserOverrides {
        run_as_user: Some(-1),
        ..Default::default()
    };
    assert_eq!(
        resolve_user(root.path(), "", &o).unwrap_err().to_string(),
        "securityContext.runAsUser: -1 is not a valid id"
    );
}

#[test]
fn hostile_symlinks_stay_inside_the_rootfs() {
    // The node's "secret" file, outside the rootfs: a user only it defines.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("shadow");
    fs::write(&secret, "evil:x:4242:4242::/:/bin/sh\n").unwrap();
    fs::write(outside.path().join("group"), "evil:x:4343:evil\n").unwrap();

    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    // Absolute: resolved inside the rootfs, where it does not exist.
    symlink(&secret, root.path().join("etc/passwd")).unwrap();
    // Relative, climbing out: clamped at the rootfs's root.
    let climb = format!(
        "../../../../../../../../..{}",
        outside.path().join("group").display()
    );
    symlink(&climb, root.path().join("etc/group")).unwrap();

    assert!(matches!(
        resolve(root.path(), "evil"),
        Err(UserError::UnknownUser(_))
    ));
    assert!(matches!(
        resolve(root.path(), "0:evil"),
        Err(UserError::UnknownGroup(_))
    ));
    // A symlink inside the image is followed inside it.
    let inner = root.path().join(outside.path().strip_prefix("/").unwrap());
    fs::create_dir_all(&inner).unwrap();
    fs::write(inner.join("shadow"), "inner:x:77:78::/:/bin/sh\n").unwrap();
    assert_eq!(resolve(root.path(), "inner").unwrap(), user(77, 78, &[78]));
}

#[test]
fn a_busy_node_does_not_fail_a_walk_through_dotdot() {
    // The kernel refuses a `..` walk inside a root (EAGAIN) whenever anything on the
    // system was renamed or mounted meanwhile; on a node making containers all the time
    // an image whose /etc/group climbs through `..` must still resolve.
    let root = rootfs();
    fs::remove_file(root.path().join("etc/group")).unwrap();
    fs::create_dir(root.path().join("db")).unwrap();
    fs::write(root.path().join("db/group"), GROUP).unwrap();
    symlink("../etc/../db/group", root.path().join("etc/group")).unwrap();

    let busy = tempfile::tempdir().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renamer = {
        let stop = stop.clone();
        let (a, b) = (busy.path().join("a"), busy.path().join("b"));
        fs::write(&a, "").unwrap();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::rename(&a, &b).unwrap();
                fs::rename(&b, &a).unwrap();
            }
        })
    };
    let failures = (0..3000)
        .filter(|_| resolve(root.path(), "app:staff").is_err())
        .count();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renamer.join().unwrap();
    assert_eq!(failures, 0, "{failures} of 3000 resolutions failed");
    // What the same user is in a rootfs without the climb.
    assert_eq!(
        resolve(root.path(), "app:staff").unwrap(),
        resolve(rootfs().path(), "app:staff").unwrap()
    );
}

#[test]
fn special_and_huge_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    // A FIFO must neither block nor be read.
    nix::unistd::mkfifo(
        &root.path().join("etc/passwd"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    assert!(matches!(
        resolve(root.path(), "app"),
        Err(UserError::NotAFile("/etc/passwd"))
    ));
    fs::remove_file(root.path().join("etc/passwd")).unwrap();
    let huge = "x".repeat(skiff_shim_container::MAX_DB_FILE as usize + 1);
    fs::write(root.path().join("etc/passwd"), huge).unwrap();
    assert!(matches!(
        resolve(root.path(), "0"),
        Err(UserError::TooLarge("/etc/passwd"))
    ));
}

fn non_root(run_as_user: Option<i64>) -> UserOverrides {
    UserOverrides {
        run_as_non_root: Some(true),
        run_as_user,
        ..Default::default()
    }
}

#[test]
fn run_as_non_root_uses_kubelets_messages() {
    let pod = "web_default(0f6c3a9e-1111-2222-3333-444455556666)";
    let check = |o: &UserOverrides, image_user: &str| {
        verify_run_as_non_root(o, image_user, pod, "app").map_err(|e| e.to_string())
    };
    assert_eq!(
        check(&non_root(None), "").unwrap_err(),
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: app)"
        )
    );
    assert_eq!(
        check(&non_root(None), "0:1000").unwrap_err(),
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: app)"
        )
    );
    assert_eq!(
        check(&non_root(None), "app").unwrap_err(),
        format!(
            "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: \"{pod}\", container: app)"
        )
    );
    assert_eq!(
        check(&non_root(Some(0)), "1000").unwrap_err(),
        format!("container's runAsUser breaks non-root policy (pod: \"{pod}\", container: app)")
    );
    assert!(check(&non_root(None), "1000").is_ok());
    assert!(check(&non_root(None), "1000:0").is_ok());
    // runAsUser decides, whatever the image says.
    assert!(check(&non_root(Some(1000)), "root").is_ok());
    // Without runAsNonRoot, root is fine.
    assert!(check(&UserOverrides::default(), "").is_ok());
}
