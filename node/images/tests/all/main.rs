//! The image store against a real registry (Debian's `docker-registry`) on loopback.

mod layers;
mod registry;

use std::path::Path;

use registry::{Registry, blobs_in, push_image, sha256, tar_gz};
use skiff_images::{
    Content, Error, ImageStore, PullPolicy, RUNWASI_LAYER_MEDIA_TYPE, RegistryAuth, RunAs,
    SPIN_LAYER_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE,
};

/// The smallest valid core module: magic and version 1, no sections.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// The smallest valid component: magic, version 0x0d, layer 1, no sections.
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// A valid core module of about 9 MiB: one custom section of filler, so a push takes
/// several chunks.
fn big_module() -> Vec<u8> {
    let name = b"filler";
    let payload: Vec<u8> = (0..9_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = CORE_MODULE.to_vec();
    out.push(0); // custom section id
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&section);
    out
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    (dir, store)
}

fn wasm_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn wasm_of(content: &Content) -> (&Path, &str, &str, bool) {
    match content {
        Content::Wasm {
            path,
            digest,
            media_type,
            component,
        } => (path, digest, media_type, *component),
        other => panic!("expected Wasm content, got {other:?}"),
    }
}

const ANON: RegistryAuth = RegistryAuth::Anonymous;

#[tokio::test]
async fn imported_wasm_survives_push_and_pull() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let (dir, local) = store();
    let big = big_module();
    for (name, bytes, component) in [
        ("core", CORE_MODULE, false),
        ("comp", COMPONENT, true),
        ("big", big.as_slice(), false),
    ] {
        let file = wasm_file(dir.path(), &format!("{name}.wasm"), bytes);
        let reference = format!("{}/wasm/{name}:v1", registry.addr);
        let imported = local.import_wasm(&file, &reference)?;
        assert_eq!(wasm_of(&imported.content).3, component);
        local.push(&reference, &ANON).await?;

        let (_d, fresh) = store();
        let pulled = fresh.pull(&reference, &ANON, PullPolicy::Always).await?;
        assert_eq!(pulled.digest, imported.digest);
        assert_eq!(pulled.reference, reference);
        let (path, digest, media_type, is_component) = wasm_of(&pulled.content);
        assert_eq!(media_type, WASM_LAYER_MEDIA_TYPE);
        assert_eq!(is_component, component);
        assert_eq!(digest, sha256(bytes));
        assert_eq!(std::fs::read(path)?, bytes);
        assert_eq!(fresh.get(&reference)?, Some(pulled));
    }
    Ok(())
}

#[tokio::test]
async fn every_wasm_media_type_format_is_recognized() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let cases = [
        (
            "cncf",
            WASM_CONFIG_MEDIA_TYPE,
            br#"{"architecture":"wasm","os":"wasip2"}"#.as_slice(),
            WASM_LAYER_MEDIA_TYPE,
            COMPONENT,
        ),
        (
            "spin",
            "application/vnd.fermyon.spin.application.v1+config",
            b"{}".as_slice(),
            SPIN_LAYER_MEDIA_TYPE,
            COMPONENT,
        ),
        (
            "runwasi",
            "application/vnd.oci.image.config.v1+json",
            br#"{"architecture":"wasm","os":"wasip1","rootfs":{"type":"layers","diff_ids":[]}}"#
                .as_slice(),
            RUNWASI_LAYER_MEDIA_TYPE,
            CORE_MODULE,
        ),
    ];
    for (name, config_type, config, layer_type, wasm) in cases {
        let reference = format!("{}/formats/{name}:v1", registry.addr);
        let digest = push_image(&reference, (config_type, config), &[(layer_type, wasm)]).await?;
        let (_d, local) = store();
        let image = local.pull(&reference, &ANON, PullPolicy::Always).await?;
        assert_eq!(image.digest, digest, "{name}");
        let (path, _, media_type, component) = wasm_of(&image.content);
        assert_eq!(media_type, layer_type, "{name}");
        assert_eq!(component, wasm == COMPONENT, "{name}");
        assert_eq!(std::fs::read(path)?, wasm, "{name}");
    }
    Ok(())
}

