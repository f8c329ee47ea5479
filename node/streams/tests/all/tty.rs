//! `kubectl exec -it` on a real pseudo-terminal: kubectl only sends a tty request when its
//! stdin is a terminal. A small Python program (the `pty` module) plays the user's terminal:
//! it sets the window to 120x40, waits for the command's report, resizes the window to
//! 100x50 (the kernel sends kubectl SIGWINCH), waits for the resize report, then types two
//! lines.

use std::process::Command;
use std::time::Duration;

use crate::server::{TestServer, kubectl_path, wait_with_deadline};

const TERMINAL: &str = r#"
import fcntl, os, pty, select, struct, sys, termios
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    os.execv(argv[0], argv)
out = b""
step = 0
while True:
    r, _, _ = select.select([fd], [], [], 30)
    if not r:
        break
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    if step == 0 and b"size=" in out:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
        step = 1
    if step == 1 and b"resized 100x50" in out:
        os.write(fd, b"hello\rexit\r")
        step = 2
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

async fn exec_tty(version: &str) {
    let server = TestServer::start().await;
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(TERMINAL)
        .arg(kubectl_path(version))
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .arg("--cache-dir")
        .arg(server.dir().join("cache"))
        .args(["exec", "-it", "web", "--", "term"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        wait_with_deadline(cmd.spawn().unwrap(), Duration::from_secs(60))
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl {version}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("tty=true size=120x40"),
        "terminal showed: {text:?}"
    );
    assert!(text.contains("resized 100x50"), "terminal showed: {text:?}");
    assert!(text.contains("got hello\r\n"), "terminal showed: {text:?}");
    assert!(text.contains("got exit\r\n"), "terminal showed: {text:?}");
    let sizes = server.seen.lock().unwrap().sizes.clone();
    assert_eq!(
        sizes[0],
        skiff_streams::TerminalSize {
            width: 120,
            height: 40
        }
    );
}

macro_rules! for_versions {
    ($($name:ident),*) => {
        mod v1_33 { $( #[tokio::test] async fn $name() { super::$name("1.33").await } )* }
        mod v1_27 { $( #[tokio::test] async fn $name() { super::$name("1.27").await } )* }
    };
}

for_versions!(exec_tty);
