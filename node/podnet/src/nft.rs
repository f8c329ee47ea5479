//! Egress masquerade: one nftables table named after the bridge, loaded as one transaction;
//! and [`run`], which every nftables change of the node goes through.
//!
//! No maintained Rust crate speaks nftables' netlink protocol for NAT rules, so scripts go
//! to nftables' own library, `libnftables` (what the `nft` command is a front end of),
//! loaded at run time, with one context per network namespace kept open: a change then
//! costs its transaction. Through a new `nft` process each, it also cost starting the
//! process and, on closing its netlink socket, the kernel waiting out an RCU grace period
//! for the transaction's deleted objects (10 to 13 ms on this VM, measured with strace).
//! Without the library, the `nft` command does the same work.

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Error;

/// Replaces (or creates) the table atomically: declaring the table first makes the delete
/// succeed whether or not it existed.
/// Pods' traffic leaving the node is masqueraded unless it goes to a pod: the `cluster`
/// set holds every node's pod CIDR ([`set_cluster`]), this one's from the start.
pub(crate) async fn load_masquerade(table: &str, bridge: &str, cidr: Ipv4Net) -> Result<(), Error> {
    let script = format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tset cluster {{\n\
         \t\ttype ipv4_addr; flags interval; auto-merge;\n\
         \t\telements = {{ {cidr} }}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cidr} ip daddr != @cluster oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         }}\n"
    );
    run(&script).await
}

/// Makes the pod CIDRs of the cluster `cidrs`, in one transaction.
pub(crate) async fn set_cluster(table: &str, cidrs: &[Ipv4Net]) -> Result<(), Error> {
    let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    run(&format!(
        "flush set ip {table} cluster\nadd element ip {table} cluster {{ {} }}\n",
        list.join(", ")
    ))
    .await
}

/// Deletes table `table` of the `ip` family; a table that is not there is not an error.
pub async fn delete_table(table: &str) -> Result<(), Error> {
    run(&format!("table ip {table} {{}}\ndelete table ip {table}\n")).await
}

/// Runs `script` as one transaction: all of it or nothing. In the network namespace of the
/// calling thread, through libnftables where it loads, else by the `nft` command.
pub async fn run(script: &str) -> Result<(), Error> {
    // On this thread (its namespace is the one meant), without holding up the runtime's
    // other tasks where it has other workers to run them (a whole table takes a second).
    let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| library::run(script))
        }
        _ => library::run(script),
    };
    match result {
        Some(result) => result,
        None => run_command(script).await,
    }
}