const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[tokio::test]
async fn wasm_entrypoint_is_read_out_of_rootfs_layers() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let base = tar_gz(
        &[("app/hello.wasm", COMPONENT), ("etc/readme", b"not wasm")],
        &[],
    );
    let top = tar_gz(&[("etc/other", b"x")], &[("bin/run", "../app/hello.wasm")]);

    // A linux-labelled image whose Entrypoint is a .wasm file.
    let by_name = format!("{}/rootfs/by-name:v1", registry.addr);
    let config =
        br#"{"os":"linux","architecture":"amd64","config":{"Entrypoint":["/app/hello.wasm"]}}"#;
    push_image(&by_name, (IMAGE_CONFIG, config), &[(TAR_GZIP, &base)]).await?;
    // A wasi/wasm image whose Entrypoint is a symlink in an upper layer.
    let by_platform = format!("{}/rootfs/by-platform:v1", registry.addr);
    let config = br#"{"os":"wasip2","architecture":"wasm","config":{"Entrypoint":["/bin/run"]}}"#;
    push_image(
        &by_platform,
        (IMAGE_CONFIG, config),
        &[(TAR_GZIP, &base), (TAR_GZIP, &top)],
    )
    .await?;

    for reference in [&by_name, &by_platform] {
        let (_d, local) = store();
        let image = local.pull(reference, &ANON, PullPolicy::Always).await?;
        let (path, digest, _, component) = wasm_of(&image.content);
        assert!(component, "{reference}");
        assert_eq!(digest, sha256(COMPONENT), "{reference}");
        assert_eq!(std::fs::read(path)?, COMPONENT);
        // Still Wasm when read back, without the registry.
        assert_eq!(local.get(reference)?, Some(image));
    }

    // An upper layer that deletes the entrypoint (a whiteout) leaves nothing to run.
    let deleted = format!("{}/rootfs/deleted:v1", registry.addr);
    let whiteout = tar_gz(&[("app/.wh.hello.wasm", b"")], &[]);
    let config =
        br#"{"os":"wasip1","architecture":"wasm","config":{"Entrypoint":["/app/hello.wasm"]}}"#;
    push_image(
        &deleted,
        (IMAGE_CONFIG, config),
        &[(TAR_GZIP, &base), (TAR_GZIP, &whiteout)],
    )
    .await?;
    let (_d, local) = store();
    let err = local
        .pull(&deleted, &ANON, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in none of its layers"), "{err}");
    assert_eq!(local.get(&deleted)?, None);

    // An entrypoint that is not Wasm is refused, naming the file.
    let fake = format!("{}/rootfs/fake:v1", registry.addr);
    let layer = tar_gz(&[("app/x.wasm", b"#!/bin/sh\necho hi\n")], &[]);
    let config = br#"{"os":"linux","architecture":"amd64","config":{"Entrypoint":["app/x.wasm"]}}"#;
    push_image(&fake, (IMAGE_CONFIG, config), &[(TAR_GZIP, &layer)]).await?;
    let err = local
        .pull(&fake, &ANON, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotWasm(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn container_images_keep_their_layers_and_config() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let layer1 = tar_gz(&[("bin/sh", b"\x7fELF...")], &[]);
    let layer2 = tar_gz(&[("etc/motd", b"hi")], &[]);
    let config = br#"{"os":"linux","architecture":"amd64","config":{
        "Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/bin","A=b"],
        "WorkingDir":"/srv","User":"1000:1000","ExposedPorts":{"8080/tcp":{}}}}"#;
    let amd64 = format!("{}/plain/app:amd64", registry.addr);
    let amd64_digest = push_image(
        &amd64,
        (IMAGE_CONFIG, config),
        &[(TAR_GZIP, &layer1), (TAR_GZIP, &layer2)],
    )
    .await?;
    let (_d, local) = store();
    let image = local.pull(&amd64, &ANON, PullPolicy::Always).await?;
    assert_eq!(image.config.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(image.config.cmd, ["echo hi"]);
    assert_eq!(image.config.env, ["PATH=/bin", "A=b"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(image.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(image.config.exposed_ports, ["8080/tcp"]);
    let Content::Layers(layers) = &image.content else {
        panic!("expected layers, got {:?}", image.content);
    };
    let digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(digests, [sha256(&layer1), sha256(&layer2)]);
    assert_eq!(std::fs::read(&layers[1].path)?, layer2);

    // An index with linux and wasi entries: a node takes the Wasm one.
    let wasm_ref = format!("{}/plain/app:wasm", registry.addr);
    let wasm_digest = push_image(
        &wasm_ref,
        (WASM_CONFIG_MEDIA_TYPE, b"{}"),
        &[(WASM_LAYER_MEDIA_TYPE, CORE_MODULE)],
    )
    .await?;
    let manifest_size =
        |digest: &str| std::fs::metadata(registry.blob_data(digest)).unwrap().len() as usize;
    let multi = format!("{}/plain/app:multi", registry.addr);
    registry::push_index(
        &multi,
        &[
            (
                &amd64_digest,
                "linux",
                "amd64",
                manifest_size(&amd64_digest),
            ),
            (&wasm_digest, "wasip1", "wasm", manifest_size(&wasm_digest)),
        ],
    )
    .await?;
    let image = local.pull(&multi, &ANON, PullPolicy::Always).await?;
    assert_eq!(image.digest, wasm_digest);
    assert!(matches!(image.content, Content::Wasm { .. }));
    Ok(())
}

/// This machine's architecture and another, in OCI's words.
fn architectures() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "arm64"),
        "aarch64" => ("arm64", "amd64"),
        other => panic!("no OCI name known here for {other}"),
    }
}

