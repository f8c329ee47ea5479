//! Pod volumes on the node: emptyDir, configMap, secret, hostPath and
//! persistentVolumeClaim (a local or hostPath PersistentVolume), as directories the
//! runtimes mount (Wasm: preopened directories); and the clean-up of this node's local
//! volumes once they are deleted.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::Api;
use skiff_shim::Mount;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: {message}")]
    Setup { volume: String, message: String },
    #[error("container {container:?} mounts volume {volume:?}, which the pod does not declare")]
    Undeclared { container: String, volume: String },
}

fn setup(volume: &str, message: impl std::fmt::Display) -> VolumeError {
    VolumeError::Setup {
        volume: volume.to_string(),
        message: message.to_string(),
    }
}

/// A volume on the node.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: PathBuf,
    /// configMap and secret volumes are read-only whatever the mount says, as in Kubernetes.
    pub read_only: bool,
}

/// The Node annotation naming the directory this node's local volumes live under (read by
/// the control plane's local provisioner).
pub const LOCAL_ROOT_ANNOTATION: &str = "skiff.dev/local-path-root";
/// The finalizer a provisioned local volume holds until its node removed the directory.
const CLEANUP_FINALIZER: &str = "skiff.dev/local-path-cleanup";

/// Prepares every volume of the pod under `pod_dir/volumes`; returns where each one is.
/// `local_root` is where this node's provisioned local volumes live.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
    local_root: &Path,
) -> Result<BTreeMap<String, Prepared>, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = match &v.persistent_volume_claim {
            Some(pvc) => claimed(client, &namespace, &v.name, &pvc.claim_name, local_root).await?,
            None => prepare_one(client, &namespace, v, pod_dir).await?,
        };
        let read_only = v.config_map.is_some()
            || v.secret.is_some()
            || v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.read_only == Some(true));
        out.insert(v.name.clone(), Prepared { path, read_only });
    }
    Ok(out)
}

async fn prepare_one(
    client: &kube::Client,
    namespace: &str,
    v: &Volume,
    pod_dir: &Path,
) -> Result<PathBuf, VolumeError> {
    let dir = |kind: &str| pod_dir.join("volumes").join(kind).join(&v.name);
    let create = |p: &Path| std::fs::create_dir_all(p).map_err(|e| setup(&v.name, e));
    if v.empty_dir.is_some() {
        let p = dir("empty-dir");
        create(&p)?;
        // World-writable, as the kubelet makes it: a container running as any user may
        // write to its scratch space.
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .map_err(|e| setup(&v.name, e))?;
        return Ok(p);
    }
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        let kind = h.type_.as_deref().unwrap_or("");
        match kind {
            "DirectoryOrCreate" => create(&p)?,
            "Directory" if !p.is_dir() => {
                return Err(setup(
                    &v.name,
                    format!("hostPath {} is not a directory", h.path),
                ));
            }
            "" if !p.exists() => {
                return Err(setup(
                    &v.name,
                    format!("hostPath {} does not exist", h.path),
                ));
            }
            "FileOrCreate" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {
                // Wasm guests see directories only (WASI preopens).
                return Err(setup(
                    &v.name,
                    format!("hostPath type {kind} is not supported: mount a directory"),
                ));
            }
            _ => {}
        }
        return Ok(p);
    }
    if let Some(cm) = &v.config_map {
        let p = dir("configmap");
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let optional = cm.optional.unwrap_or(false);
        let files: BTreeMap<String, Vec<u8>> = match api.get_opt(&cm.name).await {
            Ok(Some(obj)) => obj
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .chain(
                    obj.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                )
                .collect(),
            Ok(None) if optional => BTreeMap::new(),
            Ok(None) => {
                return Err(setup(
                    &v.name,
                    format!("configmap \"{}\" not found", cm.name),
                ));
            }
            Err(e) => return Err(setup(&v.name, e)),
        };
        write_files(&v.name, &p, &files, cm.items.as_deref(), optional)?;
        return Ok(p);
    }
    if let Some(s) = &v.secret {
        let p = dir("secret");
        let name = s.secret_name.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let optional = s.optional.unwrap_or(false);
        let files: BTreeMap<String, Vec<u8>> = match api.get_opt(&name).await {
            Ok(Some(obj)) => obj
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            Ok(None) if optional => BTreeMap::new(),
            Ok(None) => return Err(setup(&v.name, format!("secret \"{name}\" not found"))),
            Err(e) => return Err(setup(&v.name, e)),
        };
        write_files(&v.name, &p, &files, s.items.as_deref(), optional)?;
        return Ok(p);
    }
    Err(setup(
        &v.name,
        "only emptyDir, configMap, secret, hostPath and persistentVolumeClaim volumes are supported on this node",
    ))
}

