//! A real etcd on this machine for tests and benchmarks: started on free loopback ports with
//! a temporary data directory, killed when dropped. It runs the Debian `etcd-server` binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `etcd-server` package puts the binary.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

pub struct LocalEtcd {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Starts `binary` (or [`ETCD_BINARY`]) and waits until it accepts connections.
    pub fn start(binary: Option<&Path>) -> std::io::Result<LocalEtcd> {
        let binary = binary.unwrap_or(Path::new(ETCD_BINARY));
        if !binary.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is missing: install a real etcd (Debian: apt-get install etcd-server)",
                    binary.display()
                ),
            ));
        }
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(binary)
            .arg("--name=local")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=local={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let etcd = LocalEtcd {
            child,
            endpoint,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("etcd did not come up; see {}", etcd.log_path().display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `127.0.0.1:<port>`, as `--store etcd://` takes it.
    pub fn host_port(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// A store on this etcd, once it answers.
    pub async fn connect(&self) -> crate::Result<crate::etcd::EtcdStore> {
        use crate::Store;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match crate::etcd::EtcdStore::connect(std::slice::from_ref(&self.endpoint)).await {
                Ok(store) if store.current_revision().await.is_ok() => return Ok(store),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(_) => return Err(crate::Error::Backend("etcd does not answer".into())),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