#[tokio::test]
async fn docker_schema_2_images_and_manifest_lists_give_this_machines_platform()
-> anyhow::Result<()> {
    let registry = Registry::start()?;
    let (here, elsewhere) = architectures();
    const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    let layer = tar_gz(&[("bin/app", b"\x7fELF here")], &[]);
    let config = format!(
        r#"{{"os":"linux","architecture":"{here}","config":{{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"Env":["PATH=/bin"],"WorkingDir":"/data"}}}}"#
    );
    let docker = format!("{}/docker/app:{here}", registry.addr);
    let digest = registry::push_manifest(
        &docker,
        registry::DOCKER_MANIFEST,
        (DOCKER_CONFIG, config.as_bytes()),
        &[(DOCKER_LAYER, &layer)],
    )
    .await?;
    let (_d, local) = store();
    let image = local.pull(&docker, &ANON, PullPolicy::Always).await?;
    assert_eq!(image.digest, digest);
    assert_eq!(image.config.entrypoint, ["/bin/app"]);
    assert_eq!(image.config.cmd, ["--serve"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/data"));
    let Content::Layers(layers) = &image.content else {
        panic!("expected layers, got {:?}", image.content);
    };
    assert_eq!(layers.len(), 1);
    assert_eq!(std::fs::read(&layers[0].path)?, layer);

    // A manifest list naming another architecture first: this machine's entry is taken.
    let other_layer = tar_gz(&[("bin/app", b"\x7fELF elsewhere")], &[]);
    let other_config = format!(r#"{{"os":"linux","architecture":"{elsewhere}"}}"#);
    let other = format!("{}/docker/app:{elsewhere}", registry.addr);
    let other_digest = registry::push_manifest(
        &other,
        registry::DOCKER_MANIFEST,
        (DOCKER_CONFIG, other_config.as_bytes()),
        &[(DOCKER_LAYER, &other_layer)],
    )
    .await?;
    let size = |digest: &str| std::fs::metadata(registry.blob_data(digest)).unwrap().len() as usize;
    let list = format!("{}/docker/app:multi", registry.addr);
    registry::push_list(
        &list,
        registry::DOCKER_LIST,
        registry::DOCKER_MANIFEST,
        &[
            (&other_digest, "linux", elsewhere, size(&other_digest)),
            (&digest, "linux", here, size(&digest)),
        ],
    )
    .await?;
    let image = local.pull(&list, &ANON, PullPolicy::Always).await?;
    assert_eq!(image.digest, digest);
    assert_eq!(image.config.entrypoint, ["/bin/app"]);

    // Without an entry for this machine the pull fails, naming what there is.
    let foreign = format!("{}/docker/app:foreign", registry.addr);
    registry::push_list(
        &foreign,
        registry::DOCKER_LIST,
        registry::DOCKER_MANIFEST,
        &[(&other_digest, "linux", elsewhere, size(&other_digest))],
    )
    .await?;
    let err = local
        .pull(&foreign, &ANON, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("linux/{elsewhere}")) && shown.contains(here),
        "{shown}"
    );
    Ok(())
}

#[tokio::test]
async fn an_index_of_wasm_and_linux_gives_each_runtime_its_own() -> anyhow::Result<()> {
    let mut registry = Registry::start()?;
    let (here, _) = architectures();
    let layer = tar_gz(&[("bin/app", b"\x7fELF")], &[]);
    let config = format!(r#"{{"os":"linux","architecture":"{here}"}}"#);
    let linux = format!("{}/mixed/app:linux", registry.addr);
    let linux_digest = push_image(
        &linux,
        (IMAGE_CONFIG, config.as_bytes()),
        &[(TAR_GZIP, &layer)],
    )
    .await?;
    let wasm = format!("{}/mixed/app:wasm", registry.addr);
    let wasm_digest = push_image(
        &wasm,
        (WASM_CONFIG_MEDIA_TYPE, b"{}"),
        &[(WASM_LAYER_MEDIA_TYPE, CORE_MODULE)],
    )
    .await?;
    let size = |digest: &str| std::fs::metadata(registry.blob_data(digest)).unwrap().len() as usize;
    let multi = format!("{}/mixed/app:multi", registry.addr);
    registry::push_index(
        &multi,
        &[
            (&wasm_digest, "wasip1", "wasm", size(&wasm_digest)),
            (&linux_digest, "linux", here, size(&linux_digest)),
        ],
    )
    .await?;
    let (_d, local) = store();
    // A container runtime gets the linux entry, a Wasm runtime the wasi one, and the node
    // keeps both under the one reference.
    let image = local
        .pull_as(&multi, &ANON, PullPolicy::IfNotPresent, Some(RunAs::Linux))
        .await?;
    assert_eq!(image.digest, linux_digest);
    assert!(matches!(image.content, Content::Layers(_)));
    assert!(!local.has_as(&multi, Some(RunAs::Wasm)));
    let image = local
        .pull_as(&multi, &ANON, PullPolicy::IfNotPresent, Some(RunAs::Wasm))
        .await?;
    assert_eq!(image.digest, wasm_digest);
    assert!(matches!(image.content, Content::Wasm { .. }));
    // Without a runtime's choice, the Wasm entry, as before.
    let image = local.pull(&multi, &ANON, PullPolicy::Always).await?;
    assert_eq!(image.digest, wasm_digest);
    // An index with no entry for the runtime's kind says what it has.
    let wasm_only = format!("{}/mixed/app:wasm-only", registry.addr);
    registry::push_index(
        &wasm_only,
        &[(&wasm_digest, "wasip1", "wasm", size(&wasm_digest))],
    )
    .await?;
    let err = local
        .pull_as(&wasm_only, &ANON, PullPolicy::Always, Some(RunAs::Linux))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "no manifest for linux/{here} (it has: wasip1/wasm)"
        )),
        "{err}"
    );
    local
        .pull_as(&wasm_only, &ANON, PullPolicy::Always, Some(RunAs::Wasm))
        .await?;

    // With the registry gone both stay, each for its runtime.
    registry.stop();
    for (run_as, digest) in [(RunAs::Linux, &linux_digest), (RunAs::Wasm, &wasm_digest)] {
        let image = local
            .pull_as(&multi, &ANON, PullPolicy::IfNotPresent, Some(run_as))
            .await?;
        assert_eq!(&image.digest, digest, "{run_as:?}");
    }
    // With `Never`, an image of the other kind is all there is: it is given (its runtime
    // then says why it cannot run it) rather than "not present".
    let image = local
        .pull_as(&wasm_only, &ANON, PullPolicy::Never, Some(RunAs::Linux))
        .await?;
    assert_eq!(image.digest, wasm_digest);
    // Removing the reference removes both.
    local.remove(&multi)?;
    assert!(!local.has(&multi));
    Ok(())
}

