//! The `RuntimeDefault` seccomp profile.
//!
//! The data is moby's default profile (`profiles/seccomp/default.json`, the profile
//! containerd and CRI-O also ship as `RuntimeDefault`): an allow list over a default of
//! `EPERM`, with rules that apply only on some architectures or only when the container holds
//! (or lacks) a capability. Those conditions are resolved here, once, against the
//! container's final bounding set and the node's architecture, exactly as dockerd and
//! containerd resolve them when they write a container's spec; the runtime then only sees
//! plain OCI rules.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::SpecError;

/// `EPERM`: what a syscall outside the allow list returns.
const EPERM: u32 = 1;
/// `ENOSYS`: what `clone3` returns without `CAP_SYS_ADMIN`, so that libcs fall back to
/// `clone`, whose namespace flags the profile can inspect.
const ENOSYS: u32 = 38;
/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: `clone` is allowed only when none of them is set.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `AF_VSOCK`: the one socket family the profile refuses.
const AF_VSOCK: u64 = 40;

/// A condition on the container: every listed capability held, or the node's architecture
/// (moby's names, Go's `GOARCH` spelling: `amd64`, `arm64`) among those listed.
#[derive(Clone, Copy)]
struct Condition {
    caps: &'static [Capability],
    arches: &'static [&'static str],
}

const ALWAYS: Condition = Condition {
    caps: &[],
    arches: &[],
};

#[derive(Clone, Copy)]
struct Arg {
    index: usize,
    value: u64,
    op: LinuxSeccompOperator,
}

#[derive(Clone, Copy)]
struct Rule {
    names: &'static [&'static str],
    /// `None` allows; `Some(errno)` fails the call with it.
    errno: Option<u32>,
    /// A condition on one argument (the profile never needs more than one).
    arg: Option<Arg>,
    /// The rule applies only if this holds (an empty condition always holds).
    includes: Condition,
    /// The rule does not apply if any part of this holds.
    excludes: Condition,
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        errno: None,
        arg: None,
        includes: ALWAYS,
        excludes: ALWAYS,
    }
}

const fn allow_with_cap(names: &'static [&'static str], caps: &'static [Capability]) -> Rule {
    Rule {
        includes: Condition { caps, arches: &[] },
        ..allow(names)
    }
}

const fn allow_on(names: &'static [&'static str], arches: &'static [&'static str]) -> Rule {
    Rule {
        includes: Condition { caps: &[], arches },
        ..allow(names)
    }
}

const fn personality(persona: u64) -> Rule {
    Rule {
        arg: Some(Arg {
            index: 0,
            value: persona,
            op: LinuxSeccompOperator::ScmpCmpEq,
        }),
        ..allow(&["personality"])
    }
}

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// The profile, in its order. moby's one kernel-version condition (`ptrace` and
/// `process_vm_*` from 4.8, when seccomp stopped being bypassable through ptrace) is taken as
/// met: Skiff needs 5.6 or later for `openat2` anyway.
const RULES: &[Rule] = &[
    allow(ALLOWED),
    allow(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    Rule {
        arg: Some(Arg {
            index: 0,
            value: AF_VSOCK,
            op: LinuxSeccompOperator::ScmpCmpNe,
        }),
        ..allow(&["socket"])
    },
    // Plain Linux, UNAME26, READ_IMPLIES_EXEC, both, and the query value 0xffffffff.
    personality(0),
    personality(8),
    personality(0x20000),
    personality(0x20008),
    personality(0xFFFF_FFFF),
    allow_on(&["sync_file_range2", "swapcontext"], &["ppc64le"]),
    allow_on(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        &["arm", "arm64"],
    ),
    allow_on(&["arch_prctl"], &["amd64", "x32"]),
    allow_on(&["modify_ldt"], &["amd64", "x32", "x86"]),
    allow_on(
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        &["s390", "s390x"],
    ),
    allow_on(&["riscv_flush_icache"], &["riscv64"]),
    allow_with_cap(&["open_by_handle_at"], &[Capability::DacReadSearch]),
    allow_with_cap(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        &[Capability::SysAdmin],
    ),
    Rule {
        arg: Some(Arg {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
        }),
        excludes: Condition {
            caps: &[Capability::SysAdmin],
            arches: &["s390", "s390x"],
        },
        ..allow(&["clone"])
    },
    // s390 passes clone's flags second.
    Rule {
        arg: Some(Arg {
            index: 1,
            value: CLONE_NAMESPACE_FLAGS,
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
        }),
        includes: Condition {
            caps: &[],
            arches: &["s390", "s390x"],
        },
        excludes: Condition {
            caps: &[Capability::SysAdmin],
            arches: &[],
        },
        ..allow(&["clone"])
    },
    Rule {
        errno: Some(ENOSYS),
        excludes: Condition {
            caps: &[Capability::SysAdmin],
            arches: &[],
        },
        ..allow(&["clone3"])
    },
    allow_with_cap(&["reboot"], &[Capability::SysBoot]),
    allow_with_cap(&["chroot"], &[Capability::SysChroot]),
    allow_with_cap(
        &["delete_module", "init_module", "finit_module"],
        &[Capability::SysModule],
    ),
    allow_with_cap(&["acct"], &[Capability::SysPacct]),
    allow_with_cap(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        &[Capability::SysPtrace],
    ),
    allow_with_cap(&["iopl", "ioperm"], &[Capability::SysRawio]),
    allow_with_cap(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &[Capability::SysTime],
    ),
    allow_with_cap(&["vhangup"], &[Capability::SysTtyConfig]),
    allow_with_cap(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        &[Capability::SysNice],
    ),
    allow_with_cap(&["syslog"], &[Capability::Syslog]),
    allow_with_cap(&["bpf"], &[Capability::Bpf]),
    allow_with_cap(&["perf_event_open"], &[Capability::Perfmon]),
];

/// The node's architecture in moby's (Go's) spelling, which the profile's conditions use.
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The seccomp architectures a filter covers on `arch`: the native one and the compat ABIs
/// a process there can also enter the kernel through.
fn filter_arches(arch: &str) -> Result<Vec<Arch>, SpecError> {
    match arch {
        "amd64" => Ok(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ]),
        "arm64" => Ok(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
        other => Err(SpecError::SeccompArch(other.to_string())),
    }
}

/// moby's `RuntimeDefault` profile for a container whose bounding set is `caps`, on `arch`
/// (`amd64` or `arm64`, see [`native_arch`]).
pub fn runtime_default(caps: &Capabilities, arch: &str) -> Result<LinuxSeccomp, SpecError> {
    let holds = |cond: &Condition| cond.caps.iter().all(|c| caps.contains(c));
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in RULES {
        let included = holds(&rule.includes)
            && (rule.includes.arches.is_empty() || rule.includes.arches.contains(&arch));
        let excluded = rule.excludes.caps.iter().any(|c| caps.contains(c))
            || rule.excludes.arches.contains(&arch);
        if !included || excluded {
            continue;
        }
        let mut syscall = LinuxSyscallBuilder::default()
            .names(rule.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .action(match rule.errno {
                None => LinuxSeccompAction::ScmpActAllow,
                Some(_) => LinuxSeccompAction::ScmpActErrno,
            });
        if let Some(errno) = rule.errno {
            syscall = syscall.errno_ret(errno);
        }
        if let Some(a) = rule.arg {
            let arg = LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(a.value)
                .op(a.op)
                .build()?;
            syscall = syscall.args(vec![arg]);
        }
        syscalls.push(syscall.build()?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(filter_arches(arch)?)
        .syscalls(syscalls)
        .build()?)
}
