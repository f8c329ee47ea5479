//! Compiled artifacts: on disk by module digest and engine compatibility hash, so a second pod
//! of the same image (or the same pod after an agent restart) starts without compiling; in
//! memory as pre-instantiated linkers shared by every container of that digest.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstancePre, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::host::{Host, P1Host};

/// A loaded artifact, ready to instantiate.
pub enum Loaded {
    /// A component exporting `wasi:cli/run`.
    Command(CommandPre<Host>),
    /// A component exporting `wasi:http/incoming-handler`; `uses_sockets` when it imports
    /// wasi:sockets (it makes sockets of its own, which must be its pod's).
    Http {
        pre: ProxyPre<Host>,
        uses_sockets: bool,
    },
    /// A core module with `_start` (WASI preview 1).
    Module(InstancePre<P1Host>),
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a WebAssembly module or component")]
    NotWasm(PathBuf),
    #[error("compile: {0:#}")]
    Compile(wasmtime::Error),
    #[error("link: {0:#}")]
    Link(wasmtime::Error),
    #[error("component exports neither wasi:cli/run nor wasi:http/incoming-handler")]
    NoEntryPoint,
}

impl Loaded {
    /// Whether its containers may live in a shared network namespace: a wasi:http
    /// component importing no wasi:sockets, every socket of which the shim makes.
    pub fn shares_network(&self) -> bool {
        matches!(
            self,
            Loaded::Http {
                uses_sockets: false,
                ..
            }
        )
    }
}

pub struct Cache {
    dir: PathBuf,
    engine: Engine,
    component_linker: Linker<Host>,
    module_linker: wasmtime::Linker<P1Host>,
    /// Engine settings and version: a cached artifact is only valid for an equal engine.
    compat: u64,
    loaded: Mutex<HashMap<String, Arc<OnceCell<Arc<Loaded>>>>>,
}

pub enum WasmKind {
    Module,
    Component,
}

/// The kind of a WebAssembly binary from its 8-byte preamble.
pub fn kind_of(preamble: &[u8]) -> Option<WasmKind> {
    match preamble.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(WasmKind::Module),
        [0, b'a', b's', b'm', 0x0d, 0, 1, 0] => Some(WasmKind::Component),
        _ => None,
    }
}

impl Cache {
    pub fn new(dir: PathBuf, engine: Engine) -> Result<Self, CacheError> {
        std::fs::create_dir_all(&dir).map_err(|source| CacheError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut component_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(CacheError::Link)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(CacheError::Link)?;
        crate::lookup::shadow(&mut component_linker).map_err(CacheError::Link)?;
        let mut module_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |h: &mut P1Host| &mut h.wasi)
            .map_err(CacheError::Link)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine,
            component_linker,
            module_linker,
            compat: hasher.finish(),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// The artifact for `digest`, compiled once per node and engine.
    pub async fn load(
        self: &Arc<Self>,
        digest: &str,
        path: &Path,
    ) -> Result<Arc<Loaded>, CacheError> {
        let cell = self
            .loaded
            .lock()
            .expect("cache lock")
            .entry(digest.to_string())
            .or_default()
            .clone();
        let this = self.clone();
        let (digest, path) = (digest.to_string(), path.to_path_buf());
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || this.load_blocking(&digest, &path).map(Arc::new))
                .await
                .expect("compile task panicked")
        })
        .await
        .cloned()
    }

    fn cached_path(&self, digest: &str) -> PathBuf {
        let name: String = digest
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.dir.join(format!("{name}-{:016x}.cwasm", self.compat))
    }

    fn load_blocking(&self, digest: &str, path: &Path) -> Result<Loaded, CacheError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| CacheError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        // Only the preamble is needed to pick the kind; the whole file only to compile.
        let mut preamble = [0u8; 8];
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut preamble))
            .map_err(|source| CacheError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let kind = kind_of(&preamble).ok_or_else(|| CacheError::NotWasm(path.to_path_buf()))?;
        let cached = self.cached_path(digest);
        match kind {
            WasmKind::Component => {
                // SAFETY: the file was written by `serialize` of this same engine build
                // (its name carries the compatibility hash) into a directory only the
                // agent writes; wasmtime also checks the header and rejects a mismatch.
                let component = match unsafe { Component::deserialize_file(&self.engine, &cached) }
                {
                    Ok(c) => c,
                    Err(_) => {
                        let c = Component::new(&self.engine, read(path)?)
                            .map_err(CacheError::Compile)?;
                        self.store(&cached, c.serialize().map_err(CacheError::Compile)?);
                        c
                    }
                };
                self.link_component(component)
            }
            WasmKind::Module => {
                // SAFETY: as above.
                let module = match unsafe { Module::deserialize_file(&self.engine, &cached) } {
                    Ok(m) => m,
                    Err(_) => {
                        let m =
                            Module::new(&self.engine, read(path)?).map_err(CacheError::Compile)?;
                        self.store(&cached, m.serialize().map_err(CacheError::Compile)?);
                        m
                    }
                };
                let pre = self
                    .module_linker
                    .instantiate_pre(&module)
                    .map_err(CacheError::Link)?;
                Ok(Loaded::Module(pre))
            }
        }
    }

    fn link_component(&self, component: Component) -> Result<Loaded, CacheError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports_iface = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
        let pre = self
            .component_linker
            .instantiate_pre(&component)
            .map_err(CacheError::Link)?;
        if exports_iface("wasi:http/incoming-handler@0.2") {
            Ok(Loaded::Http {
                pre: ProxyPre::new(pre).map_err(CacheError::Link)?,
                uses_sockets: ty
                    .imports(&self.engine)
                    .any(|(name, _)| name.starts_with("wasi:sockets/")),
            })
        } else if exports_iface("wasi:cli/run@0.2") {
            Ok(Loaded::Command(
                CommandPre::new(pre).map_err(CacheError::Link)?,
            ))
        } else {
            Err(CacheError::NoEntryPoint)
        }
    }

    /// Writes a compiled artifact; a failure only costs a compile next time.
    fn store(&self, path: &Path, bytes: Vec<u8>) {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), "could not cache compiled wasm: {e}");
        }
    }

    /// The artifact for `digest` if it is loaded already (nothing is read or compiled).
    pub fn loaded(&self, digest: &str) -> Option<Arc<Loaded>> {
        let cell = self
            .loaded
            .lock()
            .expect("cache lock")
            .get(digest)
            .cloned()?;
        cell.get().cloned()
    }

    /// Whether a compiled artifact for `digest` is on disk.
    pub fn is_cached(&self, digest: &str) -> bool {
        self.cached_path(digest).exists()
    }
}