#[tokio::test]
async fn pull_policies() -> anyhow::Result<()> {
    let mut registry = Registry::start()?;
    let (dir, local) = store();
    let reference = format!("{}/policy/app:v1", registry.addr);

    let err = local
        .pull(&reference, &ANON, PullPolicy::Never)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("image \"{reference}\" not present and imagePullPolicy is Never")
    );

    let missing = format!("{}/policy/missing:v1", registry.addr);
    let err = local
        .pull(&missing, &ANON, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), format!("manifest unknown: {missing}"));

    let file = wasm_file(dir.path(), "m.wasm", CORE_MODULE);
    let (_d, publisher) = store();
    publisher.import_wasm(&file, &reference)?;
    publisher.push(&reference, &ANON).await?;
    let pulled = local
        .pull(&reference, &ANON, PullPolicy::IfNotPresent)
        .await?;

    // With the registry gone, only policies that need no registry still work.
    registry.stop();
    assert_eq!(
        local
            .pull(&reference, &ANON, PullPolicy::IfNotPresent)
            .await?,
        pulled
    );
    assert_eq!(
        local.pull(&reference, &ANON, PullPolicy::Never).await?,
        pulled
    );
    assert!(
        local
            .pull(&reference, &ANON, PullPolicy::Always)
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn a_tampered_blob_is_rejected_and_nothing_is_stored() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let reference = format!("{}/tamper/app:v1", registry.addr);
    let layer = tar_gz(&[("bin/app", b"original bytes")], &[]);
    push_image(
        &reference,
        (IMAGE_CONFIG, br#"{"os":"linux","architecture":"amd64"}"#),
        &[(TAR_GZIP, &layer)],
    )
    .await?;
    // Same size, one byte changed, straight in the registry's storage.
    let data = registry.blob_data(&sha256(&layer));
    let mut bytes = std::fs::read(&data)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes)?;

    let (_d, local) = store();
    let err = local
        .pull(&reference, &ANON, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("digest mismatch for blob {}", sha256(&layer))),
        "{err}"
    );
    assert_eq!(local.get(&reference)?, None);
    assert!(!blobs_in(local.root()).contains(&sha256(&layer)));
    assert_eq!(std::fs::read_dir(local.root().join("ingest"))?.count(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_both_succeed() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let reference = format!("{}/concurrent/app:v1", registry.addr);
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let layer = tar_gz(&[("data", &big)], &[]);
    push_image(
        &reference,
        (IMAGE_CONFIG, br#"{"os":"linux","architecture":"amd64"}"#),
        &[(TAR_GZIP, &layer)],
    )
    .await?;
    let (_d, local) = store();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let local = local.clone();
            let reference = reference.clone();
            tokio::spawn(async move { local.pull(&reference, &ANON, PullPolicy::Always).await })
        })
        .collect();
    let mut digests = Vec::new();
    for task in tasks {
        digests.push(task.await??.digest);
    }
    digests.dedup();
    assert_eq!(digests.len(), 1);
    assert_eq!(local.list()?.len(), 1);
    assert_eq!(
        std::fs::read(local.root().join("blobs/sha256").join(&sha256(&layer)[7..]))?,
        layer
    );
    Ok(())
}

