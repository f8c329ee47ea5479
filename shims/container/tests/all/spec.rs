use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator,
    PosixRlimitType, Spec,
};
use skiff_shim_container::{
    BindMount, DEFAULT_CAPABILITIES, NOFILE_LIMIT, Resources, SeccompProfile, SpecError,
    adapt_for_libcontainer, capabilities_from_mask, cpu_quota, cpu_shares, filter,
    runtime_default_seccomp, runtime_spec,
};

use crate::input;

fn caps(spec: &Spec) -> oci_spec::runtime::LinuxCapabilities {
    spec.process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap()
}

fn seccomp(spec: &Spec) -> Option<LinuxSeccomp> {
    spec.linux().as_ref().unwrap().seccomp().clone()
}

/// Whether the profile lets `name` through whatever its arguments.
fn always_allowed(profile: &LinuxSeccomp, name: &str) -> bool {
    profile.syscalls().as_ref().unwrap().iter().any(|s| {
        s.action() == LinuxSeccompAction::ScmpActAllow
            && s.args().as_ref().is_none_or(|a| a.is_empty())
            && s.names().iter().any(|n| n == name)
    })
}

/// Whether any rule names `name` at all (an argument-conditional allow, or an errno).
fn mentioned(profile: &LinuxSeccomp, name: &str) -> bool {
    profile
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .any(|s| s.names().iter().any(|n| n == name))
}

fn with_caps(add: &[&str], drop: &[&str]) -> Result<Spec, SpecError> {
    let mut i = input();
    i.security.capabilities_add = add.iter().map(|s| s.to_string()).collect();
    i.security.capabilities_drop = drop.iter().map(|s| s.to_string()).collect();
    runtime_spec(&i)
}

#[test]
fn default_capabilities_are_containerds_fourteen() {
    let spec = runtime_spec(&input()).unwrap();
    let c = caps(&spec);
    let bounding = c.bounding().clone().unwrap();
    assert_eq!(bounding.len(), 14);
    for cap in DEFAULT_CAPABILITIES {
        assert!(bounding.contains(&cap), "{cap} missing");
    }
    assert!(!bounding.contains(&Capability::SysAdmin));
    assert!(!bounding.contains(&Capability::NetAdmin));
    assert_eq!(c.effective().as_ref(), Some(&bounding));
    assert_eq!(c.permitted().as_ref(), Some(&bounding));
    assert!(c.inheritable().as_ref().unwrap().is_empty());
    assert!(c.ambient().as_ref().unwrap().is_empty());
}

#[test]
fn capabilities_add_and_drop_apply_with_or_without_prefix() {
    let spec = with_caps(&["NET_ADMIN", "cap_sys_time"], &["CAP_CHOWN", "kill"]).unwrap();
    let b = caps(&spec).bounding().clone().unwrap();
    assert!(b.contains(&Capability::NetAdmin));
    assert!(b.contains(&Capability::SysTime));
    assert!(!b.contains(&Capability::Chown));
    assert!(!b.contains(&Capability::Kill));
    assert!(b.contains(&Capability::Setuid));
    assert_eq!(b.len(), 14);
}

#[test]
fn drop_all_then_add_keeps_only_the_added() {
    let spec = with_caps(&["NET_BIND_SERVICE"], &["ALL"]).unwrap();
    let b = caps(&spec).bounding().clone().unwrap();
    assert_eq!(
        b.into_iter().collect::<Vec<_>>(),
        vec![Capability::NetBindService]
    );
}

#[test]
fn add_all_grants_everything_but_drop_all_wins() {
    let all = with_caps(&["ALL"], &["CHOWN"]).unwrap();
    let b = caps(&all).bounding().clone().unwrap();
    assert!(b.contains(&Capability::SysAdmin));
    assert!(b.contains(&Capability::SysModule));
    assert!(!b.contains(&Capability::Chown));
    assert_eq!(b.len(), 40);

    let none = with_caps(&["ALL"], &["ALL"]).unwrap();
    assert!(caps(&none).bounding().as_ref().unwrap().is_empty());
}

