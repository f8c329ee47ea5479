//! The HTTP example as a native server: listens on 0.0.0.0:$PORT (default 8080) and serves
//! the same app as the Wasm component. Build it for `x86_64-unknown-linux-musl` for a static
//! binary. On Wasm targets the app is the library (a wasi:http component), not this binary.

#[cfg(not(target_os = "wasi"))]
fn main() -> std::process::ExitCode {
    use std::net::{Ipv4Addr, TcpListener};
    use std::process::ExitCode;

    let port = match std::env::var("PORT") {
        Err(_) => 8080,
        Ok(port) => match port.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("http-server: PORT must be a port number, not {port:?}");
                return ExitCode::from(2);
            }
        },
    };
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("http-server: cannot listen on port {port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    exit_on_termination();
    eprintln!("http-server: listening on 0.0.0.0:{port}");
    http::native::serve(listener)
}

/// Exits at once on SIGTERM and SIGINT. As a container's first process the server is the init
/// of its PID namespace, where the kernel drops signals the process has no handler for: without
/// this, stopping the container would wait out the grace period and end in SIGKILL. Nothing
/// needs flushing (answers are written whole), so the handler only calls `_exit`, which is
/// safe in a signal handler. Declared here rather than through the libc crate: two functions
/// of the C library std links anyway.
#[cfg(not(target_os = "wasi"))]
fn exit_on_termination() {
    use std::ffi::c_int;

    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;
    unsafe extern "C" {
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        fn _exit(status: c_int) -> !;
    }
    extern "C" fn on_signal(_: c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(0) }
    }
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: the handler only calls an async-signal-safe function. signal fails only for
        // an invalid signal number, and these two are valid.
        unsafe { signal(signum, on_signal) };
    }
}

#[cfg(target_os = "wasi")]
fn main() {
    eprintln!("http-server: on Wasm the app is the library, a wasi:http component");
    std::process::exit(2);
}
