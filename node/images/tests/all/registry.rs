//! A real registry (Debian's `docker-registry`, CNCF distribution) on a free loopback port,
//! and a way to push hand-made images to it with oci-client.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use sha2::Digest;

pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub storage: tempfile::TempDir,
    _config: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// A registry that wants HTTP basic auth from `user`/`password` (an htpasswd file with
    /// a bcrypt hash, made by apache2-utils' `htpasswd`).
    pub fn start_with_basic_auth(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(Some((user, password)))
    }

    fn start_with(basic: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let storage = tempfile::tempdir()?;
        let config_dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            storage.path().display()
        );
        if let Some((user, password)) = basic {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("running htpasswd (Debian apache2-utils; .ci/deps installs it)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let file = config_dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = config_dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // It logs every 404 at error level; keep that out of the test output.
            .stderr(std::fs::File::create(
                config_dir.path().join("registry.log"),
            )?)
            .spawn()
            .context("starting docker-registry (Debian docker-registry; .ci/deps installs it)")?;
        let registry = Registry {
            child: Some(child),
            addr,
            storage,
            _config: config_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&registry.addr).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {}", registry.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Where the registry keeps a blob's bytes (distribution's filesystem driver layout).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .path()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn client() -> oci_client::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Pushes an OCI manifest with these config and layers, as raw JSON; returns its digest.
pub async fn push_image(
    reference: &str,
    config: (&str, &[u8]),
    layers: &[(&str, &[u8])],
) -> anyhow::Result<String> {
    push_manifest(reference, OCI_MANIFEST, config, layers).await
}

/// Pushes a manifest of media type `media_type` (OCI or Docker schema 2).
pub async fn push_manifest(
    reference: &str,
    media_type: &str,
    config: (&str, &[u8]),
    layers: &[(&str, &[u8])],
) -> anyhow::Result<String> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config.0, config.1),
        "layers": layers.iter().map(|(t, b)| descriptor(t, b)).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest)?;
    push_raw(
        reference,
        std::iter::once(config.1).chain(layers.iter().map(|(_, b)| *b)),
        &bytes,
        media_type,
    )
    .await
}

/// Pushes an OCI image index over OCI manifests already in the repository.
pub async fn push_index(
    reference: &str,
    entries: &[(&str, &str, &str, usize)], // (digest, os, architecture, size)
) -> anyhow::Result<String> {
    push_list(reference, OCI_INDEX, OCI_MANIFEST, entries).await
}

/// Pushes an index of media type `media_type` (an OCI index or a Docker manifest list)
/// over manifests of type `entry_type` already in the repository.
pub async fn push_list(
    reference: &str,
    media_type: &str,
    entry_type: &str,
    entries: &[(&str, &str, &str, usize)], // (digest, os, architecture, size)
) -> anyhow::Result<String> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries.iter().map(|(digest, os, arch, size)| serde_json::json!({
            "mediaType": entry_type,
            "digest": digest, "size": size,
            "platform": {"os": os, "architecture": arch},
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&index)?;
    push_raw(reference, std::iter::empty(), &bytes, media_type).await
}

async fn push_raw<'a>(
    reference: &str,
    blobs: impl Iterator<Item = &'a [u8]>,
    manifest: &[u8],
    media_type: &str,
) -> anyhow::Result<String> {
    let client = client();
    let oref: oci_client::Reference = reference.parse()?;
    client
        .store_auth_if_needed(oref.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    for blob in blobs {
        client
            .push_blob(&oref, blob.to_vec(), &sha256(blob))
            .await?;
    }
    client
        .push_manifest_raw(&oref, manifest.to_vec(), http_header(media_type))
        .await?;
    Ok(sha256(manifest))
}

fn http_header(value: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(value).unwrap()
}

/// A tar.gz layer holding these files (path, bytes) and symlinks (path, target).
pub fn tar_gz(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, *bytes).unwrap();
    }
    for (path, target) in symlinks {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_entry_type(tar::EntryType::Symlink);
        tar.append_link(&mut header, path, target).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Every blob file in a store.
pub fn blobs_in(store_root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(store_root.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    out.sort();
    out
}
