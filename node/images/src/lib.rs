//! The node's image store: an OCI image layout on disk, shared by the Wasm and container
//! shims, filled from OCI registries (through `oci-client`), `.wasm` files or OCI layouts.
//!
//! An image is stored as its manifest, config and layer blobs, named in `index.json` by its
//! normalized reference. What the shims need is decided once, when the image arrives:
//! [`Content::Wasm`] points at the blob of the module or component (a Wasm layer, or the
//! `.wasm` entrypoint read out of the rootfs layers), [`Content::Layers`] lists the layers a
//! container runtime unpacks. Every blob is verified against its digest and size before it
//! becomes visible; see `store.rs` for the crash and concurrency rules.

mod auth;
mod reference;
mod registry;
mod snapshot;
mod store;
mod unpack;
mod wasm;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use auth::{RegistryAuth, auth_from_docker_config};
pub use reference::normalize_reference;
pub use snapshot::{Rootfs, Snapshots};
pub use unpack::{UnpackLimits, UnpackStats, unpack_layer, unpack_stream};
pub use wasm::{
    RUNWASI_LAYER_MEDIA_TYPE, SPIN_LAYER_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE,
};

use store::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ANNOTATION_RUN_AS, ANNOTATION_WASM_ENTRYPOINT,
    Descriptor, Layout, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, Manifest, OCI_MANIFEST,
};

/// Errors of the image store and the registry client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not present and imagePullPolicy is Never")]
    NotPresentNeverPull(String),
    #[error("image {0:?} is not in the local store")]
    NotFound(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error(
        "not authorized by registry {registry}: check the credentials (imagePullSecrets, --username/--password)"
    )]
    Unauthorized { registry: String },
    #[error("digest mismatch for blob {digest}: its bytes hash to {actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("size mismatch for blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("invalid digest {0:?}: expected sha256: followed by 64 lower-case hex digits")]
    InvalidDigest(String),
    #[error("invalid manifest {what}: {reason}")]
    InvalidManifest { what: String, reason: String },
    #[error("invalid image config {digest}: {reason}")]
    InvalidConfig { digest: String, reason: String },
    #[error("blob {0} is missing from the local store")]
    MissingBlob(String),
    #[error("{0} is not a WebAssembly module or component (no \\0asm header)")]
    NotWasm(String),
    #[error("layer {digest} is refused: entry {entry:?}: {reason}")]
    HostileLayer {
        digest: String,
        entry: String,
        reason: String,
    },
    #[error("layer {digest} is not a readable tar archive: {reason}")]
    BadLayer { digest: String, reason: String },
    #[error("image index of {reference} has no manifest for {wanted} (it has: {available})")]
    NoMatchingPlatform {
        reference: String,
        /// The platforms that would do, as `os/architecture`.
        wanted: String,
        available: String,
    },
    #[error("invalid OCI layout {path}: {reason}")]
    InvalidLayout { path: PathBuf, reason: String },
    #[error("invalid .dockerconfigjson: {0}")]
    DockerConfig(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("registry request for {reference} failed: {source}")]
    Registry {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("background task failed: {0}")]
    Task(String),
}

/// Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always resolve the reference at the registry (the blobs already here are reused).
    Always,
    /// Use the local image when there is one; pull otherwise.
    IfNotPresent,
    /// Only ever use the local image.
    Never,
}

/// What a node runs an image as: a Wasm component or module, or a Linux container. An
/// image index may offer both (a wasi/wasm and a linux entry); the runtime a pod asks for
/// picks one, and the store keeps one image per reference and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunAs {
    Wasm,
    Linux,
}

impl RunAs {
    fn name(self) -> &'static str {
        match self {
            RunAs::Wasm => "wasm",
            RunAs::Linux => "linux",
        }
    }
}

