//! Registry traffic through `oci-client`: pulls into the layout, pushes out of it.

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;

use crate::reference::{is_loopback_registry, parse, registry_of};
use crate::store::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, Layout, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE,
    Manifest, OCI_INDEX, OCI_MANIFEST, check_digest, sha256_digest,
};
use crate::wasm::is_wasi_platform;
use crate::{Error, Image, RegistryAuth, RunAs, record};

const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Bytes read from a blob file per chunk of a push.
const PUSH_CHUNK: usize = 4 << 20;

/// A client for one registry: plain HTTP on loopback (as Docker allows), TLS elsewhere.
/// One per operation, because oci-client keeps the first credentials it sees per registry.
fn client_for(registry: &str) -> Result<oci_client::Client, Error> {
    // reqwest's rustls needs a process-wide crypto provider; ring is the one the rest of
    // Skiff (kube) already links. A second install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: if is_loopback_registry(registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // Index entries are chosen here (`choose_platform`), never by the client.
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(config).map_err(|source| Error::Registry {
        reference: registry.to_string(),
        source,
    })
}

/// Turns oci-client's errors into ones that say what to fix.
fn registry_error(reference: &str, e: OciDistributionError) -> Error {
    match e {
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
                )
            }) =>
        {
            Error::ManifestUnknown(reference.to_string())
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            Error::ManifestUnknown(reference.to_string())
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Error::Unauthorized {
            registry: registry_of(reference).to_string(),
        },
        OciDistributionError::RequestError(ref e)
            if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) =>
        {
            Error::Unauthorized {
                registry: registry_of(reference).to_string(),
            }
        }
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            Error::Unauthorized {
                registry: registry_of(reference).to_string(),
            }
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            Error::DigestMismatch {
                digest: expected,
                actual,
            }
        }
        source => Error::Registry {
            reference: reference.to_string(),
            source,
        },
    }
}

