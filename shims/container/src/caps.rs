//! The capability set: containerd's default with securityContext.capabilities applied.

use std::str::FromStr;

use oci_spec::runtime::{Capabilities, Capability};

use crate::SpecError;

/// What containerd (and CRI-O) grant a Kubernetes container that asks for nothing.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability Linux 6.x knows, by number: `ALL_CAPABILITIES[n]` is capability `n`.
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The capabilities in a kernel bit mask (as `/proc/<pid>/status` shows them in hex).
pub fn capabilities_from_mask(mask: u64) -> Capabilities {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, cap)| *cap)
        .collect()
}

/// The kernel's number for `cap` (its bit in a capability mask).
pub fn number(cap: Capability) -> Option<u32> {
    ALL_CAPABILITIES
        .iter()
        .position(|c| *c == cap)
        .map(|n| n as u32)
}

/// This process's bounding set: what a runtime it starts can grant at most, and so what
/// `add: [ALL]` means on this node (containerd likewise takes its own capabilities).
pub fn node_capabilities() -> std::io::Result<Capabilities> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(str::trim)
        .ok_or_else(|| std::io::Error::other("no CapBnd in /proc/self/status"))?;
    let mask = u64::from_str_radix(hex, 16).map_err(std::io::Error::other)?;
    Ok(capabilities_from_mask(mask))
}

/// A capability as Kubernetes names it: `NET_ADMIN`, also accepted as `CAP_NET_ADMIN` or in
/// lower case.
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).ok()
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The container's capability set, containerd's way: `add: [ALL]` grants `all` (the node's
/// capabilities, see [`node_capabilities`]; every capability if `None`), then
/// `drop: [ALL]` removes everything (so drop-all wins over add-all), then each named add,
/// then each named drop. So `add: [NET_ADMIN], drop: [ALL]` leaves only `NET_ADMIN`, and
/// `add: [ALL], drop: [CHOWN]` everything but `CHOWN`.
pub fn capabilities(
    add: &[String],
    drop: &[String],
    all: Option<&Capabilities>,
) -> Result<Capabilities, SpecError> {
    let named = |list: &[String], field: &str| -> Result<Vec<Capability>, SpecError> {
        list.iter()
            .enumerate()
            .filter(|(_, n)| !is_all(n))
            .map(|(i, n)| {
                parse_capability(n).ok_or_else(|| SpecError::UnknownCapability {
                    field: format!("securityContext.capabilities.{field}[{i}]"),
                    name: n.clone(),
                })
            })
            .collect()
    };
    let adds = named(add, "add")?;
    let drops = named(drop, "drop")?;
    let mut caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    if add.iter().any(|n| is_all(n)) {
        caps = match all {
            Some(all) => all.clone(),
            None => ALL_CAPABILITIES.into_iter().collect(),
        };
    }
    if drop.iter().any(|n| is_all(n)) {
        caps.clear();
    }
    caps.extend(adds);
    for cap in drops {
        caps.remove(&cap);
    }
    Ok(caps)
}
