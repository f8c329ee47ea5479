//! The official Python client (PyPI `kubernetes`, in the venv `.ci/deps` makes) against
//! Skiff: `conformance/python/test_client.py` makes the client's everyday calls as its
//! documentation writes them (create, list with selectors and paging, watch, the three
//! patches, replace, delete with propagation, errors, ReplicationControllers and their
//! scale, DaemonSets), and the client validates every reply against its models.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_conformance::{Backend, Cluster, repo_root};

/// The venv's python: `$SKIFF_PYTHON`, else the one `.ci/deps` makes.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo_root().join("target/tools/python-client/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run .ci/deps, which makes the venv with the Python client",
        p.display()
    );
    p
}

pub fn python_client_everyday_calls(backend: Backend) {
    let cluster = Cluster::start(backend);
    // Output goes to a file: a pipe nobody reads while we wait could fill and stall it.
    let out_path = cluster.dir.path().join("python.out");
    let out = std::fs::File::create(&out_path).expect("python output file");
    let mut child = Command::new(python())
        .arg(repo_root().join("conformance/python/test_client.py"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .spawn()
        .expect("start the Python client's script");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the Python client's calls failed ({}):\n{output}\n--- skiff log ---\n{}",
        status.map_or("killed after 180 s".to_string(), |s| s.to_string()),
        cluster.log()
    );
}
