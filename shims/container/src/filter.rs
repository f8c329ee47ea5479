//! Seccomp filters compiled once per profile and loaded by the container's own process just
//! before it executes its program.
//!
//! libcontainer (youki) 0.7 compiles a spec's seccomp profile with libseccomp inside every
//! container's init process: for moby's `RuntimeDefault` profile that is about 7 ms of
//! a container's 15 ms create-start-delete on the machines Skiff is measured on, every
//! time (crun caches its compiled filters for the same reason). libcontainer cannot be
//! handed a compiled program, so the profile leaves the spec it reads (see
//! [`crate::adapt_for_libcontainer`]) and travels in an annotation; the helper compiles it
//! once per distinct profile ([`compile`]) and gives libcontainer an [`Executor`] that
//! loads the program ([`load`]) and then executes the process as libcontainer's own
//! executor does.
//!
//! Where it is loaded: the executor runs after libcontainer has set the process's final
//! capabilities. Without `no_new_privs` (Kubernetes' default: privilege escalation allowed)
//! the kernel only lets a process holding `CAP_SYS_ADMIN` load a filter, so the spec
//! libcontainer reads grants `CAP_SYS_ADMIN` in the effective and permitted sets (never in
//! the bounding set) and the executor gives it up as soon as the filter is loaded, before
//! anything of the container's runs. (The exec would shed it anyway: it is outside the
//! bounding set, which caps what any process there can hold after an exec.) What the
//! container's program starts with is exactly the spec's capability sets, under the spec's
//! filter (tests check both, for the first process and exec'd ones).

use std::collections::HashMap;
use std::sync::Arc;

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::libc;
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec};

/// The annotation carrying the container's seccomp profile (OCI JSON) past libcontainer.
pub const PROFILE_ANNOTATION: &str = "dev.skiff.seccomp-profile";
/// The annotation naming the capabilities (`CAP_SYS_ADMIN`) the spec grants only so that
/// the process can load its filter; the executor drops them right after.
pub const LOADING_CAPS_ANNOTATION: &str = "dev.skiff.seccomp-loading-capabilities";

/// A compiled filter: the kernel's `struct sock_filter` array, as libseccomp exports it.
pub type Program = Arc<[u8]>;

/// Compiles `profile` to a BPF program, as runc, crun and libcontainer build it (the same
/// libseccomp calls), without loading it anywhere.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>, String> {
    let errno = |e: Option<u32>| e.map(|e| e as i32).unwrap_or(libc::EPERM);
    let action = |a: LinuxSeccompAction, e: Option<u32>| -> Result<ScmpAction, String> {
        Ok(match a {
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                ScmpAction::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
            LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
            LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno(e)),
            LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
                u16::try_from(errno(e)).map_err(|_| "seccomp: SCMP_ACT_TRACE errno too large")?,
            ),
            LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
            LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
            LinuxSeccompAction::ScmpActNotify => {
                return Err("seccomp: SCMP_ACT_NOTIFY is not supported".into());
            }
        })
    };
    let fail = |what: &str, e: libseccomp::error::SeccompError| format!("seccomp: {what}: {e}");
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| fail("new filter", e))?;
    // A binary tree of syscall numbers instead of libseccomp's default chain of
    // comparisons: the same decisions, reached in a few steps instead of hundreds. The
    // kernel walks the program once for every syscall number of every architecture when a
    // filter is attached (to cache the always-allowed ones), with interrupts off: for
    // moby's profile as a chain that was most of the filter's cost in each container.
    ctx.set_ctl_optimize(2)
        .map_err(|e| fail("binary tree optimization", e))?;
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err("seccomp: filter flags are not supported".into());
    }
    for arch in profile.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(*arch)?)
            .map_err(|e| fail("architecture", e))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        // The OCI reading of each comparison, as runc applies it: for SCMP_CMP_MASKED_EQ,
        // `(arg & value) == valueTwo`.
        let args: Vec<_> = rule.args().iter().flatten().collect();
        let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let comparisons: Vec<ScmpArgCompare> = args
            .iter()
            .map(|a| {
                let (op, datum) = match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
                    LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
                    LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
                    LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
                    LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
                    LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => (
                        ScmpCompareOp::MaskedEqual(a.value()),
                        a.value_two().unwrap_or(0),
                    ),
                };
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        // libseccomp compares each argument once per rule; two comparisons of one argument
        // become two rules (either matching), as runc does.
        let groups: Vec<Vec<ScmpArgCompare>> = if indexes.len() < comparisons.len() {
            comparisons.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![comparisons]
        };
        for name in rule.names() {
            // A name this libseccomp does not know is a syscall this kernel's ABI lacks.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            for group in &groups {
                ctx.add_rule_conditional(act, sc, group)
                    .map_err(|e| fail(&format!("rule for {name}"), e))?;
            }
        }
    }
    let file = memfd()?;
    ctx.export_bpf(&file).map_err(|e| fail("export", e))?;
    use std::io::{Read, Seek};
    let mut file = std::fs::File::from(file);
    let mut program = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut program))
        .map_err(|e| format!("seccomp: reading the exported filter: {e}"))?;
    if program.is_empty() || program.len() % 8 != 0 {
        return Err(format!(
            "seccomp: exported filter has {} bytes",
            program.len()
        ));
    }
    Ok(program)
}