#[test]
fn unknown_capability_names_its_field() {
    let err = with_caps(&["NET_ADMIN", "FLY"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "securityContext.capabilities.add[1]: unknown capability \"FLY\""
    );
}

#[test]
fn runtime_default_seccomp_denies_namespace_and_mount_syscalls() {
    let spec = runtime_spec(&input()).unwrap();
    let profile = seccomp(&spec).expect("an unset profile means RuntimeDefault");
    assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(profile.default_errno_ret(), Some(1));
    for allowed in ["read", "write", "openat", "execve", "exit_group", "futex"] {
        assert!(
            always_allowed(&profile, allowed),
            "{allowed} should be allowed"
        );
    }
    for denied in [
        "unshare",
        "mount",
        "umount2",
        "setns",
        "bpf",
        "reboot",
        "kexec_load",
        "init_module",
        "open_by_handle_at",
        "keyctl",
        "add_key",
    ] {
        assert!(
            !always_allowed(&profile, denied),
            "{denied} should be denied"
        );
    }
    // The default set includes SYS_CHROOT, so chroot is allowed; SYS_PTRACE is not in it,
    // but moby allows ptrace from kernel 4.8 on anyway.
    assert!(always_allowed(&profile, "chroot"));
    assert!(always_allowed(&profile, "ptrace"));
    assert!(!always_allowed(&profile, "kcmp"));
}

#[test]
fn clone_is_allowed_only_without_namespace_flags_and_clone3_reports_enosys() {
    let spec = runtime_spec(&input()).unwrap();
    let profile = seccomp(&spec).unwrap();
    let rules = profile.syscalls().clone().unwrap();
    let clone = rules
        .iter()
        .find(|s| s.names() == &vec!["clone".to_string()])
        .expect("a clone rule");
    let arg = clone.args().as_ref().unwrap()[0];
    assert_eq!(arg.index(), 0);
    assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!(arg.value(), 0x7E02_0000);
    let clone3 = rules
        .iter()
        .find(|s| s.names() == &vec!["clone3".to_string()])
        .expect("a clone3 rule");
    assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(clone3.errno_ret(), Some(38));
    assert!(!always_allowed(&profile, "clone"));
}

#[test]
fn sys_admin_opens_the_conditional_syscalls() {
    let spec = with_caps(&["SYS_ADMIN"], &[]).unwrap();
    let profile = seccomp(&spec).unwrap();
    for name in ["unshare", "mount", "setns", "clone", "clone3"] {
        assert!(always_allowed(&profile, name), "{name} with SYS_ADMIN");
    }
    // The ENOSYS rule for clone3 is gone with SYS_ADMIN.
    assert!(
        !profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActErrno)
    );
}

#[test]
fn dropping_sys_chroot_removes_chroot_from_the_profile() {
    let spec = with_caps(&[], &["SYS_CHROOT"]).unwrap();
    assert!(!mentioned(&seccomp(&spec).unwrap(), "chroot"));
}

#[test]
fn arch_conditions_follow_the_architecture() {
    let caps = DEFAULT_CAPABILITIES.into_iter().collect();
    let amd64 = runtime_default_seccomp(&caps, "amd64").unwrap();
    assert!(always_allowed(&amd64, "arch_prctl"));
    assert!(always_allowed(&amd64, "modify_ldt"));
    assert!(!mentioned(&amd64, "set_tls"));
    assert_eq!(amd64.architectures().as_ref().unwrap().len(), 3);
    let arm64 = runtime_default_seccomp(&caps, "arm64").unwrap();
    assert!(!mentioned(&arm64, "arch_prctl"));
    assert!(always_allowed(&arm64, "set_tls"));
    assert_eq!(arm64.architectures().as_ref().unwrap().len(), 2);
    assert!(runtime_default_seccomp(&caps, "mips64").is_err());
}

#[test]
fn unconfined_has_no_seccomp_and_localhost_is_refused() {
    let mut i = input();
    i.security.seccomp = Some(SeccompProfile::Unconfined);
    assert!(seccomp(&runtime_spec(&i).unwrap()).is_none());
    i.security.seccomp = Some(SeccompProfile::Localhost("profiles/x.json".into()));
    let err = runtime_spec(&i).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("securityContext.seccompProfile:"),
        "{err}"
    );
}

#[test]
fn privileged_is_refused_with_its_field() {
    let mut i = input();
    i.security.privileged = true;
    let err = runtime_spec(&i).unwrap_err();
    assert!(matches!(err, SpecError::Privileged));
    assert!(err.to_string().starts_with("securityContext.privileged:"));
}

#[test]
fn masked_and_readonly_paths_are_containerds() {
    let spec = runtime_spec(&input()).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let masked = linux.masked_paths().clone().unwrap();
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/sys/firmware",
        "/proc/timer_list",
    ] {
        assert!(masked.iter().any(|m| m == p), "{p} not masked");
    }
    let ro = linux.readonly_paths().clone().unwrap();
    for p in ["/proc/sys", "/proc/sysrq-trigger", "/proc/bus"] {
        assert!(ro.iter().any(|m| m == p), "{p} not read-only");
    }
}

