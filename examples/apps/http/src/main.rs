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
    eprintln!("http-server: listening on 0.0.0.0:{port}");
    http::native::serve(listener)
}

#[cfg(target_os = "wasi")]
fn main() {
    eprintln!("http-server: on Wasm the app is the library, a wasi:http component");
    std::process::exit(2);
}
