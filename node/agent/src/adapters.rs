//! The agent's seams filled by Skiff's own parts: pod networks from `skiff-podnet`.

use crate::{NetSandbox, Network};

#[async_trait::async_trait]
impl Network for skiff_podnet::PodNetwork {
    async fn create(&self, pod_uid: &str, address_only: bool) -> Result<NetSandbox, String> {
        let sandbox = if address_only {
            skiff_podnet::PodNetwork::create_address_only(self, pod_uid).await
        } else {
            skiff_podnet::PodNetwork::create(self, pod_uid).await
        };
        sandbox.map(net_sandbox).map_err(|e| e.to_string())
    }

    async fn promote(&self, pod_uid: &str) -> Result<NetSandbox, String> {
        skiff_podnet::PodNetwork::promote(self, pod_uid)
            .await
            .map(net_sandbox)
            .map_err(|e| e.to_string())
    }

    async fn remove(&self, pod_uid: &str) -> Result<(), String> {
        skiff_podnet::PodNetwork::remove(self, pod_uid)
            .await
            .map_err(|e| e.to_string())
    }

    async fn recycle(&self, pod_uid: &str) -> Result<(), String> {
        skiff_podnet::PodNetwork::recycle(self, pod_uid)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn list(&self) -> Vec<String> {
        skiff_podnet::PodNetwork::list(self)
            .await
            .into_iter()
            .map(|s| s.pod_uid)
            .collect()
    }
}

fn net_sandbox(sandbox: skiff_podnet::Sandbox) -> NetSandbox {
    let shared = sandbox.is_address_only();
    NetSandbox {
        ip: sandbox.ip.into(),
        netns: sandbox.netns.or(sandbox.shared_netns),
        shared,
    }
}

/// Images from the node's `skiff-images` store.
fn run_as(runs: Option<skiff_shim::WorkloadKind>) -> Option<skiff_images::RunAs> {
    runs.map(|k| match k {
        skiff_shim::WorkloadKind::Wasm => skiff_images::RunAs::Wasm,
        skiff_shim::WorkloadKind::Linux => skiff_images::RunAs::Linux,
    })
}

#[async_trait::async_trait]
impl crate::Images for skiff_images::ImageStore {
    fn has(&self, reference: &str, runs: Option<skiff_shim::WorkloadKind>) -> bool {
        skiff_images::ImageStore::has_as(self, reference, run_as(runs))
    }

    fn local(
        &self,
        reference: &str,
        runs: Option<skiff_shim::WorkloadKind>,
    ) -> Option<crate::PulledImage> {
        skiff_images::ImageStore::get_as(self, reference, run_as(runs))
            .ok()
            .flatten()
            .map(pulled)
    }

    async fn pull(
        &self,
        reference: &str,
        policy: crate::PullPolicy,
        secrets: &crate::PullSecrets,
        runs: Option<skiff_shim::WorkloadKind>,
    ) -> Result<crate::PulledImage, String> {
        let normalized = skiff_images::normalize_reference(reference).map_err(|e| e.to_string())?;
        let registry = normalized.split('/').next().unwrap_or_default();
        // The first pull secret with credentials for this registry, as the kubelet picks.
        let auth = secrets
            .0
            .iter()
            .find_map(|s| skiff_images::auth_from_docker_config(s, registry).ok())
            .unwrap_or(skiff_images::RegistryAuth::Anonymous);
        // The errors say where the node looked, the store's directory and the registry
        // (a pod's image that is in another store, say another data dir's, is then found
        // at a glance), so IfNotPresent looks in the store apart from the pull.
        let store = self.root().display();
        let from_registry = |policy| {
            skiff_images::ImageStore::pull_as(self, reference, &auth, policy, run_as(runs))
        };
        let image = match policy {
            crate::PullPolicy::Never => from_registry(skiff_images::PullPolicy::Never)
                .await
                .map_err(|e| match e {
                    skiff_images::Error::NotPresentNeverPull(_) => {
                        format!("{normalized} is not in the image store {store}")
                    }
                    e => format!("image store {store}: {e}"),
                })?,
            crate::PullPolicy::IfNotPresent => {
                match skiff_images::ImageStore::get_as(self, &normalized, run_as(runs))
                    .map_err(|e| format!("image store {store}: {e}"))?
                {
                    Some(image) => image,
                    None => from_registry(skiff_images::PullPolicy::Always)
                        .await
                        .map_err(|e| {
                            format!(
                                "{normalized} is not in the image store {store}, and its pull from registry {registry} failed: {e}"
                            )
                        })?,
                }
            }
            crate::PullPolicy::Always => from_registry(skiff_images::PullPolicy::Always)
                .await
                .map_err(|e| format!("pull from registry {registry} failed: {e}"))?,
        };
        Ok(pulled(image))
    }

    async fn collect_garbage(&self, in_use: Vec<String>) -> Result<Vec<String>, String> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.collect_garbage(skiff_images::GcPolicy::default(), &in_use)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// An image of the store as the agent runs it.
fn pulled(image: skiff_images::Image) -> crate::PulledImage {
    let env = image
        .config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (workload, is_wasm) = match image.content {
        skiff_images::Content::Wasm {
            path,
            digest,
            media_type,
            ..
        } => (
            skiff_shim::Workload::Wasm {
                digest,
                media_type,
                path,
            },
            true,
        ),
        skiff_images::Content::Layers(layers) => (
            skiff_shim::Workload::Rootfs {
                digest: image.digest.clone(),
                layers: layers
                    .into_iter()
                    .map(|l| skiff_shim::Layer {
                        digest: l.digest,
                        media_type: l.media_type,
                        path: l.path,
                        size: l.size,
                    })
                    .collect(),
                user: image.config.user.clone().filter(|u| !u.is_empty()),
            },
            false,
        ),
    };
    // A Wasm artifact is the program itself; a rootfs image's Entrypoint names it.
    let entrypoint = if is_wasm
        && image
            .config
            .entrypoint
            .iter()
            .all(|e| !e.ends_with(".wasm"))
    {
        Vec::new()
    } else {
        image.config.entrypoint
    };
    crate::PulledImage {
        digest: image.digest,
        workload,
        entrypoint,
        cmd: image.config.cmd,
        working_dir: image.config.working_dir.filter(|d| !d.is_empty()),
        env,
        is_wasm,
    }
}