#[test]
fn namespaces_join_the_pods_network_and_make_the_rest() {
    let spec = runtime_spec(&input()).unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let find = |t| ns.iter().find(|n| n.typ() == t);
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        assert_eq!(find(t).expect("namespace").path(), &None, "{t:?} new");
    }
    assert_eq!(
        find(LinuxNamespaceType::Network).unwrap().path().as_deref(),
        Some(Path::new("/run/netns/pod1"))
    );
    assert!(find(LinuxNamespaceType::User).is_none());
    assert!(
        find(LinuxNamespaceType::Cgroup).is_none(),
        "no cgroupns on v1"
    );
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));

    let mut i = input();
    i.cgroup_v2 = true;
    i.ipcns = Some(PathBuf::from("/run/skiff/ipc/pod1"));
    let spec = runtime_spec(&i).unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(
        ns.iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
    );
    assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Ipc
        && n.path().as_deref() == Some(Path::new("/run/skiff/ipc/pod1"))));

    // An ephemeral container with a target joins the target's pid namespace, even in a
    // hostPID pod (whose target's namespace is the node's anyway).
    for host_pid in [false, true] {
        let mut i = input();
        i.host_pid = host_pid;
        i.pidns = Some(PathBuf::from("/proc/4242/ns/pid"));
        let spec = runtime_spec(&i).unwrap();
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let pids: Vec<_> = ns
            .iter()
            .filter(|n| n.typ() == LinuxNamespaceType::Pid)
            .collect();
        assert_eq!(pids.len(), 1, "{ns:?}");
        assert_eq!(
            pids[0].path().as_deref(),
            Some(Path::new("/proc/4242/ns/pid"))
        );
    }
}

#[test]
fn process_defaults() {
    let spec = runtime_spec(&input()).unwrap();
    let p = spec.process().as_ref().unwrap();
    let env = p.env().clone().unwrap();
    assert!(env.contains(&"GREETING=hello".to_string()));
    assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin:")));
    assert!(env.contains(&"HOSTNAME=web-0".to_string()));
    // The user's home from the image, as runc sets it.
    assert!(env.contains(&"HOME=/root".to_string()));
    assert!(!env.iter().any(|e| e.starts_with("TERM=")));
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), Some(false), "kubelet's default");
    assert_eq!(p.rlimits(), &None, "no nofile given: the runtime's stays");
    assert_eq!(p.oom_score_adj(), None);

    let mut i = input();
    i.env.push(("PATH".into(), "/app".into()));
    i.env.push(("HOME".into(), "/data".into()));
    i.tty = true;
    i.working_dir = Some("/srv".into());
    i.security.allow_privilege_escalation = Some(false);
    i.oom_score_adj = Some(-997);
    i.nofile = Some(NOFILE_LIMIT);
    i.user.uid = 1000;
    i.user.gid = 3000;
    i.user.additional_gids = vec![2000, 3000];
    let spec = runtime_spec(&i).unwrap();
    let p = spec.process().as_ref().unwrap();
    let env = p.env().clone().unwrap();
    assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    assert!(env.contains(&"PATH=/app".to_string()));
    // The container's own HOME wins.
    assert_eq!(
        env.iter()
            .filter(|e| e.starts_with("HOME="))
            .collect::<Vec<_>>(),
        ["HOME=/data"]
    );
    assert!(env.contains(&"TERM=xterm".to_string()));
    assert_eq!(p.cwd(), Path::new("/srv"));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.oom_score_adj(), Some(-997));
    let nofile = &p.rlimits().as_ref().unwrap()[0];
    assert_eq!(nofile.typ(), PosixRlimitType::RlimitNofile);
    assert_eq!((nofile.soft(), nofile.hard()), (1_048_576, 1_048_576));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 3000));
    assert_eq!(
        p.user().additional_gids().as_deref(),
        Some(&[2000, 3000][..])
    );
}

#[test]
fn bad_input_is_refused_with_its_field() {
    let mut i = input();
    i.working_dir = Some("srv".into());
    assert_eq!(
        runtime_spec(&i).unwrap_err().to_string(),
        "workingDir: \"srv\" is not an absolute path"
    );
    let mut i = input();
    i.argv.clear();
    assert!(matches!(
        runtime_spec(&i).unwrap_err(),
        SpecError::NoCommand
    ));
    let mut i = input();
    i.env.push(("A=B".into(), "x".into()));
    assert!(matches!(
        runtime_spec(&i).unwrap_err(),
        SpecError::EnvName(_)
    ));
}