impl PullPolicy {
    /// Kubernetes' default: `Always` for `:latest` or an untagged reference, else `IfNotPresent`.
    pub fn default_for(reference: &str) -> PullPolicy {
        match normalize_reference(reference) {
            Ok(r) if r.contains('@') => PullPolicy::IfNotPresent,
            Ok(r) if r.ends_with(":latest") => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The normalized reference (`docker.io/library/nginx:latest`).
    pub reference: String,
    /// The digest of the image manifest (for an image index: of the platform's manifest).
    pub digest: String,
    pub config: ImageConfig,
    pub content: Content,
}

/// The parts of an image config that decide how a container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `8080/tcp`, as the config writes them.
    pub exposed_ports: Vec<String>,
    pub os: String,
    pub architecture: String,
}

/// What a shim runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Wasm {
        /// The blob file of the module or component.
        path: PathBuf,
        digest: String,
        media_type: String,
        /// A component (`\0asm` version 0x0d, layer 1) rather than a core module.
        component: bool,
    },
    /// A standard image: its layers, lowest first.
    Layers(Vec<Layer>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub path: PathBuf,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// One line of `skiff image ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub reference: String,
    pub digest: String,
    /// Manifest, config and layers, as the manifest declares them.
    pub size: u64,
    pub wasm: bool,
}

/// The local image store. Cheap to clone; every clone works on the same directory, as does
/// another process opening it.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    /// When each image was last resolved for a container (this process's memory, like the
    /// kubelet's): image garbage collection removes the least recently used first.
    last_used: std::sync::Arc<std::sync::Mutex<HashMap<String, std::time::SystemTime>>>,
    /// Images described since `index.json` last changed: every container start resolves
    /// its image, and the index, manifest, config and content are not read again while
    /// the index stays the same file (it is only ever replaced by a rename, and blobs are
    /// immutable and removed only after their index entry).
    described: std::sync::Arc<std::sync::Mutex<Described>>,
}

#[derive(Debug, Default)]
struct Described {
    /// `index.json`'s device, inode, modification time and size when `images` was made.
    index: Option<(u64, u64, i64, i64, u64)>,
    images: HashMap<(String, Option<RunAs>), Image>,
}

/// The kubelet's image garbage collection thresholds: above `high_percent` of the disk in
/// use, unused images are removed, least recently used first, until `low_percent` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_percent: u8,
    pub low_percent: u8,
}

impl Default for GcPolicy {
    /// The kubelet's defaults.
    fn default() -> Self {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
        }
    }
}

