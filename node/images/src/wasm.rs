//! Telling Wasm apps from container images, in the order runwasi does: layer media types
//! first, then the image's platform or a `.wasm` entrypoint in its rootfs.

use std::fs::File;
use std::io::Read;

use crate::Error;
use crate::store::{Descriptor, Layout};

/// The CNCF Wasm OCI artifact: its config and its one layer.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Spin's component layers.
pub const SPIN_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// runwasi's component layers.
pub const RUNWASI_LAYER_MEDIA_TYPE: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

pub(crate) const WASM_LAYER_MEDIA_TYPES: [&str; 3] = [
    WASM_LAYER_MEDIA_TYPE,
    SPIN_LAYER_MEDIA_TYPE,
    RUNWASI_LAYER_MEDIA_TYPE,
];

/// A Wasm entrypoint larger than this is refused when read out of a layer.
const MAX_WASM_SIZE: u64 = 1 << 30;

const MAGIC: &[u8; 4] = b"\0asm";

/// What a Wasm binary's 8-byte header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WasmKind {
    Module,
    Component,
}

/// A core module is `\0asm` + version 1; a component is `\0asm` + version 0x0d, layer 1.
pub(crate) fn wasm_kind(header: &[u8]) -> Option<WasmKind> {
    if header.len() < 8 || &header[..4] != MAGIC {
        return None;
    }
    match [header[4], header[5], header[6], header[7]] {
        [1, 0, 0, 0] => Some(WasmKind::Module),
        [_, _, 1, 0] => Some(WasmKind::Component),
        _ => None,
    }
}

pub(crate) fn file_wasm_kind(path: &std::path::Path) -> Result<Option<WasmKind>, Error> {
    let mut header = [0u8; 8];
    let mut file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut read = 0;
    while read < header.len() {
        let n = file.read(&mut header[read..]).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        read += n;
    }
    Ok(wasm_kind(&header[..read]))
}

/// The first layer whose media type is one of the Wasm formats.
pub(crate) fn wasm_layer(layers: &[Descriptor]) -> Option<&Descriptor> {
    layers
        .iter()
        .find(|l| WASM_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()))
}

pub(crate) fn is_wasi_platform(os: &str, architecture: &str) -> bool {
    matches!(os, "wasip1" | "wasip2" | "wasi") || architecture == "wasm"
}

/// Reads the file at `path` out of an image's layers (lowest first) as the merged rootfs
/// would show it, without unpacking anything else, and stores it as a blob. Follows
/// symlinks and hardlinks inside the rootfs; `..` never climbs above its root. Returns
/// `None` when no layer holds it (or an upper layer deleted it).
pub(crate) fn extract_entrypoint(
    layout: &Layout,
    layers: &[Descriptor],
    path: &str,
) -> Result<Option<String>, Error> {
    let mut target = clean_path(path, "");
    for _hop in 0..16 {
        match find_in_layers(layout, layers, &target)? {
            Found::Missing => return Ok(None),
            Found::Link(next) => target = next,
            Found::Blob(digest) => return Ok(Some(digest)),
        }
    }
    Err(Error::Unsupported(format!(
        "the entrypoint {path} is a chain of more than 16 links"
    )))
}

enum Found {
    Missing,
    Link(String),
    Blob(String),
}

fn find_in_layers(layout: &Layout, layers: &[Descriptor], target: &str) -> Result<Found, Error> {
    // Upper layers win, so read from the top down and stop at the first layer that says
    // anything about the path.
    for layer in layers.iter().rev() {
        let blob = layout.blob_path(&layer.digest)?;
        let io = |source| Error::Io {
            path: blob.clone(),
            source,
        };
        let stream = crate::unpack::open_layer(&blob).map_err(io)?;
        let mut archive = tar::Archive::new(stream);
        let bad_layer = |e: std::io::Error| Error::BadLayer {
            digest: layer.digest.clone(),
            reason: e.to_string(),
        };
        let mut opaque_hides = false;
        for entry in archive.entries().map_err(bad_layer)? {
            let mut entry = entry.map_err(bad_layer)?;
            let raw = entry.path_bytes().into_owned();
            let Ok(raw) = String::from_utf8(raw) else {
                continue;
            };
            let name = clean_path(&raw, "");
            let (dir, base) = match name.rsplit_once('/') {
                Some((d, b)) => (d, b),
                None => ("", name.as_str()),
            };
            if let Some(hidden) = base.strip_prefix(".wh.") {
                if hidden == ".wh..opq" {
                    if target.starts_with(&format!("{dir}/")) || dir.is_empty() {
                        opaque_hides = true;
                    }
                    continue;
                }
                let deleted = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                if target == deleted || target.starts_with(&format!("{deleted}/")) {
                    return Ok(Found::Missing);
                }
                continue;
            }
            if name != target {
                continue;
            }
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let link = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                // A symlink resolves against its directory; a hardlink names a path from the root.
                let base_dir = if kind.is_symlink() { dir } else { "" };
                return Ok(Found::Link(clean_path(&link, base_dir)));
            }
            if !kind.is_file() {
                return Err(Error::Unsupported(format!(
                    "the entrypoint /{target} in layer {} is not a regular file",
                    layer.digest
                )));
            }
            let size = entry.header().size().map_err(bad_layer)?;
            if size > MAX_WASM_SIZE {
                return Err(Error::TooLarge {
                    what: format!("the entrypoint /{target}"),
                    limit: MAX_WASM_SIZE,
                });
            }
            let mut writer = layout.new_blob()?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut header = Vec::with_capacity(8);
            loop {
                let n = entry.read(&mut buf).map_err(bad_layer)?;
                if n == 0 {
                    break;
                }
                if header.len() < 8 {
                    let take = (8 - header.len()).min(n);
                    header.extend_from_slice(&buf[..take]);
                }
                writer.write(&buf[..n])?;
            }
            if wasm_kind(&header).is_none() {
                return Err(Error::NotWasm(format!(
                    "the entrypoint /{target} in layer {}",
                    layer.digest
                )));
            }
            let size = writer.len();
            return Ok(Found::Blob(writer.commit(None, Some(size))?));
        }
        if opaque_hides {
            return Ok(Found::Missing);
        }
    }
    Ok(Found::Missing)
}

/// A path inside a rootfs, relative to its root, with `.` and `..` resolved lexically as a
/// chroot would (`..` at the root stays at the root), so no tar name or link target can
/// point outside.
fn clean_path(path: &str, base_dir: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base_dir}/{path}")
    };
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(wasm_kind(b"\0asm\x01\0\0\0"), Some(WasmKind::Module));
        assert_eq!(wasm_kind(b"\0asm\x0d\0\x01\0"), Some(WasmKind::Component));
        assert_eq!(wasm_kind(b"\0asm\x01\0"), None);
        assert_eq!(wasm_kind(b"\x7fELF\x02\x01\x01\0"), None);
    }

    #[test]
    fn paths_stay_inside_the_root() {
        assert_eq!(clean_path("/app/main.wasm", ""), "app/main.wasm");
        assert_eq!(clean_path("./app/../main.wasm", ""), "main.wasm");
        assert_eq!(clean_path("../../../etc/passwd", "app"), "etc/passwd");
        assert_eq!(clean_path("real.wasm", "app/bin"), "app/bin/real.wasm");
        assert_eq!(clean_path("/abs.wasm", "app/bin"), "abs.wasm");
    }
}