fn bind(dest: &str, read_only: bool) -> BindMount {
    BindMount {
        source: PathBuf::from(format!("/var/lib/skiff/pods/p1/volumes{dest}")),
        destination: dest.into(),
        read_only,
    }
}

#[test]
fn mounts_are_containerds_then_the_volumes() {
    let mut i = input();
    i.mounts = vec![
        bind("/data/cache", false),
        bind("/data", true),
        bind("/etc/hosts", false),
        bind("/dev/shm", false),
    ];
    let spec = runtime_spec(&i).unwrap();
    let mounts = spec.mounts().clone().unwrap();
    let dests: Vec<String> = mounts
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/data",
            "/data/cache",
            "/etc/hosts",
            "/dev/shm",
        ]
    );
    let by_dest = |d: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    let opts = |d: &str| by_dest(d).options().clone().unwrap();
    assert!(opts("/data").contains(&"ro".to_string()));
    assert!(opts("/data").contains(&"rbind".to_string()));
    assert!(opts("/data/cache").contains(&"rw".to_string()));
    assert_eq!(by_dest("/data").typ().as_deref(), Some("bind"));
    assert!(opts("/sys").contains(&"ro".to_string()));
    assert!(opts("/sys/fs/cgroup").contains(&"ro".to_string()));
    assert!(
        opts("/dev/shm").contains(&"rw".to_string()),
        "the pod's /dev/shm replaces the default"
    );

    let shm = runtime_spec(&input()).unwrap().mounts().clone().unwrap();
    let shm = shm
        .iter()
        .find(|m| m.destination() == Path::new("/dev/shm"))
        .unwrap();
    assert!(
        shm.options()
            .as_ref()
            .unwrap()
            .contains(&"size=65536k".to_string())
    );
}

#[test]
fn mount_destinations_are_validated() {
    for (dest, reason) in [
        ("data", "must be an absolute path"),
        ("/data/../../etc", "must not contain '..'"),
        ("/", "must not be /"),
    ] {
        let mut i = input();
        i.mounts = vec![bind("/ok", false), bind(dest, false)];
        i.mounts[1].destination = dest.into();
        let err = runtime_spec(&i).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("volumeMounts[1].mountPath: {dest:?} {reason}")
        );
    }
}

#[test]
fn cpu_and_memory_follow_kubelets_arithmetic() {
    assert_eq!(cpu_shares(None), 2);
    assert_eq!(cpu_shares(Some(1)), 2);
    assert_eq!(cpu_shares(Some(250)), 256);
    assert_eq!(cpu_shares(Some(1000)), 1024);
    assert_eq!(cpu_shares(Some(1500)), 1536);
    assert_eq!(cpu_quota(500), 50_000);
    assert_eq!(cpu_quota(2000), 200_000);
    assert_eq!(cpu_quota(5), 1000);

    let mut i = input();
    i.resources = Resources {
        memory_limit: Some(128 << 20),
        cpu_request_millis: Some(250),
        cpu_limit_millis: Some(500),
        pids_limit: Some(1024),
    };
    let spec = runtime_spec(&i).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let r = linux.resources().as_ref().unwrap();
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(cpu.shares(), Some(256));
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.period(), Some(100_000));
    let mem = r.memory().as_ref().unwrap();
    assert_eq!(mem.limit(), Some(128 << 20));
    assert_eq!(mem.swap(), Some(128 << 20), "no swap beyond the limit");
    assert_eq!(r.pids().as_ref().unwrap().limit(), 1024);
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/skiff/pod1/c1"))
    );

    // A limit alone is also the request (the API server defaults it so).
    let mut i = input();
    i.resources.cpu_limit_millis = Some(2000);
    let spec = runtime_spec(&i).unwrap();
    let cpu = spec
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .as_ref()
        .unwrap()
        .cpu()
        .clone()
        .unwrap();
    assert_eq!(cpu.shares(), Some(2048));
    // BestEffort: minimal shares, no quota, no memory limit.
    let spec = runtime_spec(&input()).unwrap();
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(2));
    assert_eq!(r.cpu().as_ref().unwrap().quota(), None);
    assert!(r.memory().is_none());
}