#[test]
fn remove_deletes_only_unreferenced_blobs() -> anyhow::Result<()> {
    let (dir, local) = store();
    let shared = wasm_file(dir.path(), "shared.wasm", COMPONENT);
    let other = wasm_file(dir.path(), "other.wasm", CORE_MODULE);
    local.import_wasm(&shared, "localhost:5000/a:v1")?;
    local.import_wasm(&shared, "localhost:5000/b:v1")?;
    local.import_wasm(&other, "localhost:5000/c:v1")?;
    let names: Vec<String> = local.list()?.into_iter().map(|s| s.reference).collect();
    assert_eq!(
        names,
        [
            "localhost:5000/a:v1",
            "localhost:5000/b:v1",
            "localhost:5000/c:v1"
        ]
    );
    let all = blobs_in(local.root());

    local.remove("localhost:5000/a:v1")?;
    assert_eq!(blobs_in(local.root()), all, "b still uses every blob of a");
    local.remove("localhost:5000/b:v1")?;
    let left = blobs_in(local.root());
    assert!(!left.contains(&sha256(COMPONENT)));
    assert!(left.contains(&sha256(CORE_MODULE)));
    local.remove("localhost:5000/c:v1")?;
    assert!(blobs_in(local.root()).is_empty());
    assert!(local.list()?.is_empty());

    let err = local.remove("localhost:5000/c:v1").unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    Ok(())
}

#[test]
fn a_resolved_image_follows_the_index() -> anyhow::Result<()> {
    let (dir, local) = store();
    let component = wasm_file(dir.path(), "c.wasm", COMPONENT);
    let module = wasm_file(dir.path(), "m.wasm", CORE_MODULE);
    let reference = "localhost:5000/app:v1";
    let first = local.import_wasm(&component, reference)?;
    assert_eq!(
        local.get(reference)?.map(|i| i.digest),
        Some(first.digest.clone())
    );
    // Another handle on the same directory (another process) changes the tag.
    let other = ImageStore::open(local.root())?;
    let second = other.import_wasm(&module, reference)?;
    assert_ne!(first.digest, second.digest);
    assert_eq!(local.get(reference)?.map(|i| i.digest), Some(second.digest));
    other.remove(reference)?;
    assert_eq!(local.get(reference)?, None, "removed elsewhere, gone here");
    Ok(())
}

