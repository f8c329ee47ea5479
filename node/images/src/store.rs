//! The OCI image layout on disk: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! A blob appears under its digest only after its bytes were hashed, counted and fsynced in
//! a temp file under `ingest/` and renamed into place, so a crash or a bad download never
//! leaves a wrong or half blob under a digest. `index.json` is replaced by rename under
//! `index.lock`. Writers (pulls, imports) hold `gc.lock` shared while they add blobs that no
//! index entry names yet; removal holds it exclusively while it deletes unreferenced blobs,
//! so it never deletes a blob a pull has just written. Both locks are `flock`s, so a
//! `skiff image rm` in another process is safe too.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// The full reference an index entry stands for (containerd's annotation: the OCI
/// `ref.name` annotation holds only the tag).
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// What an index entry runs as: `wasm` or `linux` (Skiff's).
pub(crate) const ANNOTATION_RUN_AS: &str = "dev.skiff.run-as";
/// The blob holding a Wasm entrypoint read out of an image's rootfs layers.
pub(crate) const ANNOTATION_WASM_ENTRYPOINT: &str = "dev.skiff.wasm.entrypoint.digest";

/// Untrusted manifests and configs are refused beyond these sizes.
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4 << 20;
pub(crate) const MAX_CONFIG_SIZE: u64 = 4 << 20;

/// An OCI descriptor, as manifests and indexes hold them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest or an index: which one is told by `manifests` vs `layers`, since
/// `mediaType` is optional in OCI.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<Descriptor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<Descriptor>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.manifests.is_some()
            || matches!(
                self.media_type.as_deref(),
                Some(OCI_INDEX | DOCKER_MANIFEST_LIST)
            )
    }

    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, Error> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest {
                what: what.to_string(),
                reason: e.to_string(),
            })?;
        if manifest.schema_version != 2 {
            return Err(Error::InvalidManifest {
                what: what.to_string(),
                reason: format!("schemaVersion is {}, not 2", manifest.schema_version),
            });
        }
        if !manifest.is_index() && manifest.config.is_none() {
            return Err(Error::InvalidManifest {
                what: what.to_string(),
                reason: "an image manifest needs a config descriptor".into(),
            });
        }
        for d in manifest
            .config
            .iter()
            .chain(manifest.layers.iter().flatten())
            .chain(manifest.manifests.iter().flatten())
        {
            check_digest(&d.digest).map_err(|_| Error::InvalidManifest {
                what: what.to_string(),
                reason: format!("descriptor digest {:?} is not sha256:<64 hex>", d.digest),
            })?;
        }
        Ok(manifest)
    }

    pub fn layers(&self) -> &[Descriptor] {
        self.layers.as_deref().unwrap_or(&[])
    }
}

/// Only `sha256:` + 64 lower-case hex digits: a digest becomes a file name, and one from the
/// network must not name anything else.
pub(crate) fn check_digest(digest: &str) -> Result<&str, Error> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err(Error::InvalidDigest(digest.to_string())),
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// What an index entry runs as (see [`crate::RunAs`]); `None` for an entry recorded
/// before the store named kinds.
pub(crate) fn run_as_of(d: &Descriptor) -> Option<crate::RunAs> {
    match d.annotations.get(ANNOTATION_RUN_AS).map(String::as_str) {
        Some("wasm") => Some(crate::RunAs::Wasm),
        Some("linux") => Some(crate::RunAs::Linux),
        _ => None,
    }
}

impl Index {
    /// The entry of `reference` to run as `run_as` (any of its entries for `None`).
    pub fn find(&self, reference: &str, run_as: Option<crate::RunAs>) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.annotations.get(ANNOTATION_IMAGE_NAME).map(String::as_str) == Some(reference)
                && run_as.is_none_or(|want| run_as_of(d).is_none_or(|k| k == want))
        })
    }
}

