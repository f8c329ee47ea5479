//! `skiff image` beside a running `skiff up`: an image imported the obvious way (no flags,
//! the same user) runs as a pod without a registry, and a pod whose image is nowhere says
//! where the node looked. They need root (pod networks).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, free_port, repo_root};

use crate::node::{container, phase, wait_pod};

fn example_guest(file: &str) -> std::path::PathBuf {
    let path = repo_root().join("examples/build").join(file);
    assert!(
        path.exists(),
        "{} is missing: run examples/build.sh",
        path.display()
    );
    path
}

/// `skiff image import <file> <reference>` as `command` runs it; the digest it printed.
fn import(mut command: std::process::Command, file: &Path, reference: &str) -> String {
    let out = command
        .args(["image", "import"])
        .arg(file)
        .arg(reference)
        .output()
        .expect("run skiff image import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "skiff image import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `<normalized reference> <digest>`
    let (stored, digest) = stdout.trim().split_once(' ').expect("reference and digest");
    assert_eq!(stored, format!("docker.io/library/{reference}"));
    digest.to_string()
}

/// The message of the pod's first event with `reason`, waited for (a minute at most).
fn event(k: &Kubectl, pod: &str, reason: &str) -> String {
    let start = Instant::now();
    loop {
        let events = k.json(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason={reason}"),
        ]);
        if let Some(message) = events["items"][0]["message"].as_str() {
            return message.to_string();
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "pod {pod} has no {reason} event:\n{}",
                k.run(&["describe", "pod", pod]).stdout
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn waiting_reason(p: &Value) -> &str {
    container(p)["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
}

/// The README's walk-through: `skiff image import` with no flags reaches the node of a
/// `skiff up` started with none, whose pods then run the image with `imagePullPolicy:
/// Never`; the running node follows the store as another process changes it.
#[test]
fn an_imported_wasm_file_runs_as_a_pod() {
    let cluster = Cluster::start_with_node_in_home(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    let digest = import(cluster.skiff(), &example_guest("hello.wasm"), "hello:v1");
    let out = cluster
        .skiff()
        .args(["image", "ls"])
        .output()
        .expect("skiff image ls");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("docker.io/library/hello:v1") && listed.contains(&digest),
        "skiff image ls:\n{listed}"
    );

    k.ok(&[
        "run",
        "hello",
        "--image=hello:v1",
        "--image-pull-policy=Never",
        "--restart=Never",
    ]);
    let p = wait_pod(&k, "hello", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(container(&p)["imageID"], digest.as_str());
    assert_eq!(
        k.ok(&["logs", "hello"]),
        "hello from skiff args=[]\nhello: done\n"
    );
    assert_eq!(
        event(&k, "hello", "Pulled"),
        "Container image \"hello:v1\" already present on machine"
    );

    // Another file under the same tag, imported while the node runs: the next pod gets it,
    // not the image the node resolved before.
    let replaced = import(cluster.skiff(), &example_guest("hello-p1.wasm"), "hello:v1");
    assert_ne!(replaced, digest);
    k.ok(&[
        "run",
        "hello-again",
        "--image=hello:v1",
        "--image-pull-policy=Never",
        "--restart=Never",
    ]);
    let p = wait_pod(&k, "hello-again", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(container(&p)["imageID"], replaced.as_str());
    assert_eq!(
        k.ok(&["logs", "hello-again"]),
        "hello from skiff args=[]\nhello: done\n"
    );
}

/// An image neither stored nor pullable: the events name the store the node looked in
/// and, for a pull, the registry; a pod waiting on `Never` runs once the image is imported.
#[test]
fn a_missing_image_says_where_the_node_looked() {
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    let store = cluster.data_dir.join("images");

    k.ok(&[
        "run",
        "never",
        "--image=later:v1",
        "--image-pull-policy=Never",
        "--restart=Never",
    ]);
    let expected = format!(
        "Container image \"later:v1\" is not present with pull policy of Never: \
         docker.io/library/later:v1 is not in the image store {}",
        store.display()
    );
    assert_eq!(event(&k, "never", "ErrImageNeverPull"), expected);
    let p = wait_pod(&k, "never", "waiting on ErrImageNeverPull", |p| {
        waiting_reason(p) == "ErrImageNeverPull"
    });
    assert_eq!(
        container(&p)["state"]["waiting"]["message"],
        expected.as_str()
    );

    // Nothing listens on this registry's port.
    let registry = format!("127.0.0.1:{}", free_port());
    let image = format!("{registry}/skiff/nowhere:v1");
    k.ok(&[
        "run",
        "pull",
        &format!("--image={image}"),
        "--restart=Never",
    ]);
    let failed = event(&k, "pull", "Failed");
    let looked = format!(
        "Failed to pull image \"{image}\": {image} is not in the image store {}, and its pull from registry {registry} failed: ",
        store.display()
    );
    assert!(failed.starts_with(&looked), "{failed}");
    wait_pod(&k, "pull", "backing off", |p| {
        waiting_reason(p) == "ImagePullBackOff"
    });

    // Imported now, through SKIFF_DATA_DIR, into the store the node looked in.
    let mut command = cluster.skiff();
    command.env("SKIFF_DATA_DIR", &cluster.data_dir);
    import(command, &example_guest("hello.wasm"), "later:v1");
    wait_pod(&k, "never", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(
        k.ok(&["logs", "never"]),
        "hello from skiff args=[]\nhello: done\n"
    );
}
