//! hello's output, run as a native program: the same contract holds for its Wasm builds.

use std::process::Command;

#[test]
fn greets_with_args_and_greeting() {
    let output = Command::new(env!("CARGO_BIN_EXE_hello"))
        .args(["one", "two words"])
        .env("GREETING", "hi there")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "hello from skiff args=[\"one\", \"two words\"] GREETING=hi there\n"
    );
    assert_eq!(String::from_utf8(output.stderr).unwrap(), "hello: done\n");
}

#[test]
fn leaves_out_an_unset_greeting() {
    let output = Command::new(env!("CARGO_BIN_EXE_hello"))
        .env_remove("GREETING")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "hello from skiff args=[]\n"
    );
}