/// Picks the manifest a node runs from an image index: for `run_as` `None`, wasi/wasm when
/// the index has one, else linux on this machine's architecture; otherwise that kind's
/// entry only. An index of one unlabelled entry gives it.
pub(crate) fn choose_platform<'a>(
    entries: &'a [Descriptor],
    reference: &str,
    run_as: Option<RunAs>,
) -> Result<&'a Descriptor, Error> {
    let arch = host_arch();
    let wasi = || {
        entries.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| is_wasi_platform(&p.os, &p.architecture))
        })
    };
    let linux = || {
        entries.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
    };
    let found = match run_as {
        None => wasi().or_else(linux),
        Some(RunAs::Wasm) => wasi(),
        Some(RunAs::Linux) => linux(),
    };
    if let Some(found) = found {
        return Ok(found);
    }
    if let [only] = entries
        && only.platform.is_none()
    {
        return Ok(only);
    }
    let available = entries
        .iter()
        .map(|d| match &d.platform {
            Some(p) => format!("{}/{}", p.os, p.architecture),
            None => "unlabelled".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let wanted = match run_as {
        None => format!("linux/{arch} or wasi/wasm"),
        Some(RunAs::Linux) => format!("linux/{arch}"),
        Some(RunAs::Wasm) => "wasi/wasm".to_string(),
    };
    Err(Error::NoMatchingPlatform {
        reference: reference.to_string(),
        wanted,
        available,
    })
}

/// This machine's architecture in OCI's (Go's) words.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

async fn fetch_manifest(
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    auth: &oci_client::secrets::RegistryAuth,
    shown: &str,
) -> Result<(bytes::Bytes, String), Error> {
    // oci-client reads the body whole before we can look at it; the cap at least keeps a
    // huge manifest from being parsed or stored.
    let (bytes, digest) = client
        .pull_manifest_raw(reference, auth, ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| registry_error(shown, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(Error::TooLarge {
            what: format!("the manifest of {shown}"),
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(Error::DigestMismatch { digest, actual });
    }
    Ok((bytes, digest))
}

pub(crate) async fn pull(
    layout: &Layout,
    normalized: &str,
    auth: &RegistryAuth,
    run_as: Option<RunAs>,
) -> Result<Image, Error> {
    let registry = registry_of(normalized);
    let client = client_for(registry)?;
    let oref = parse(normalized)?;
    let oauth = auth.to_oci();
    let (mut bytes, mut digest) = fetch_manifest(&client, &oref, &oauth, normalized).await?;
    let mut manifest = Manifest::parse(&bytes, &format!("{normalized} ({digest})"))?;
    let mut media_type = manifest.media_type.clone();
    if manifest.is_index() {
        let entries = manifest.manifests.clone().unwrap_or_default();
        let chosen = choose_platform(&entries, normalized, run_as)?;
        if chosen.size > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge {
                what: format!("manifest {} of {normalized}", chosen.digest),
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let platform_ref = oref.clone_with_digest(chosen.digest.clone());
        (bytes, digest) = fetch_manifest(&client, &platform_ref, &oauth, normalized).await?;
        if digest != chosen.digest {
            return Err(Error::DigestMismatch {
                digest: chosen.digest.clone(),
                actual: digest,
            });
        }
        manifest = Manifest::parse(&bytes, &format!("{normalized} ({digest})"))?;
        if manifest.is_index() {
            return Err(Error::Unsupported(format!(
                "{normalized}: an image index inside an image index"
            )));
        }
        media_type = manifest
            .media_type
            .clone()
            .or(Some(chosen.media_type.clone()));
    }

    // Held until the image is named in index.json, so a concurrent removal's garbage
    // collection cannot take the blobs in between.
    let gc = {
        let layout = Layout {
            root: layout.root.clone(),
        };
        tokio::task::spawn_blocking(move || layout.gc_lock_shared())
            .await
            .map_err(|e| Error::Task(e.to_string()))??
    };
    layout.put_blob(&bytes, Some(&digest))?;
    let config = manifest.config.clone().expect("checked by parse");
    if config.size > MAX_CONFIG_SIZE {
        return Err(Error::TooLarge {
            what: format!("the config {} of {normalized}", config.digest),
            limit: MAX_CONFIG_SIZE,
        });
    }
    for desc in std::iter::once(&config).chain(manifest.layers()) {
        if !layout.has_blob(&desc.digest) {
            tracing::debug!(image = normalized, blob = %desc.digest, size = desc.size, "pulling blob");
            download_blob(layout, &client, &oref, desc, normalized).await?;
        }
    }
    let media_type = media_type.unwrap_or_else(|| OCI_MANIFEST.to_string());
    let root = layout.root.clone();
    let normalized_owned = normalized.to_string();
    let size = bytes.len() as u64;
    // Reading a Wasm entrypoint out of layers is blocking work.
    let image = tokio::task::spawn_blocking(move || {
        let layout = Layout { root };
        record(&layout, &normalized_owned, &digest, size, &media_type)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    drop(gc);
    Ok(image)
}

/// Streams one blob into the layout, counting and hashing as it comes; it becomes visible
/// only when both match the descriptor.
async fn download_blob(
    layout: &Layout,
    client: &oci_client::Client,
    oref: &oci_client::Reference,
    desc: &Descriptor,
    shown: &str,
) -> Result<(), Error> {
    check_digest(&desc.digest)?;
    let oci_desc = OciDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size as i64,
        ..OciDescriptor::default()
    };
    let mut stream = client
        .pull_blob_stream(oref, &oci_desc)
        .await
        .map_err(|e| registry_error(shown, e))?;
    let mut writer = layout.new_blob()?;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(
                |e| match e.get_ref().and_then(|i| i.downcast_ref::<DigestError>()) {
                    Some(DigestError::VerificationError { expected, actual }) => {
                        Error::DigestMismatch {
                            digest: expected.clone(),
                            actual: actual.clone(),
                        }
                    }
                    _ => Error::Registry {
                        reference: shown.to_string(),
                        source: OciDistributionError::IoError(e),
                    },
                },
            )?;
        if writer.len() + chunk.len() as u64 > desc.size {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: writer.len() + chunk.len() as u64,
            });
        }
        writer.write(&chunk)?;
    }
    writer.commit(Some(&desc.digest), Some(desc.size))?;
    Ok(())
}

pub(crate) async fn push(
    layout: &Layout,
    normalized: &str,
    auth: &RegistryAuth,
) -> Result<(), Error> {
    let index = layout.read_index()?;
    let entry = index
        .find(normalized, None)
        .ok_or_else(|| Error::NotFound(normalized.to_string()))?
        .clone();
    let bytes = layout.read_blob(&entry.digest, MAX_MANIFEST_SIZE)?;
    let manifest = Manifest::parse(&bytes, &entry.digest)?;
    let client = client_for(registry_of(normalized))?;
    let oref = parse(normalized)?;
    client
        .store_auth_if_needed(oref.resolve_registry(), &auth.to_oci())
        .await;
    for desc in manifest.config.iter().chain(manifest.layers()) {
        let exists = client
            .blob_exists(&oref, &desc.digest)
            .await
            .map_err(|e| registry_error(normalized, e))?;
        if exists {
            continue;
        }
        tracing::debug!(image = normalized, blob = %desc.digest, "pushing blob");
        let path = layout.blob_path(&desc.digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        // Streamed in chunks, so a large layer never sits in memory whole.
        let chunks = futures::stream::try_unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; PUSH_CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), file)))
        });
        client
            .push_blob_stream(&oref, chunks, &desc.digest, Some(desc.size))
            .await
            .map_err(|e| registry_error(normalized, e))?;
    }
    let content_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| entry.media_type.clone());
    let content_type =
        http::HeaderValue::from_str(&content_type).map_err(|_| Error::InvalidManifest {
            what: entry.digest.clone(),
            reason: format!("media type {content_type:?} is not a valid header value"),
        })?;
    client
        .push_manifest_raw(&oref, bytes, content_type)
        .await
        .map_err(|e| registry_error(normalized, e))?;
    Ok(())
}