/// The directory of the PersistentVolume a claim is bound to: a provisioned one under
/// `local_root` is made on first use; any other must exist.
async fn claimed(
    client: &kube::Client,
    namespace: &str,
    volume: &str,
    claim_name: &str,
    local_root: &Path,
) -> Result<PathBuf, VolumeError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(claim_name)
        .await
        .map_err(|e| setup(volume, e))?
        .ok_or_else(|| {
            setup(
                volume,
                format!("persistentvolumeclaim \"{claim_name}\" not found"),
            )
        })?;
    let Some(pv_name) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
        return Err(setup(
            volume,
            format!("persistentvolumeclaim \"{claim_name}\" is not bound yet"),
        ));
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs
        .get_opt(&pv_name)
        .await
        .map_err(|e| setup(volume, e))?
        .ok_or_else(|| setup(volume, format!("persistentvolume \"{pv_name}\" not found")))?;
    let spec = pv.spec.unwrap_or_default();
    let path = match (&spec.local, &spec.host_path) {
        (Some(l), _) => PathBuf::from(&l.path),
        (None, Some(h)) => PathBuf::from(&h.path),
        _ => {
            return Err(setup(
                volume,
                format!(
                    "persistentvolume {pv_name} is neither local nor hostPath: this node mounts only those"
                ),
            ));
        }
    };
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(setup(
            volume,
            format!(
                "persistentvolume {pv_name}: path {} is not a plain absolute path",
                path.display()
            ),
        ));
    }
    if path.starts_with(local_root) {
        std::fs::create_dir_all(&path).map_err(|e| setup(volume, e))?;
        // Writable by any user, as k3s's local-path makes its volumes.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .map_err(|e| setup(volume, e))?;
    } else if !path.is_dir() {
        return Err(setup(
            volume,
            format!(
                "persistentvolume {pv_name}: {} is not a directory on this node",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// Whether a PersistentVolume is pinned to node `node` (its node affinity names it by
/// `kubernetes.io/hostname`).
fn pinned_to(pv: &PersistentVolume, node: &str) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_some_and(|r| {
            r.node_selector_terms.iter().any(|t| {
                t.match_expressions.iter().flatten().any(|e| {
                    e.key == "kubernetes.io/hostname"
                        && e.operator == "In"
                        && e.values.iter().flatten().any(|v| v == node)
                })
            })
        })
}

/// Removes the directories of this node's provisioned volumes once they are deleted, then
/// lets the volume objects go (their clean-up finalizer). Runs until the agent stops.
pub async fn clean_local_volumes(client: kube::Client, node: String, local_root: PathBuf) {
    use kube::runtime::watcher;
    let pvs: Api<PersistentVolume> = Api::all(client);
    let informer = skiff_informer::Informer::<PersistentVolume>::new();
    let _watch =
        skiff_informer::AbortOnDrop(informer.start(pvs.clone(), watcher::Config::default()));
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    informer.subscribe(move |change| {
        if let skiff_informer::Change::Added(pv) | skiff_informer::Change::Updated { new: pv, .. } =
            change
        {
            let _ = tx.send(std::sync::Arc::clone(pv));
        }
    });
    while let Some(pv) = changed.recv().await {
        let holds = pv
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == CLEANUP_FINALIZER);
        if pv.metadata.deletion_timestamp.is_none() || !holds || !pinned_to(&pv, &node) {
            continue;
        }
        let Some(path) = pv
            .spec
            .as_ref()
            .and_then(|s| s.local.as_ref())
            .map(|l| PathBuf::from(&l.path))
        else {
            continue;
        };
        let name = pv.metadata.name.clone().unwrap_or_default();
        // Only what this node made, under its root, is removed.
        if path.starts_with(&local_root)
            && path != local_root
            && !path.components().any(|c| c == Component::ParentDir)
        {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(volume = %name, path = %path.display(), "local volume removed")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(volume = %name, "removing {}: {e}", path.display());
                    continue;
                }
            }
        }
        let patch = serde_json::json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": [CLEANUP_FINALIZER],
            "uid": pv.metadata.uid,
        }});
        if let Err(e) = pvs
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(&patch),
            )
            .await
        {
            tracing::warn!(volume = %name, "releasing the volume: {e}");
        }
    }
}

/// Writes keys as files (all of them, or the listed `items` at their paths). Paths are
/// relative and may not climb out (`..`), as the API server also validates.
fn write_files(
    volume: &str,
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<(), VolumeError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| setup(volume, e))?;
    let pairs: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, rel) in pairs {
        let Some(bytes) = data.get(&key) else {
            if optional {
                continue;
            }
            return Err(setup(volume, format!("key {key:?} not found")));
        };
        let rel = Path::new(&rel);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(setup(
                volume,
                format!("path {} must be relative, without ..", rel.display()),
            ));
        }
        let target = dir.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| setup(volume, e))?;
        }
        std::fs::write(&target, bytes).map_err(|e| setup(volume, e))?;
    }
    Ok(())
}

/// The mounts of one container, from its volumeMounts.
pub fn mounts(
    container: &k8s_openapi::api::core::v1::Container,
    volumes: &BTreeMap<String, Prepared>,
) -> Result<Vec<Mount>, VolumeError> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let base = volumes
                .get(&m.name)
                .ok_or_else(|| VolumeError::Undeclared {
                    container: container.name.clone(),
                    volume: m.name.clone(),
                })?;
            let (base, always_ro) = (&base.path, base.read_only);
            let host_path = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => {
                    let sub = Path::new(sub);
                    if sub.components().any(|c| !matches!(c, Component::Normal(_))) {
                        return Err(setup(&m.name, "subPath must be relative, without .."));
                    }
                    let p = base.join(sub);
                    std::fs::create_dir_all(&p).map_err(|e| setup(&m.name, e))?;
                    p
                }
                _ => base.clone(),
            };
            Ok(Mount {
                host_path,
                container_path: m.mount_path.clone(),
                read_only: always_ro || m.read_only.unwrap_or(false),
            })
        })
        .collect()
}
