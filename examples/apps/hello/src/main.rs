//! A wasi:cli command: greets on stdout with its arguments and `$GREETING`, notes on stderr
//! that it is done, and exits 0. Built as a component (wasm32-wasip2) and as a core module
//! (wasm32-wasip1), so both of the shim's paths run the same program.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut line = format!("hello from skiff args={args:?}");
    if let Ok(greeting) = std::env::var("GREETING") {
        line.push_str(&format!(" GREETING={greeting}"));
    }
    // A failed write means the host closed our stdout; nothing useful is left to do.
    let _ = writeln!(std::io::stdout(), "{line}");
    let _ = writeln!(std::io::stderr(), "hello: done");
}