/// The layout's directories and its locks.
pub(crate) struct Layout {
    pub root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Layout {
    pub fn open(root: PathBuf) -> Result<Self, Error> {
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&root, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _lock = Lock::exclusive(&root.join("index.lock"))?;
            if !index.exists() {
                let empty = Index {
                    schema_version: 2,
                    media_type: Some(OCI_INDEX.into()),
                    manifests: vec![],
                };
                write_atomic(&root, &index, &serde_json::to_vec_pretty(&empty).unwrap())?;
            }
        }
        Ok(Layout { root })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        let hex = check_digest(digest)?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Reads a whole blob, refusing one larger than `limit`.
    pub fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingBlob(digest.to_string()),
            _ => Error::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge {
                what: format!("blob {digest}"),
                limit,
            });
        }
        Ok(bytes)
    }

    pub fn new_blob(&self) -> Result<BlobWriter, Error> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = self
            .root
            .join("ingest")
            .join(format!("{}-{n}-{nanos}", std::process::id()));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(BlobWriter {
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            len: 0,
            blobs: self.root.join("blobs/sha256"),
        })
    }

    /// Stores bytes whose digest the caller expects (or computes, when `None`).
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&str>) -> Result<String, Error> {
        if let Some(digest) = expected
            && self.has_blob(digest)
        {
            let actual = sha256_digest(bytes);
            if actual != digest {
                return Err(Error::DigestMismatch {
                    digest: digest.to_string(),
                    actual,
                });
            }
            return Ok(digest.to_string());
        }
        let mut writer = self.new_blob()?;
        writer.write(bytes)?;
        writer.commit(expected, Some(bytes.len() as u64))
    }

    pub fn read_index(&self) -> Result<Index, Error> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Read-modify-write of `index.json` under its lock.
    pub fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> Result<T, Error> {
        let _lock = Lock::exclusive(&self.root.join("index.lock"))?;
        let mut index = self.read_index()?;
        let out = f(&mut index);
        let bytes = serde_json::to_vec_pretty(&index).expect("an index serializes");
        write_atomic(&self.root, &self.root.join("index.json"), &bytes)?;
        Ok(out)
    }

    pub fn gc_lock_shared(&self) -> Result<Lock, Error> {
        Lock::shared(&self.root.join("gc.lock"))
    }

    pub fn gc_lock_exclusive(&self) -> Result<Lock, Error> {
        Lock::exclusive(&self.root.join("gc.lock"))
    }

    /// Every blob in the store: (digest, path).
    pub fn all_blobs(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push((format!("sha256:{name}"), entry.path()));
        }
        Ok(out)
    }
}

/// Writes bytes to a temp file beside `path`, fsyncs it, and renames it over `path`.
fn write_atomic(root: &Path, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = root.join("ingest").join(format!(
        "{}.{}-{n}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    if let Some(parent) = tmp.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// A blob being written: hashed and counted as it goes, visible only after `commit`.
/// Dropped without a commit, its temp file is removed.
pub(crate) struct BlobWriter {
    tmp: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    len: u64,
    blobs: PathBuf,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        self.file
            .as_mut()
            .expect("written after commit")
            .write_all(bytes)
            .map_err(io_err(&self.tmp))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Checks the digest and size, then makes the blob visible under its digest.
    pub fn commit(mut self, expected: Option<&str>, size: Option<u64>) -> Result<String, Error> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if let Some(expected) = expected
            && actual != expected
        {
            return Err(Error::DigestMismatch {
                digest: expected.to_string(),
                actual,
            });
        }
        if let Some(size) = size
            && size != self.len
        {
            return Err(Error::SizeMismatch {
                digest: actual,
                expected: size,
                actual: self.len,
            });
        }
        let file = self.file.take().expect("committed once");
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        let hex = check_digest(&actual)?;
        let dest = self.blobs.join(hex);
        // Renaming over an existing blob is harmless: same digest, same bytes. Two pulls of
        // one image may both get here.
        fs::rename(&self.tmp, &dest).map_err(io_err(&dest))?;
        Ok(actual)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// An `flock` held until dropped.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    fn open(path: &Path) -> Result<File, Error> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))
    }

    pub fn exclusive(path: &Path) -> Result<Self, Error> {
        let file = Self::open(path)?;
        file.lock().map_err(io_err(path))?;
        Ok(Lock { _file: file })
    }

    pub fn shared(path: &Path) -> Result<Self, Error> {
        let file = Self::open(path)?;
        file.lock_shared().map_err(io_err(path))?;
        Ok(Lock { _file: file })
    }
}
