//! Durability under kill -9: every write acknowledged to a caller survives.
//!
//! The test binary runs itself again as a child (switched by an environment variable)
//! that writes from several tasks and prints each acknowledged key; the parent kills it
//! mid-storm, reopens the store and looks for every printed key.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_store::Store;
use skiff_store::embedded::EmbeddedStore;

const CHILD_DIR: &str = "SKIFF_STORE_CRASH_CHILD_DIR";
const WRITERS: usize = 6;

/// The child's body, run only by `acknowledged_writes_survive_kill` (ignored otherwise, so
/// a normal run does not count it as a test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the child process of acknowledged_writes_survive_kill"]
async fn crash_child_writes_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&dir)).unwrap());
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/crash/{writer}/{i}");
                store
                    .create(&key, Bytes::from(format!("value-{writer}-{i}")))
                    .await
                    .unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {key} value-{writer}-{i}").unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_writes_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, acked) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = line.strip_prefix("ACK ") {
                let (key, value) = ack.split_once(' ').unwrap();
                if lines.send((key.to_owned(), value.to_owned())).is_err() {
                    break;
                }
            }
        }
    });
    // Let the storm run until enough writes are acknowledged, then kill it mid-write.
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.len() < 2000 && Instant::now() < deadline {
        if let Ok(ack) = acked.recv_timeout(Duration::from_millis(100)) {
            acknowledged.push(ack);
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    // Lines printed before the kill were acknowledged too.
    acknowledged.extend(acked.try_iter());
    assert!(
        acknowledged.len() >= 100,
        "child acknowledged only {} writes",
        acknowledged.len()
    );

    let store = EmbeddedStore::open(dir.path()).unwrap();
    for (key, value) in &acknowledged {
        let kv = store.get(key).await.unwrap();
        assert_eq!(
            kv.map(|kv| kv.value),
            Some(Bytes::from(value.clone())),
            "acknowledged write of {key} lost"
        );
    }
    // The revision counter survived too: no later write reuses a revision.
    let rev = store.current_revision().await.unwrap();
    assert!(rev >= acknowledged.len() as i64);
    let next = store
        .create("/crash/after", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(next.mod_revision, rev + 1);
}
