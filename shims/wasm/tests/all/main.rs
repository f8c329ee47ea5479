//! The Wasm shim against the example guests (`examples/build.sh` builds them; `.ci/test`
//! runs it first).

mod command;
mod http;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use skiff_shim::{ContainerSpec, LogSink, Mount, Stream, Workload};
use skiff_shim_wasm::{WasmConfig, WasmShim};

pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/build")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run examples/build.sh first",
        path.display()
    );
    path
}

/// Output captured per stream.
#[derive(Default)]
pub struct Captured(Mutex<Vec<(Stream, Vec<u8>)>>);

impl LogSink for Captured {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        self.0.lock().unwrap().push((stream, bytes.to_vec()));
    }
}

impl Captured {
    pub fn text(&self, stream: Stream) -> String {
        let chunks = self.0.lock().unwrap();
        let bytes: Vec<u8> = chunks
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, b)| b.clone())
            .collect();
        String::from_utf8(bytes).unwrap()
    }
}

#[allow(clippy::new_without_default)]
pub struct Fixture {
    pub shim: WasmShim,
    pub dir: tempfile::TempDir,
}

#[allow(clippy::new_without_default)]
impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shim = WasmShim::new(WasmConfig::new(dir.path().join("cache"))).unwrap();
        Fixture { shim, dir }
    }

    pub fn spec(&self, file: &str, argv: &[&str]) -> (ContainerSpec, Arc<Captured>) {
        let logs = Arc::new(Captured::default());
        let path = guest(file);
        let spec = ContainerSpec {
            id: format!("pod/{file}"),
            name: "main".into(),
            workload: Workload::Wasm {
                digest: format!("sha256:test-{file}"),
                media_type: "application/wasm".into(),
                path,
            },
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            working_dir: None,
            mounts: vec![],
            ports: vec![],
            cpu_request_millis: None,
            security: Default::default(),
            memory_limit: None,
            cpu_limit_millis: None,
            stdin: false,
            tty: false,
            pid_namespace: None,
            logs: logs.clone(),
        };
        (spec, logs)
    }

    pub fn volume(&self, name: &str, read_only: bool, at: &str) -> (PathBuf, Mount) {
        let host = self.dir.path().join("volumes").join(name);
        std::fs::create_dir_all(&host).unwrap();
        (
            host.clone(),
            Mount {
                host_path: host,
                container_path: at.into(),
                read_only,
            },
        )
    }
}
