//! Tiny in-process "commands" the exec handler runs: just enough to show what kubectl sees.

use std::sync::{Arc, Mutex};

use skiff_streams::{ExecOutcome, ExecStreams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::Seen;

/// How long a command takes to start, as a process does. client-go's WebSocket executor
/// (kubectl 1.30 and later) starts reading the connection before it has made its streams
/// (stderr last), and drops output for a stream it has not made yet ("Unknown stream id 2,
/// discarding message"); a real process is never that quick, an in-process fake can be.
const STARTUP: std::time::Duration = std::time::Duration::from_millis(20);

pub async fn run(argv: Vec<String>, mut s: ExecStreams, seen: Arc<Mutex<Seen>>) -> ExecOutcome {
    tokio::time::sleep(STARTUP).await;
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["echo", words @ ..] => {
            let line = format!("{}\n", words.join(" "));
            if let Some(out) = &mut s.stdout {
                let _ = out.write_all(line.as_bytes()).await;
            }
            ExecOutcome::Exited(0)
        }
        ["cat"] => {
            let (Some(stdin), Some(stdout)) = (&mut s.stdin, &mut s.stdout) else {
                return ExecOutcome::Error("cat needs stdin and stdout".into());
            };
            match tokio::io::copy(stdin, stdout).await {
                Ok(_) => ExecOutcome::Exited(0),
                Err(e) => ExecOutcome::Error(format!("cat: {e}")),
            }
        }
        ["fail", code] => {
            if let Some(err) = &mut s.stderr {
                let _ = err.write_all(b"something went wrong\n").await;
            }
            ExecOutcome::Exited(code.parse().unwrap_or(1))
        }
        // Reports whether it has a tty and the terminal size, then every resize, and echoes
        // stdin lines until the line "exit".
        ["term"] => {
            let size = s.resize.recv().await;
            if let Some(size) = size {
                seen.lock().unwrap().sizes.push(size);
            }
            let out = s.stdout.as_mut().unwrap();
            let report = match size {
                Some(sz) => format!("tty={} size={}x{}\r\n", s.tty, sz.width, sz.height),
                None => format!("tty={} size=none\r\n", s.tty),
            };
            let _ = out.write_all(report.as_bytes()).await;
            let Some(stdin) = &mut s.stdin else {
                return ExecOutcome::Exited(0);
            };
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                tokio::select! {
                    Some(sz) = s.resize.recv() => {
                        let msg = format!("resized {}x{}\r\n", sz.width, sz.height);
                        let _ = out.write_all(msg.as_bytes()).await;
                    }
                    n = stdin.read(&mut byte) => {
                        if !matches!(n, Ok(1)) {
                            break;
                        }
                        if byte[0] == b'\r' || byte[0] == b'\n' {
                            let text = String::from_utf8_lossy(&line).to_string();
                            let _ = out.write_all(format!("got {text}\r\n").as_bytes()).await;
                            if text == "exit" {
                                break;
                            }
                            line.clear();
                        } else {
                            line.push(byte[0]);
                        }
                    }
                }
            }
            ExecOutcome::Exited(0)
        }
        ["attach"] => {
            if let Some(out) = &mut s.stdout {
                let _ = out.write_all(b"attached output\n").await;
            }
            ExecOutcome::Exited(0)
        }
        _ => ExecOutcome::Error(format!("unknown command {argv:?}")),
    }
}
