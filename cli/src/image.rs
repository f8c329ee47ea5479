//! `skiff image`: load a `.wasm` file or an OCI layout into the node's image store, push it
//! to a registry, list and remove images, without other tools.

use std::path::PathBuf;

use anyhow::Context;
use skiff_images::{Content, ImageStore, PullPolicy, RegistryAuth};

#[derive(clap::Args)]
pub struct ImageArgs {
    /// The image store (an OCI image layout).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/skiff/images",
        env = "SKIFF_IMAGE_ROOT"
    )]
    root: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// Stores a `.wasm` file (as the CNCF Wasm OCI artifact) or an OCI layout directory
    /// under REF.
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
    let store = ImageStore::open(&args.root).with_context(|| {
        format!(
            "opening the image store at {} (see --root)",
            args.root.display()
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
            store.push(&reference, &credentials.auth()).await?;
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
            store.remove(&reference)?;
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