#[test]
fn import_from_an_oci_layout_and_refuse_non_wasm() -> anyhow::Result<()> {
    let (dir, first) = store();
    let file = wasm_file(dir.path(), "m.wasm", COMPONENT);
    let original = first.import_wasm(&file, "localhost:5000/layout/app:v1")?;
    // A store is an OCI layout itself.
    let (_d, second) = store();
    let copied = second.import_layout(first.root(), "localhost:5000/copy:v2")?;
    assert_eq!(copied.digest, original.digest);
    assert_eq!(wasm_of(&copied.content).1, wasm_of(&original.content).1);

    let text = wasm_file(dir.path(), "not.wasm", b"hello");
    let err = second
        .import_wasm(&text, "localhost:5000/x:v1")
        .unwrap_err();
    assert!(matches!(err, Error::NotWasm(_)), "{err}");
    let err = second
        .import_layout(dir.path(), "localhost:5000/x:v1")
        .unwrap_err();
    assert!(err.to_string().contains("no oci-layout file"), "{err}");
    Ok(())
}

#[tokio::test]
async fn basic_auth_registry() -> anyhow::Result<()> {
    let registry = Registry::start_with_basic_auth("alice", "wonderland")?;
    let (dir, local) = store();
    let reference = format!("{}/private/app:v1", registry.addr);
    let file = wasm_file(dir.path(), "m.wasm", COMPONENT);
    let imported = local.import_wasm(&file, &reference)?;

    let err = local.push(&reference, &ANON).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    let wrong = RegistryAuth::Basic {
        username: "alice".into(),
        password: "nope".into(),
    };
    assert!(matches!(
        local.push(&reference, &wrong).await.unwrap_err(),
        Error::Unauthorized { .. }
    ));

    // The credentials as an imagePullSecret would hold them.
    let secret = format!(
        r#"{{"auths":{{"{}":{{"username":"alice","password":"wonderland"}}}}}}"#,
        registry.addr
    );
    let auth = skiff_images::auth_from_docker_config(secret.as_bytes(), &registry.addr)?;
    local.push(&reference, &auth).await?;

    let (_d, fresh) = store();
    let err = fresh
        .pull(&reference, &ANON, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    let pulled = fresh.pull(&reference, &auth, PullPolicy::Always).await?;
    assert_eq!(pulled.digest, imported.digest);
    Ok(())
}

#[test]
fn garbage_collection_removes_unused_images_least_recently_used_first() -> anyhow::Result<()> {
    let (dir, local) = store();
    for (name, bytes) in [("a", COMPONENT), ("b", CORE_MODULE), ("c", COMPONENT)] {
        let file = wasm_file(dir.path(), &format!("{name}.wasm"), bytes);
        local.import_wasm(&file, &format!("localhost:5000/{name}:v1"))?;
    }
    let size = |r: &str| {
        local
            .list()
            .unwrap()
            .into_iter()
            .find(|i| i.reference == r)
            .unwrap()
            .size
    };
    // A container of c started lately, then one of a; b was never used.
    local.get("localhost:5000/c:v1")?;
    std::thread::sleep(std::time::Duration::from_millis(10));
    local.get("localhost:5000/a:v1")?;

    // Nothing to free: nothing goes.
    assert!(local.free_space(0, &[])?.is_empty());
    // Room for one image: the never used one goes, not the one a pod names.
    let removed = local.free_space(1, &["localhost:5000/c:v1".into()])?;
    assert_eq!(removed, ["localhost:5000/b:v1"]);
    // More than all the unused images hold: every unused image goes, in LRU order; the
    // one in use stays whatever is asked.
    let removed = local.free_space(
        size("localhost:5000/a:v1") + size("localhost:5000/c:v1") + 1,
        &["localhost:5000/a:v1".into()],
    )?;
    assert_eq!(removed, ["localhost:5000/c:v1"]);
    let left: Vec<String> = local.list()?.into_iter().map(|s| s.reference).collect();
    assert_eq!(left, ["localhost:5000/a:v1"]);

    // Against this test machine's real disk: below a 100% threshold nothing is collected.
    let policy = skiff_images::GcPolicy {
        high_percent: 100,
        low_percent: 99,
    };
    assert!(local.collect_garbage(policy, &[])?.is_empty());
    assert_eq!(local.list()?.len(), 1);
    // Above a 0% threshold, every unused image is.
    let policy = skiff_images::GcPolicy {
        high_percent: 0,
        low_percent: 0,
    };
    assert_eq!(local.collect_garbage(policy, &[])?, ["localhost:5000/a:v1"]);
    Ok(())
}