#[test]
fn root_and_json_round_trip() {
    let mut i = input();
    i.security.read_only_root_filesystem = true;
    let spec = runtime_spec(&i).unwrap();
    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), Path::new("/run/skiff/bundles/c1/rootfs"));
    assert_eq!(root.readonly(), Some(true));
    let json = serde_json::to_string(&spec).unwrap();
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    assert!(json.contains("\"SCMP_ACT_ERRNO\""));
    assert!(json.contains("\"CAP_NET_BIND_SERVICE\""));
}

/// Runs `probe` in a child process under `program` (with no_new_privs, so no privilege is
/// needed to load it) and returns what the child returned.
fn under_filter(program: &[u8], probe: fn() -> i32) -> i32 {
    use nix::libc;
    // SAFETY: the child only makes raw syscalls and _exits.
    match unsafe { libc::fork() } {
        0 => {
            let code = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0
                && filter::load(program).is_ok();
            let code = if code { probe() } else { 250 };
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(libc::WIFEXITED(status), "probe died: {status:#x}");
            libc::WEXITSTATUS(status)
        }
    }
}

/// 0 if a syscall succeeded, else its errno.
fn errno_of(r: i64) -> i32 {
    if r < 0 {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(255)
    } else {
        0
    }
}

#[test]
fn the_compiled_runtime_default_filter_refuses_what_the_profile_refuses() {
    use nix::libc;
    let caps = DEFAULT_CAPABILITIES.into_iter().collect();
    let profile = runtime_default_seccomp(&caps, "amd64").unwrap();
    let program = filter::compile(&profile).unwrap();
    // Allowed: the process's own plain work, and fork (clone without namespace flags:
    // the masked comparison `(flags & 0x7E020000) == 0` read the OCI way).
    assert_eq!(
        under_filter(&program, || errno_of(unsafe { libc::getpid() } as i64)),
        0
    );
    assert_eq!(
        under_filter(&program, || {
            match unsafe { libc::fork() } {
                0 => unsafe { libc::_exit(0) },
                -1 => errno_of(-1),
                pid => {
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    0
                }
            }
        }),
        0
    );
    // Refused with EPERM: clone into a new namespace, unshare, a syscall off the list.
    assert_eq!(
        under_filter(&program, || errno_of(unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWUTS | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        })),
        libc::EPERM
    );
    assert_eq!(
        under_filter(&program, || errno_of(
            unsafe { libc::unshare(libc::CLONE_NEWUTS) } as i64
        )),
        libc::EPERM
    );
    assert_eq!(
        under_filter(&program, || errno_of(unsafe {
            libc::syscall(libc::SYS_acct, std::ptr::null::<libc::c_char>())
        })),
        libc::EPERM
    );
    // clone3 answers ENOSYS, so that libcs fall back to clone.
    assert_eq!(
        under_filter(&program, || errno_of(unsafe {
            libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0)
        })),
        libc::ENOSYS
    );
}

#[test]
fn libcontainer_gets_the_profile_in_an_annotation_and_a_capability_to_load_it() {
    let mut spec = runtime_spec(&input()).unwrap();
    let original = caps(&spec);
    adapt_for_libcontainer(&mut spec, Path::new("/bundle")).unwrap();
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    let annotations = spec.annotations().clone().unwrap();
    let profile: LinuxSeccomp =
        serde_json::from_str(&annotations[filter::PROFILE_ANNOTATION]).unwrap();
    assert!(always_allowed(&profile, "read"));
    // Without no_new_privs the process needs CAP_SYS_ADMIN to load its filter: effective
    // and permitted only, never bounding, and named so that it is dropped after loading.
    assert_eq!(
        annotations[filter::LOADING_CAPS_ANNOTATION],
        "CAP_SYS_ADMIN"
    );
    let adapted = caps(&spec);
    for set in [adapted.effective(), adapted.permitted()] {
        assert!(set.as_ref().unwrap().contains(&Capability::SysAdmin));
    }
    assert_eq!(adapted.bounding(), original.bounding());
    assert!(
        !adapted
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin)
    );

    // With no_new_privs it needs nothing.
    let mut i = input();
    i.security.allow_privilege_escalation = Some(false);
    let mut spec = runtime_spec(&i).unwrap();
    let original = caps(&spec);
    adapt_for_libcontainer(&mut spec, Path::new("/bundle")).unwrap();
    let annotations = spec.annotations().clone().unwrap();
    assert!(annotations.contains_key(filter::PROFILE_ANNOTATION));
    assert!(!annotations.contains_key(filter::LOADING_CAPS_ANNOTATION));
    assert_eq!(caps(&spec), original);
}

