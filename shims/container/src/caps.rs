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

/// Every capability Linux 6.x knows, which `add: ["ALL"]` grants.
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

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

/// The container's capability set, containerd's way: `add: [ALL]` grants everything, then
/// `drop: [ALL]` removes everything (so drop-all wins over add-all), then each named add,
/// then each named drop. So `add: [NET_ADMIN], drop: [ALL]` leaves only `NET_ADMIN`, and
/// `add: [ALL], drop: [CHOWN]` everything but `CHOWN`.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Capabilities, SpecError> {
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
        caps = ALL_CAPABILITIES.into_iter().collect();
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
