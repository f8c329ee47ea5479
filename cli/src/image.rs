//! `skiff image`: load a `.wasm` file or an OCI layout into the node's image store, push it
//! to a registry, list and remove images, without other tools.
//!
//! The store is `<data dir>/images`, the one the node of a `skiff up` or `skiff agent`
//! with the same data dir runs pods from, so an import needs no registry. A node that is
//! running sees an image once the import returns: the store's index is replaced by a
//! rename under an `flock`, and the node reads it again whenever it is a new file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use skiff_images::{Content, ImageStore, PullPolicy, RegistryAuth};

#[derive(clap::Args)]
#[command(after_help = "\
The store is DIR/images of --data-dir: the images the node of `skiff up` or `skiff agent` \
with the same data dir runs pods from.

Example: run a local .wasm file as a pod, without a registry:
  skiff image import app.wasm app:v1
  kubectl run app --image=app:v1 --image-pull-policy=Never --restart=Never")]
pub struct ImageArgs {
    #[command(flatten)]
    pub(crate) data_dir: crate::DataDir,
    /// No longer read (the store used to be given directly): refused with what to give.
    #[arg(long, global = true, hide = true, env = "SKIFF_IMAGE_ROOT")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// Stores a `.wasm` file (as the CNCF Wasm OCI artifact) or an OCI layout directory
    /// under REF; a pod whose image is REF runs it with imagePullPolicy Never, or
    /// IfNotPresent (the default for a tag other than `latest`).
    Import {
        /// A `.wasm` module or component, or an OCI image layout directory.
        source: PathBuf,
        /// The reference to store it under, e.g. `localhost:5000/hello:v1`.
        reference: String,
    },
    /// Pushes a stored image to the registry its reference names.
    Push {
        reference: String,
        #[command(flatten)]
        credentials: Credentials,
    },
    /// Pulls an image from its registry into the store.
    Pull {
        reference: String,
        #[command(flatten)]
        credentials: Credentials,
    },
    /// Lists the stored images.
    Ls,
    /// Removes an image; blobs no other image uses are deleted.
    Rm { reference: String },
}

#[derive(clap::Args)]
struct Credentials {
    /// Registry user name (HTTP basic auth, or to obtain a bearer token).
    #[arg(long, requires = "password")]
    username: Option<String>,
    #[arg(long, env = "SKIFF_REGISTRY_PASSWORD", requires = "username")]
    password: Option<String>,
}

impl Credentials {
    fn auth(self) -> RegistryAuth {
        match (self.username, self.password) {
            (Some(username), Some(password)) => RegistryAuth::Basic { username, password },
            _ => RegistryAuth::Anonymous,
        }
    }
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    if let Some(root) = &args.root {
        // A store given apart from the data dir is how images once missed the node.
        let data_dir = match root.file_name() {
            Some(name) if name == "images" => root.parent().map(PathBuf::from),
            _ => None,
        };
        bail!(
            "--root (or SKIFF_IMAGE_ROOT) {} is no longer read: `skiff image` works on \
             DIR/images of --data-dir DIR (or SKIFF_DATA_DIR), the data dir of the `skiff up` \
             or `skiff agent` that runs the pods; {}",
            root.display(),
            match data_dir {
                Some(dir) => format!("give --data-dir {} instead", dir.display()),
                None => format!(
                    "without it, the data dir is {}",
                    args.data_dir.path.display()
                ),
            }
        );
    }
    let root = crate::node::image_store_dir(&args.data_dir.path);
    let store = ImageStore::open(&root).with_context(|| {
        format!(
            "opening the image store at {} (see --data-dir)",
            root.display()
        )
    })?;
    match args.command {
        ImageCommand::Import { source, reference } => {
            let image = if source.is_dir() {
                store.import_layout(&source, &reference)?
            } else {
                store.import_wasm(&source, &reference)?
            };
            println!("{} {}", image.reference, image.digest);
        }
        ImageCommand::Push {
            reference,
            credentials,
        } => {
            store
                .push(&reference, &credentials.auth())
                .await
                .with_context(|| {
                    format!(
                        "pushing {reference} from the image store at {}",
                        root.display()
                    )
                })?;
            let image = store
                .get(&reference)?
                .context("image vanished during the push")?;
            println!("pushed {} {}", image.reference, image.digest);
        }
        ImageCommand::Pull {
            reference,
            credentials,
        } => {
            let image = store
                .pull(&reference, &credentials.auth(), PullPolicy::Always)
                .await?;
            let kind = match image.content {
                Content::Wasm {
                    component: true, ..
                } => "wasm component",
                Content::Wasm { .. } => "wasm module",
                Content::Layers(_) => "container image",
            };
            println!("{} {} ({kind})", image.reference, image.digest);
        }
        ImageCommand::Ls => {
            println!("{:<60} {:<8} {:>10}  DIGEST", "REFERENCE", "KIND", "SIZE");
            for image in store.list()? {
                let kind = if image.wasm { "wasm" } else { "oci" };
                println!(
                    "{:<60} {:<8} {:>10}  {}",
                    image.reference,
                    kind,
                    human_size(image.size),
                    image.digest
                );
            }
        }
        ImageCommand::Rm { reference } => {
            store.remove(&reference).with_context(|| {
                format!(
                    "removing {reference} from the image store at {}",
                    root.display()
                )
            })?;
            println!("removed {reference}");
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
