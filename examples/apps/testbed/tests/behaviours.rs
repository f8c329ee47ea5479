//! The testbed's behaviours, run as a native program: the node agent's tests rely on this
//! contract when they run the same code as a Wasm guest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn testbed(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_testbed"));
    command.args(args);
    command
}

fn run(args: &[&str]) -> Output {
    testbed(args).output().expect("testbed runs")
}

fn stdout(output: &Output) -> &str {
    std::str::from_utf8(&output.stdout).expect("utf-8 output")
}

/// A fresh directory under the system's temporary directory, removed by the caller's test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("testbed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn pi_prints_the_digits_asked_for() {
    let output = run(&["pi", "50"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        "3.14159265358979323846264338327950288419716939937510\n"
    );
    // Digits 762-767 are the Feynman point's six 9s, held back and then let out.
    let long = stdout(&run(&["pi", "770"])).trim().to_string();
    assert_eq!(&long[761..771], "3499999983", "{long}");
    assert_eq!(stdout(&run(&["pi", "0"])), "3\n");
}

#[test]
fn exit_uses_the_given_code() {
    for code in [0, 3, 42] {
        let output = run(&["exit", &code.to_string()]);
        assert_eq!(output.status.code(), Some(code));
        assert_eq!(stdout(&output), format!("exiting with {code}\n"));
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["nonsense"],
        &["exit"],
        &["exit", "x"],
        &["alloc", "-1"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("usage: testbed"));
    }
}

#[test]
fn echo_prints_each_argument() {
    let output = run(&["echo", "a b", "c"]);
    assert_eq!(stdout(&output), "a b\nc\n");
}

#[test]
fn print_env_is_sorted_and_complete() {
    let output = testbed(&["print-env"])
        .env_clear()
        .env("ZED", "last")
        .env("ALPHA", "first=1")
        .env("MIDDLE", "")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(stdout(&output), "ALPHA=first=1\nMIDDLE=\nZED=last\n");
}

#[test]
fn write_then_cat_and_ls_see_the_files() {
    let dir = scratch("files");
    let a = dir.join("a.txt");
    let b = dir.join("b.txt");
    std::fs::create_dir(dir.join("sub")).unwrap();

    let output = run(&["write", a.to_str().unwrap(), "first\n"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        format!("wrote 6 bytes to {}\n", a.display())
    );
    std::fs::write(&b, "second").unwrap();

    let output = run(&["cat", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(stdout(&output), "first\nsecond");

    let output = run(&["ls", dir.to_str().unwrap()]);
    assert_eq!(stdout(&output), "a.txt\nb.txt\nsub/\n");

    let missing = dir.join("missing");
    let output = run(&["cat", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("testbed: cannot read"));

    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn alloc_reports_each_mebibyte() {
    let output = run(&["alloc", "3"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        "allocated 1 MiB\nallocated 2 MiB\nallocated 3 MiB\ndone\n"
    );
}

#[test]
fn sleep_and_log_print_their_progress() {
    let output = run(&["sleep", "0.01"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "sleeping 0.01\nslept\n");

    let output = run(&["log", "3", "1"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "line 1\nline 2\nline 3\n");
}

#[test]
fn spin_runs_until_killed() {
    let mut child = testbed(&["spin"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "spinning\n");
    assert!(child.try_wait().unwrap().is_none(), "spin exited by itself");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serve_answers_http_requests() {
    let mut child = testbed(&["serve", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port: u16 = first
        .trim_end()
        .strip_prefix("listening on 0.0.0.0:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));

    for path in ["/", "/anything"] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\ntestbed\n"), "{answer}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