#[test]
fn capability_masks_match_the_kernels_numbering() {
    // Docker's well-known CapEff for its default set is the same 14 capabilities.
    let from_mask = capabilities_from_mask(0xa804_25fb);
    let default: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    assert_eq!(from_mask, default);
    assert_eq!(
        capabilities_from_mask(1 << 21)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![Capability::SysAdmin]
    );
}

#[test]
fn add_all_means_the_nodes_capabilities_when_given() {
    let mut i = input();
    i.security.capabilities_add = vec!["ALL".into()];
    i.security.capabilities_drop = vec!["NET_RAW".into()];
    // A node whose root lacks SYS_RESOURCE (bit 24).
    i.node_capabilities = Some(capabilities_from_mask(0x1ff_feff_ffff));
    let spec = runtime_spec(&i).unwrap();
    let b = caps(&spec).bounding().clone().unwrap();
    assert_eq!(b.len(), 39);
    assert!(!b.contains(&Capability::SysResource));
    assert!(!b.contains(&Capability::NetRaw));
    assert!(b.contains(&Capability::SysAdmin));
}

#[test]
fn on_cgroup_v1_libcontainer_binds_the_cgroup_tree_the_helper_assembles() {
    let mut spec = runtime_spec(&input()).unwrap();
    adapt_for_libcontainer(&mut spec, Path::new("/bundle")).unwrap();
    let cgroup = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/sys/fs/cgroup"))
        .unwrap()
        .clone();
    let annotations = spec.annotations().clone().unwrap_or_default();
    if skiff_shim_container::host_cgroup_v2() {
        assert_eq!(cgroup.typ().as_deref(), Some("cgroup"));
        assert!(!annotations.contains_key("dev.skiff.cgroup-view"));
        return;
    }
    assert_eq!(cgroup.typ().as_deref(), Some("bind"));
    assert_eq!(
        cgroup.source().as_deref(),
        Some(Path::new("/bundle/cgroup"))
    );
    let options = cgroup.options().clone().unwrap();
    for o in ["rbind", "ro", "nosuid", "noexec", "nodev"] {
        assert!(options.iter().any(|x| x == o), "{o} in {options:?}");
    }
    assert_eq!(annotations["dev.skiff.cgroup-view"], "/bundle/cgroup");
}

#[test]
fn libcontainer_joins_the_mount_namespace_its_helper_prepares() {
    let mut spec = runtime_spec(&input()).unwrap();
    adapt_for_libcontainer(&mut spec, Path::new("/bundle")).unwrap();
    let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let mount: Vec<_> = namespaces
        .iter()
        .filter(|n| n.typ() == LinuxNamespaceType::Mount)
        .collect();
    assert_eq!(mount.len(), 1);
    assert_eq!(
        mount[0].path().as_deref(),
        Some(Path::new("/proc/self/fd/1001"))
    );
    // The others are as runtime_spec made them.
    let original = runtime_spec(&input()).unwrap();
    let others = |ns: &[oci_spec::runtime::LinuxNamespace]| -> Vec<_> {
        ns.iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Mount)
            .cloned()
            .collect()
    };
    assert_eq!(
        others(&namespaces),
        others(
            original
                .linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
        )
    );
}

#[test]
fn the_helper_makes_the_mounts_that_belong_to_no_namespace_of_the_container() {
    let mut i = input();
    i.mounts = vec![
        bind("/data", false),
        bind("/etc/hosts", false),
        // Under /sys, which the container's init mounts after: left to libcontainer.
        bind("/sys/firmware/x", true),
        bind("/dev/termination-log", false),
    ];
    let original = runtime_spec(&i).unwrap();
    let mut spec = original.clone();
    adapt_for_libcontainer(&mut spec, Path::new("/bundle")).unwrap();
    let dests = |mounts: &[oci_spec::runtime::Mount]| -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    };
    let helper: Vec<oci_spec::runtime::Mount> =
        serde_json::from_str(&spec.annotations().as_ref().unwrap()["dev.skiff.helper-mounts"])
            .unwrap();
    // In the spec's order, as the spec has them.
    assert_eq!(
        dests(&helper),
        [
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/data",
            "/etc/hosts",
            "/dev/termination-log"
        ]
    );
    for m in &helper {
        let before = original
            .mounts()
            .iter()
            .flatten()
            .find(|o| o.destination() == m.destination())
            .unwrap();
        assert_eq!(m, before);
    }
    assert_eq!(
        dests(spec.mounts().as_ref().unwrap()),
        [
            "/proc",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/sys/firmware/x"
        ]
    );
}