fn memfd() -> Result<std::os::fd::OwnedFd, String> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor returned is ours.
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "seccomp: memfd_create: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: just created, owned by no one else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn scmp_arch(arch: Arch) -> Result<ScmpArch, String> {
    Ok(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        other => return Err(format!("seccomp: architecture {other:?} is not supported")),
    })
}

/// Loads `program` into the calling thread, to hold from now on for it and whatever it
/// executes. Needs `no_new_privs` set or `CAP_SYS_ADMIN` held.
pub fn load(program: &[u8]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len() / 8)
            .map_err(|_| std::io::Error::other("seccomp filter too long"))?,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `len` sock_filter entries that live through the call; the
    // kernel copies them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The filters this helper has compiled, by profile.
#[derive(Default)]
pub struct Cache(HashMap<String, Program>);

impl Cache {
    /// The program for the profile in `json` (an OCI `LinuxSeccomp`), compiled on first use.
    pub fn get(&mut self, json: &str) -> Result<Program, String> {
        if let Some(p) = self.0.get(json) {
            return Ok(p.clone());
        }
        let profile: LinuxSeccomp = serde_json::from_str(json)
            .map_err(|e| format!("annotation {PROFILE_ANNOTATION}: {e}"))?;
        let program: Program = compile(&profile)?.into();
        // Profiles differ only by capability set and node; a handful at most. Still bounded.
        if self.0.len() >= 64 {
            self.0.clear();
        }
        self.0.insert(json.to_string(), program.clone());
        Ok(program)
    }
}

/// What the executor does before the process runs: the filter to load, and the capability
/// numbers held only for loading it.
#[derive(Clone, Default)]
pub struct Plan {
    pub program: Option<Program>,
    pub loading_caps: Vec<u32>,
}

impl Plan {
    /// The plan a spec's annotations describe, its program from `cache`.
    pub fn from_spec(spec: &Spec, cache: &mut Cache) -> Result<Plan, String> {
        let Some(annotations) = spec.annotations() else {
            return Ok(Plan::default());
        };
        let program = match annotations.get(PROFILE_ANNOTATION) {
            Some(json) => Some(cache.get(json)?),
            None => None,
        };
        let loading_caps = match annotations.get(LOADING_CAPS_ANNOTATION) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|name| {
                    crate::parse_capability(name)
                        .and_then(crate::caps::number)
                        .ok_or_else(|| format!("annotation {LOADING_CAPS_ANNOTATION}: {name}"))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Plan {
            program,
            loading_caps,
        })
    }
}

/// libcontainer's executor, preceded by the [`Plan`].
#[derive(Clone)]
pub struct FilteredExecutor(pub Plan);

impl Executor for FilteredExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(program) = &self.0.program {
            load(program)
                .map_err(|e| ExecutorError::Other(format!("loading the seccomp filter: {e}")))?;
        }
        if !self.0.loading_caps.is_empty() {
            drop_capabilities(&self.0.loading_caps).map_err(|e| {
                ExecutorError::Other(format!("dropping the seccomp loading capabilities: {e}"))
            })?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Removes capability numbers `caps` from this thread's effective and permitted sets
/// (lowering them needs no privilege).
fn drop_capabilities(caps: &[u32]) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for its two data words.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    for &cap in caps {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        if word < 2 {
            data[word].effective &= !bit;
            data[word].permitted &= !bit;
        }
    }
    // SAFETY: capset with the sets just read, lowered.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