/// Runs `script` through a new `nft -f -` process.
async fn run_command(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| Error::Nft(format!("write to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Nft(format!("wait for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// libnftables, opened with `dlopen` (it is part of every nftables install; its development
/// files, which linking would need, are not).
mod library {
    use std::collections::HashMap;
    use std::ffi::{CStr, CString, c_char, c_int, c_void};
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Mutex, OnceLock};

    use crate::Error;

    type New = unsafe extern "C" fn(u32) -> *mut c_void;
    type Free = unsafe extern "C" fn(*mut c_void);
    type Buffer = unsafe extern "C" fn(*mut c_void) -> c_int;
    type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
    type RunBuffer = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

    struct Api {
        new: New,
        free: Free,
        buffer_output: Buffer,
        buffer_error: Buffer,
        error_buffer: GetBuffer,
        run: RunBuffer,
    }

    /// A context: its netlink socket, opened in the namespace it was made in.
    struct Context(*mut c_void);

    // A context is used by one thread at a time (behind the mutex below).
    unsafe impl Send for Context {}

    impl Context {
        fn new(api: &Api) -> Option<Context> {
            // SAFETY: the functions are libnftables' own, looked up by their names and
            // declared with their C signatures (libnftables.h); 0 is NFT_CTX_DEFAULT.
            unsafe {
                let ctx = (api.new)(0);
                if ctx.is_null() {
                    return None;
                }
                (api.buffer_output)(ctx);
                (api.buffer_error)(ctx);
                Some(Context(ctx))
            }
        }

        fn run(&mut self, api: &Api, script: &CStr) -> Result<(), Error> {
            // SAFETY: as above; the error buffer stays valid until the next call on this
            // context, and is copied before then.
            // Reading the error buffer also empties it, after warnings too.
            unsafe {
                let ok = (api.run)(self.0, script.as_ptr()) == 0;
                let err = (api.error_buffer)(self.0);
                if ok {
                    return Ok(());
                }
                let text = if err.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(err).to_string_lossy().trim().to_string()
                };
                Err(Error::Nft(if text.is_empty() {
                    "nftables refused the change".to_string()
                } else {
                    text
                }))
            }
        }

        fn free(self, api: &Api) {
            // SAFETY: the context came from `nft_ctx_new` and is not used again.
            unsafe { (api.free)(self.0) }
        }
    }

    fn api() -> Option<&'static Api> {
        static API: OnceLock<Option<Api>> = OnceLock::new();
        API.get_or_init(|| {
            // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed,
            // so the symbols stay valid for the life of the process.
            unsafe {
                let handle = libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW);
                if handle.is_null() {
                    tracing::debug!("libnftables not found: nftables changes go through `nft`");
                    return None;
                }
                /// The function named `name`, as type `F` (a function pointer).
                unsafe fn sym<F: Copy>(handle: *mut c_void, name: &CStr) -> Option<F> {
                    // SAFETY: `F` is the symbol's C signature, pointer-sized.
                    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
                    (!p.is_null())
                        .then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
                }
                Some(Api {
                    new: sym(handle, c"nft_ctx_new")?,
                    free: sym(handle, c"nft_ctx_free")?,
                    buffer_output: sym(handle, c"nft_ctx_buffer_output")?,
                    buffer_error: sym(handle, c"nft_ctx_buffer_error")?,
                    error_buffer: sym(handle, c"nft_ctx_get_error_buffer")?,
                    run: sym(handle, c"nft_run_cmd_from_buffer")?,
                })
            }
        })
        .as_ref()
    }

    fn netns(path: &str) -> Option<u64> {
        std::fs::metadata(path).ok().map(|m| m.ino())
    }

    /// Runs `script` in the calling thread's network namespace; `None` when the library is
    /// not there. The context of the process's own namespace is kept; one made for another
    /// namespace (a thread that entered a pod's or a test's) is used once and freed, so
    /// that it holds no namespace alive.
    pub(super) fn run(script: &str) -> Option<Result<(), Error>> {
        static KEPT: OnceLock<Mutex<HashMap<u64, Context>>> = OnceLock::new();
        let api = api()?;
        let Ok(script) = CString::new(script) else {
            return Some(Err(Error::Nft("a script with a NUL byte".into())));
        };
        // The process's namespace, read once: only this call's thread may be elsewhere.
        static PROCESS: OnceLock<Option<u64>> = OnceLock::new();
        let here = netns("/proc/thread-self/ns/net")?;
        if *PROCESS.get_or_init(|| netns("/proc/self/ns/net")) != Some(here) {
            let mut ctx = Context::new(api)?;
            let result = ctx.run(api, &script);
            ctx.free(api);
            return Some(result);
        }
        let mut kept = KEPT
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let ctx = match kept.entry(here) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Context::new(api)?),
        };
        Some(ctx.run(api, &script))
    }
}

#[cfg(test)]
mod tests {
    /// In a network namespace of the test's own (root needed): a change applies whole, a
    /// refused one applies nothing and says why, on the kept context and a one-off one.
    #[test]
    fn changes_apply_whole_or_not_at_all_with_nftables_reason() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root)");
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                super::run("table ip t {\n set s {\n type ipv4_addr;\n }\n}\n")
                    .await
                    .expect("a table");
                let err = super::run(
                    "add element ip t s { 10.0.0.1 }\nadd element ip t other { 10.0.0.2 }\n",
                )
                .await
                .expect_err("no set named other");
                assert!(
                    err.to_string().contains("No such file or directory"),
                    "{err}"
                );
                let listed = std::process::Command::new("nft")
                    .args(["list", "set", "ip", "t", "s"])
                    .output()
                    .expect("nft");
                let listed = String::from_utf8_lossy(&listed.stdout);
                assert!(!listed.contains("10.0.0.1"), "half applied:\n{listed}");
                super::delete_table("t").await.expect("deleted");
                super::delete_table("t")
                    .await
                    .expect("deleting twice is no error");
            });
        })
        .join()
        .unwrap();
    }
}
