//! `kubectl exec` and `kubectl attach` as a user runs them, with kubectl 1.33 (WebSocket v5)
//! and kubectl 1.27 (SPDY/3.1, remote command v4).

use crate::server::TestServer;

/// The protocol each kubectl version must have ended up speaking.
fn expected_protocol(version: &str) -> &'static str {
    match version {
        "1.27" | "1.28" | "1.29" => "v4.channel.k8s.io",
        _ => "v5.channel.k8s.io",
    }
}

async fn echo(version: &str) {
    let server = TestServer::start().await;
    let out = server
        .run(
            version,
            &["exec", "web", "--", "echo", "hello", "world"],
            None,
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl {version} failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello world\n");
    let upgrades = server.upgrades();
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0].1, expected_protocol(version));
}

async fn exit_code(version: &str) {
    let server = TestServer::start().await;
    let out = server
        .run(version, &["exec", "web", "--", "fail", "3"], None)
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(
        stderr.contains("something went wrong\n"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "stderr: {stderr}"
    );
    assert_eq!(out.stdout, b"");
}

async fn stdin_eof(version: &str) {
    let server = TestServer::start().await;
    let data = "data\nmore data\n".repeat(5000);
    let out = server
        .run(
            version,
            &["exec", "-i", "web", "--", "cat"],
            Some(data.as_bytes()),
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl {version} failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), data);
}

async fn stdin_not_read(version: &str) {
    // The command ignores a large stdin and exits: the session still ends.
    let server = TestServer::start().await;
    let data = vec![b'x'; 1 << 20];
    let out = server
        .run(
            version,
            &["exec", "-i", "web", "--", "echo", "done"],
            Some(&data),
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl {version} failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
}

async fn handler_error(version: &str) {
    let server = TestServer::start().await;
    let out = server
        .run(version, &["exec", "web", "--", "nosuch"], None)
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("Internal error occurred: unknown command [\"nosuch\"]"),
        "stderr: {stderr}"
    );
}

async fn attach(version: &str) {
    let server = TestServer::start().await;
    let out = server.run(version, &["attach", "web"], None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl {version} failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attached output\n");
    assert!(server.upgrades()[0].0.ends_with("/attach"));
}

async fn refused_before_upgrade(version: &str) {
    let server = TestServer::start().await;
    let out = server
        .run(version, &["exec", "noexec", "--", "echo", "hi"], None)
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "Error from server (BadRequest): container main in pod noexec runs under runtime \
         handler wasmtime, which does not support exec\n"
    );
}

/// kubectl 1.33 told not to use WebSocket falls back to SPDY, as kubectl 1.27 does.
#[tokio::test]
async fn v1_33_without_websockets_uses_spdy() {
    let server = TestServer::start().await;
    let mut cmd = server.kubectl("1.33", &["exec", "-i", "web", "--", "cat"]);
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    let out = tokio::task::spawn_blocking(move || {
        crate::server::run_with_input(&mut cmd, Some(b"over spdy\n".to_vec()))
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"over spdy\n");
    assert_eq!(server.upgrades()[0].1, "v4.channel.k8s.io");
}

macro_rules! for_versions {
    ($($name:ident),*) => {
        mod v1_33 { $( #[tokio::test] async fn $name() { super::$name("1.33").await } )* }
        mod v1_27 { $( #[tokio::test] async fn $name() { super::$name("1.27").await } )* }
    };
}

for_versions!(
    echo,
    exit_code,
    stdin_eof,
    stdin_not_read,
    handler_error,
    attach,
    refused_before_upgrade
);

/// Every installed kubectl between the two, on the common path.
mod other_versions {
    #[tokio::test]
    async fn echo_and_stdin_with_kubectl_1_28_to_1_32() {
        for version in ["1.28", "1.29", "1.30", "1.31", "1.32"] {
            super::echo(version).await;
            super::stdin_eof(version).await;
        }
    }
}
