//! Where libcontainer (youki) 0.7 reads a spec differently from runc and crun, the spec is
//! adjusted before it is handed over, so that the container gets what the spec means.

use oci_spec::runtime::Spec;

use crate::SpecError;

/// Adjusts `spec` for libcontainer 0.7:
/// * masked seccomp comparisons get their two values swapped (see
///   [`crate::seccomp_for_libcontainer`]);
/// * `noNewPrivileges: false` is left out: libcontainer decides when to load the seccomp
///   filter by whether the field is present, not by its value, and with `false` present it
///   loads the filter after dropping the capabilities it needs without no_new_privs, so the
///   container fails to start ("failed to load seccomp context"). Absent means false.
pub fn for_libcontainer(spec: &mut Spec) -> Result<(), SpecError> {
    if let Some(linux) = spec.linux_mut()
        && let Some(seccomp) = linux.seccomp().clone()
    {
        linux.set_seccomp(Some(crate::seccomp_for_libcontainer(&seccomp)?));
    }
    if let Some(process) = spec.process_mut()
        && process.no_new_privileges() == Some(false)
    {
        process.set_no_new_privileges(None);
    }
    Ok(())
}