impl ImageStore {
    /// Opens (creating if needed) the OCI image layout at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        Layout::open(root.clone())?;
        Ok(ImageStore {
            root,
            last_used: Default::default(),
            described: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The node's unpacked layers and container root filesystems, kept beside the layout.
    pub fn snapshots(&self) -> Result<Snapshots, Error> {
        Snapshots::open(self.root.join("snapshots"))
    }

    fn layout(&self) -> Layout {
        Layout {
            root: self.root.clone(),
        }
    }

    /// Makes `reference` present locally as `policy` asks, and returns it; from an image
    /// index, the wasi/wasm entry when there is one, else linux on this machine.
    pub async fn pull(
        &self,
        reference: &str,
        auth: &RegistryAuth,
        policy: PullPolicy,
    ) -> Result<Image, Error> {
        self.pull_as(reference, auth, policy, None).await
    }

    /// As [`ImageStore::pull`], for a runtime that runs images as `run_as`: from an image
    /// index, that kind's entry only, and a stored image of the other kind is not taken
    /// for it (except with `Never`, when it is all there is: the runtime then says why it
    /// cannot run it).
    pub async fn pull_as(
        &self,
        reference: &str,
        auth: &RegistryAuth,
        policy: PullPolicy,
        run_as: Option<RunAs>,
    ) -> Result<Image, Error> {
        let normalized = normalize_reference(reference)?;
        match policy {
            PullPolicy::Never => {
                let found = match self.get_as(&normalized, run_as)? {
                    Some(image) => Some(image),
                    None => self.get(&normalized)?,
                };
                return found.ok_or(Error::NotPresentNeverPull(reference.to_string()));
            }
            PullPolicy::IfNotPresent => {
                if let Some(image) = self.get_as(&normalized, run_as)? {
                    return Ok(image);
                }
            }
            PullPolicy::Always => {}
        }
        registry::pull(&self.layout(), &normalized, auth, run_as).await
    }

    /// Whether an image is stored under `reference` (reads the index only).
    pub fn has(&self, reference: &str) -> bool {
        self.has_as(reference, None)
    }

    /// Whether an image to run as `run_as` is stored under `reference`.
    pub fn has_as(&self, reference: &str, run_as: Option<RunAs>) -> bool {
        let Ok(normalized) = normalize_reference(reference) else {
            return false;
        };
        self.layout()
            .read_index()
            .is_ok_and(|index| index.find(&normalized, run_as).is_some())
    }

    /// The image stored under `reference`, without asking any registry.
    pub fn get(&self, reference: &str) -> Result<Option<Image>, Error> {
        self.get_as(reference, None)
    }

    /// The image to run as `run_as` stored under `reference` (any kind for `None`).
    pub fn get_as(&self, reference: &str, run_as: Option<RunAs>) -> Result<Option<Image>, Error> {
        let normalized = normalize_reference(reference)?;
        self.last_used
            .lock()
            .expect("last used")
            .insert(normalized.clone(), std::time::SystemTime::now());
        let key = (normalized.clone(), run_as);
        use std::os::unix::fs::MetadataExt;
        let index_path = self.root.join("index.json");
        let stamp = std::fs::metadata(&index_path)
            .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
            .ok();
        {
            let mut described = self.described.lock().expect("described");
            if described.index != stamp || stamp.is_none() {
                described.index = stamp;
                described.images.clear();
            } else if let Some(image) = described.images.get(&key) {
                return Ok(Some(image.clone()));
            }
        }
        let layout = self.layout();
        let index = layout.read_index()?;
        let Some(entry) = index.find(&normalized, run_as) else {
            return Ok(None);
        };
        let image = describe(&layout, &normalized, entry)?;
        let mut described = self.described.lock().expect("described");
        if described.index == stamp {
            described.images.insert(key, image.clone());
        }
        Ok(Some(image))
    }

    /// Stores a `.wasm` file as the CNCF Wasm OCI artifact (config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm` layer) under `reference`.
    pub fn import_wasm(&self, wasm: &Path, reference: &str) -> Result<Image, Error> {
        let normalized = normalize_reference(reference)?;
        let kind = wasm::file_wasm_kind(wasm)?
            .ok_or_else(|| Error::NotWasm(wasm.display().to_string()))?;
        let layout = self.layout();
        let _gc = layout.gc_lock_shared()?;
        let mut writer = layout.new_blob()?;
        let io = |source| Error::Io {
            path: wasm.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(wasm).map_err(io)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n])?;
        }
        let layer_size = writer.len();
        let layer_digest = writer.commit(None, None)?;
        let os = match kind {
            wasm::WasmKind::Component => "wasip2",
            wasm::WasmKind::Module => "wasip1",
        };
        // No creation time, so importing one file twice gives one digest.
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "wasm",
            "os": os,
            "layerDigests": [layer_digest],
        }))
        .expect("json");
        let config_digest = layout.put_blob(&config, None)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: Some(WASM_CONFIG_MEDIA_TYPE.into()),
            config: Some(Descriptor {
                media_type: WASM_CONFIG_MEDIA_TYPE.into(),
                digest: config_digest,
                size: config.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
                artifact_type: None,
            }),
            layers: Some(vec![Descriptor {
                media_type: WASM_LAYER_MEDIA_TYPE.into(),
                digest: layer_digest,
                size: layer_size,
                annotations: BTreeMap::new(),
                platform: None,
                artifact_type: None,
            }]),
            manifests: None,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).expect("json");
        let digest = layout.put_blob(&bytes, None)?;
        record(
            &layout,
            &normalized,
            &digest,
            bytes.len() as u64,
            OCI_MANIFEST,
        )
    }

    /// Stores the image of an OCI image layout directory (as `skopeo copy ... oci:DIR` or
    /// `docker buildx --output type=oci` write them) under `reference`. With several images
    /// in the layout, the one whose `ref.name` is the reference's tag is taken, else the
    /// platform as for pulls.
    pub fn import_layout(&self, layout_dir: &Path, reference: &str) -> Result<Image, Error> {
        let normalized = normalize_reference(reference)?;
        let bad = |reason: String| Error::InvalidLayout {
            path: layout_dir.to_path_buf(),
            reason,
        };
        if !layout_dir.join("oci-layout").is_file() {
            return Err(bad("it has no oci-layout file".into()));
        }
        let source = Layout {
            root: layout_dir.to_path_buf(),
        };
        let index_path = layout_dir.join("index.json");
        let index_bytes = read_capped(&index_path, MAX_MANIFEST_SIZE)?;
        let index = Manifest::parse(&index_bytes, &index_path.display().to_string())?;
        let entries = index.manifests.clone().unwrap_or_default();
        let tag = reference::tag_of(&normalized);
        let mut chosen = match entries.len() {
            0 => return Err(bad("its index.json names no image".into())),
            1 => entries[0].clone(),
            _ => entries
                .iter()
                .find(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(tag))
                .cloned()
                .map_or_else(
                    || registry::choose_platform(&entries, &normalized, None).cloned(),
                    Ok,
                )?,
        };
        let layout = self.layout();
        let _gc = layout.gc_lock_shared()?;
        // Nested indexes: descend to one platform's manifest.
        for _depth in 0..4 {
            let bytes = source.read_blob(&chosen.digest, MAX_MANIFEST_SIZE)?;
            layout.put_blob(&bytes, Some(&chosen.digest))?;
            let manifest = Manifest::parse(&bytes, &chosen.digest)?;
            if manifest.is_index() {
                let entries = manifest.manifests.unwrap_or_default();
                chosen = registry::choose_platform(&entries, &normalized, None)?.clone();
                continue;
            }
            let config = manifest.config.as_ref().expect("checked by parse");
            for desc in std::iter::once(config).chain(manifest.layers()) {
                if layout.has_blob(&desc.digest) {
                    continue;
                }
                let path = source.blob_path(&desc.digest)?;
                let io = |source| Error::Io {
                    path: path.clone(),
                    source,
                };
                let mut file = std::fs::File::open(&path).map_err(io)?;
                let mut writer = layout.new_blob()?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    writer.write(&buf[..n])?;
                }
                writer.commit(Some(&desc.digest), Some(desc.size))?;
            }
            let media_type = manifest
                .media_type
                .clone()
                .unwrap_or_else(|| chosen.media_type.clone());
            return record(
                &layout,
                &normalized,
                &chosen.digest,
                chosen.size,
                &media_type,
            );
        }
        Err(bad("image indexes nest more than 4 deep".into()))
    }

    /// Pushes the image stored under `reference` to its registry: blobs the registry lacks,
    /// then the manifest, byte for byte, so the digest stays the same.
    pub async fn push(&self, reference: &str, auth: &RegistryAuth) -> Result<(), Error> {
        let normalized = normalize_reference(reference)?;
        registry::push(&self.layout(), &normalized, auth).await
    }

    pub fn list(&self) -> Result<Vec<ImageSummary>, Error> {
        let layout = self.layout();
        let index = layout.read_index()?;
        let mut out = Vec::new();
        for entry in &index.manifests {
            let Some(reference) = entry.annotations.get(ANNOTATION_IMAGE_NAME) else {
                continue;
            };
            let manifest = Manifest::parse(
                &layout.read_blob(&entry.digest, MAX_MANIFEST_SIZE)?,
                &entry.digest,
            )?;
            let size = entry.size
                + manifest.config.as_ref().map_or(0, |c| c.size)
                + manifest.layers().iter().map(|l| l.size).sum::<u64>();
            let wasm = matches!(
                describe(&layout, reference, entry).map(|i| i.content),
                Ok(Content::Wasm { .. })
            );
            out.push(ImageSummary {
                reference: reference.clone(),
                digest: entry.digest.clone(),
                size,
                wasm,
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes images no container uses (`in_use`: references as pods name them), least
    /// recently used first, until their sizes add up to `bytes`. Returns what it removed.
    pub fn free_space(&self, bytes: u64, in_use: &[String]) -> Result<Vec<String>, Error> {
        let in_use: BTreeSet<String> = in_use
            .iter()
            .filter_map(|r| normalize_reference(r).ok())
            .collect();
        let last_used = self.last_used.lock().expect("last used").clone();
        let mut candidates: Vec<(std::time::SystemTime, ImageSummary)> = self
            .list()?
            .into_iter()
            .filter(|i| !in_use.contains(&i.reference))
            .map(|i| {
                let at = last_used
                    .get(&i.reference)
                    .copied()
                    .unwrap_or(std::time::UNIX_EPOCH);
                (at, i)
            })
            .collect();
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.reference.cmp(&b.1.reference)));
        let mut freed = 0;
        let mut removed = Vec::new();
        for (_, image) in candidates {
            if freed >= bytes {
                break;
            }
            self.remove(&image.reference)?;
            freed += image.size;
            removed.push(image.reference);
        }
        Ok(removed)
    }

    /// The kubelet's image garbage collection on the filesystem that holds the store: when
    /// more than `policy.high_percent` of it is in use, unused images go until
    /// `policy.low_percent` would be. Returns what it removed.
    pub fn collect_garbage(
        &self,
        policy: GcPolicy,
        in_use: &[String],
    ) -> Result<Vec<String>, Error> {
        let stat = nix::sys::statvfs::statvfs(&self.root).map_err(|e| Error::Io {
            path: self.root.clone(),
            source: e.into(),
        })?;
        let block = stat.fragment_size();
        let capacity = stat.blocks() * block;
        let used = capacity.saturating_sub(stat.blocks_free() * block);
        if capacity == 0 || used * 100 <= capacity * policy.high_percent as u64 {
            return Ok(Vec::new());
        }
        let target = capacity * policy.low_percent as u64 / 100;
        self.free_space(used.saturating_sub(target), in_use)
    }

    /// Drops `reference`, then deletes every blob no remaining image refers to.
    pub fn remove(&self, reference: &str) -> Result<(), Error> {
        let normalized = normalize_reference(reference)?;
        let layout = self.layout();
        // Exclusive: no pull or import is between writing a blob and naming it.
        let _gc = layout.gc_lock_exclusive()?;
        let removed = layout.update_index(|index| {
            let before = index.manifests.len();
            index.manifests.retain(|d| {
                d.annotations.get(ANNOTATION_IMAGE_NAME).map(String::as_str)
                    != Some(normalized.as_str())
            });
            before != index.manifests.len()
        })?;
        if !removed {
            return Err(Error::NotFound(normalized));
        }
        let index = layout.read_index()?;
        let mut keep = BTreeSet::new();
        for entry in &index.manifests {
            keep.insert(entry.digest.clone());
            if let Some(d) = entry.annotations.get(ANNOTATION_WASM_ENTRYPOINT) {
                keep.insert(d.clone());
            }
            // A manifest that cannot be read keeps nothing else alive: it is broken anyway,
            // and failing here would make every removal fail.
            if let Ok(bytes) = layout.read_blob(&entry.digest, MAX_MANIFEST_SIZE)
                && let Ok(manifest) = Manifest::parse(&bytes, &entry.digest)
            {
                for d in manifest
                    .config
                    .iter()
                    .chain(manifest.layers())
                    .chain(manifest.manifests.iter().flatten())
                {
                    keep.insert(d.digest.clone());
                }
            }
        }
        for (digest, path) in layout.all_blobs()? {
            if !keep.contains(&digest) {
                std::fs::remove_file(&path).map_err(|source| Error::Io { path, source })?;
            }
        }
        // Unpacked copies of layers no image has any more, unless a container still runs
        // on them (they go when it does, at the next removal).
        if self.root.join("snapshots").is_dir() {
            self.snapshots()?.prune_layers(&keep)?;
        }
        // Temp files of writers that crashed: no writer is running while we hold the lock.
        if let Ok(entries) = std::fs::read_dir(self.root.join("ingest")) {
            for entry in entries.flatten() {
                if !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("index.json")
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: path.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<RawExec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawExec {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

fn image_config(layout: &Layout, manifest: &Manifest) -> Result<ImageConfig, Error> {
    let desc = manifest.config.as_ref().expect("checked by parse");
    let bytes = layout.read_blob(&desc.digest, MAX_CONFIG_SIZE)?;
    let raw: RawConfig = if wasm::wasm_layer(manifest.layers()).is_some() {
        // Wasm artifacts' configs vary by tool; what matters is the layer.
        serde_json::from_slice(&bytes).unwrap_or_default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidConfig {
            digest: desc.digest.clone(),
            reason: e.to_string(),
        })?
    };
    let exec = raw.config.unwrap_or_default();
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ImageConfig {
        entrypoint: exec.entrypoint.unwrap_or_default(),
        cmd: exec.cmd.unwrap_or_default(),
        env: exec.env.unwrap_or_default(),
        working_dir: nonempty(exec.working_dir),
        user: nonempty(exec.user),
        exposed_ports: exec.exposed_ports.unwrap_or_default().into_keys().collect(),
        os: raw.os,
        architecture: raw.architecture,
    })
}

/// The file a Wasm image built as a rootfs runs: the Entrypoint, else the Cmd.
fn wasm_entrypoint(config: &ImageConfig) -> Option<&str> {
    config
        .entrypoint
        .first()
        .or_else(|| config.cmd.first())
        .map(String::as_str)
}

fn needs_entrypoint_extraction(manifest: &Manifest, config: &ImageConfig) -> bool {
    wasm::wasm_layer(manifest.layers()).is_none()
        && (wasm::is_wasi_platform(&config.os, &config.architecture)
            || wasm_entrypoint(config).is_some_and(|e| e.ends_with(".wasm")))
}

/// Names a manifest whose blobs are all stored under `reference`, reading a Wasm entrypoint
/// out of its layers first when it is a Wasm image built as a rootfs.
fn record(
    layout: &Layout,
    reference: &str,
    digest: &str,
    size: u64,
    media_type: &str,
) -> Result<Image, Error> {
    let manifest = Manifest::parse(&layout.read_blob(digest, MAX_MANIFEST_SIZE)?, digest)?;
    let config = image_config(layout, &manifest)?;
    let mut annotations = BTreeMap::from([
        (ANNOTATION_IMAGE_NAME.to_string(), reference.to_string()),
        (
            ANNOTATION_REF_NAME.to_string(),
            reference::tag_of(reference).to_string(),
        ),
    ]);
    if needs_entrypoint_extraction(&manifest, &config) {
        let Some(entry) = wasm_entrypoint(&config) else {
            return Err(Error::Unsupported(format!(
                "{reference} is a {}/{} image without an Entrypoint naming its .wasm file",
                config.os, config.architecture
            )));
        };
        let wasm_digest =
            wasm::extract_entrypoint(layout, manifest.layers(), entry)?.ok_or_else(|| {
                Error::Unsupported(format!(
                    "{reference}: its entrypoint {entry} is in none of its layers"
                ))
            })?;
        annotations.insert(ANNOTATION_WASM_ENTRYPOINT.to_string(), wasm_digest);
    }
    let entry = Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        annotations,
        platform: None,
        artifact_type: None,
    };
    let image = describe(layout, reference, &entry)?;
    let run_as = match image.content {
        Content::Wasm { .. } => RunAs::Wasm,
        Content::Layers(_) => RunAs::Linux,
    };
    let mut entry = entry;
    entry
        .annotations
        .insert(ANNOTATION_RUN_AS.to_string(), run_as.name().to_string());
    // The image this one replaces: the same reference's of the same kind (or of no known
    // kind, recorded before kinds were).
    layout.update_index(|index| {
        index.manifests.retain(|d| {
            d.annotations.get(ANNOTATION_IMAGE_NAME).map(String::as_str) != Some(reference)
                || store::run_as_of(d).is_some_and(|k| k != run_as)
        });
        index.manifests.push(entry);
    })?;
    Ok(image)
}

/// Reads an image back from its index entry.
fn describe(layout: &Layout, reference: &str, entry: &Descriptor) -> Result<Image, Error> {
    let manifest = Manifest::parse(
        &layout.read_blob(&entry.digest, MAX_MANIFEST_SIZE)?,
        &entry.digest,
    )?;
    let config = image_config(layout, &manifest)?;
    let wasm_blob = |digest: &str, media_type: &str| -> Result<Content, Error> {
        let path = layout.blob_path(digest)?;
        let kind = wasm::file_wasm_kind(&path)?
            .ok_or_else(|| Error::NotWasm(format!("the {media_type} blob {digest}")))?;
        Ok(Content::Wasm {
            path,
            digest: digest.to_string(),
            media_type: media_type.to_string(),
            component: kind == wasm::WasmKind::Component,
        })
    };
    let content = if let Some(layer) = wasm::wasm_layer(manifest.layers()) {
        wasm_blob(&layer.digest, &layer.media_type)?
    } else if let Some(digest) = entry.annotations.get(ANNOTATION_WASM_ENTRYPOINT) {
        wasm_blob(digest, WASM_LAYER_MEDIA_TYPE)?
    } else {
        let layers = manifest
            .layers()
            .iter()
            .map(|l| {
                Ok(Layer {
                    path: layout.blob_path(&l.digest)?,
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Content::Layers(layers)
    };
    Ok(Image {
        reference: reference.to_string(),
        digest: entry.digest.clone(),
        config,
        content,
    })
}
