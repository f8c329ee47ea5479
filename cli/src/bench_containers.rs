//! `skiff bench runtimes` and `skiff bench containers`: Linux containers measured next to
//! their peers on this machine.
//!
//! * `runtimes`: create + start + wait + delete of `/bin/true` in one busybox bundle, by the
//!   container shim's helper (the path every container pod takes), by `crun` and by `runc`
//!   (Debian packages), one container at a time. crun 1.8 refuses hybrid cgroup hosts
//!   ("cgroups in hybrid mode not supported"), so on such a host the whole benchmark runs in
//!   a private mount namespace without the cgroup v2 mount (the v1 controllers stay), the
//!   same for all three.
//! * `containers`: pod startup (creation to Running through a watch, image present) of the
//!   HTTP example as a static Linux binary in a container next to the same app as a Wasm
//!   component, and a burst of short container pods.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::bench::{machine, percentile};
use crate::bench_pods::{
    BenchCluster, clear, create_all, startup_latencies, store_revision, wait_count, watch_phases,
};

/// Set in the re-executed benchmark that runs in its own mount namespace.
const PRIVATE_MOUNTS: &str = "SKIFF_BENCH_PRIVATE_MOUNTS";

fn summary(name: &str, mut times: Vec<Duration>) -> String {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    format!(
        "{name}: p50 {:.1} ms, mean {:.1} ms, p99 {:.1} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3
    )
}

/// A bundle of busybox's `/bin/true` with the shim's own spec (host network, so that no
/// runtime pays for a network namespace the others skip).
fn busybox_bundle(dir: &Path) -> anyhow::Result<(PathBuf, oci_spec::runtime::Spec)> {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("copying /bin/busybox (Debian busybox-static)")?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true"))?;
    let input = skiff_shim_container::SpecInput {
        argv: vec!["/bin/true".into()],
        user: skiff_shim_container::ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![0],
            home: "/".into(),
        },
        rootfs,
        hostname: "bench".into(),
        cgroups_path: PathBuf::from("/skiff-bench/c"),
        cgroup_v2: skiff_shim_container::host_cgroup_v2(),
        ..Default::default()
    };
    let spec = skiff_shim_container::runtime_spec(&input)?;
    Ok((dir.to_path_buf(), spec))
}

fn write_spec(bundle: &Path, spec: &oci_spec::runtime::Spec) -> anyhow::Result<()> {
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(spec)?)?;
    Ok(())
}

fn null() -> anyhow::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

/// Installs `packages` with apt-get when `binary` is missing.
fn ensure_installed(binary: &str, package: &str) -> anyhow::Result<()> {
    let present =
        Path::new("/usr/bin").join(binary).exists() || Path::new("/usr/sbin").join(binary).exists();
    if present {
        return Ok(());
    }
    println!("installing {package} (apt-get)");
    let ok = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    anyhow::ensure!(ok, "apt-get install {package} failed");
    Ok(())
}

/// Times `<runtime> run` (create, start, wait, delete) of the bundle, one at a time.
fn cli_runtime(runtime: &str, bundle: &Path, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let root = tempfile::tempdir()?;
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let out = std::process::Command::new(runtime)
            .arg("--root")
            .arg(root.path())
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(format!("bench-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        times.push(t.elapsed());
        anyhow::ensure!(
            out.status.success(),
            "{runtime} run: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(times)
}

/// Hides the cgroup v2 mount of a hybrid host from this process (already in its own mount
/// namespace) and everything it starts.
fn hide_unified_mount() -> anyhow::Result<()> {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.exists() {
        nix::mount::umount2(unified, nix::mount::MntFlags::MNT_DETACH)
            .context("unmounting /sys/fs/cgroup/unified in the benchmark's mount namespace")?;
    }
    Ok(())
}

pub async fn runtimes(iterations: usize) -> anyhow::Result<()> {
    let hybrid = Path::new("/sys/fs/cgroup/unified").exists();
    if hybrid && std::env::var_os(PRIVATE_MOUNTS).is_none() {
        // Again, in a mount namespace of its own (util-linux unshare makes it private).
        let status = tokio::process::Command::new("unshare")
            .arg("-m")
            .arg("--")
            .arg(std::env::current_exe()?)
            .args(["bench", "runtimes", "--iterations", &iterations.to_string()])
            .env(PRIVATE_MOUNTS, "1")
            .status()
            .await
            .context("running unshare -m (util-linux)")?;
        anyhow::ensure!(status.success(), "the benchmark failed");
        return Ok(());
    }
    if hybrid {
        hide_unified_mount()?;
    }
    ensure_installed("crun", "crun")?;
    ensure_installed("runc", "runc")?;
    println!("machine: {}", machine());
    let dir = tempfile::tempdir()?;
    let (bundle, spec) = busybox_bundle(dir.path())?;

    // The shim: one helper, as the node agent runs it.
    let mut adapted = spec.clone();
    skiff_shim_container::adapt_for_libcontainer(&mut adapted, &bundle)?;
    write_spec(&bundle, &adapted)?;
    let state = tempfile::tempdir()?;
    let helper = skiff_shim_container::Helper::spawn(
        &std::env::current_exe()?,
        &[crate::CONTAINER_HELPER],
        state.path(),
    )?;
    let mut shim = Vec::with_capacity(iterations);
    let mut phases = [Duration::ZERO; 4];
    // One unmeasured round each, so that no runtime pays for a cold cache.
    for i in 0..=iterations {
        let id = format!("bench-{i}");
        let t = Instant::now();
        helper
            .create(&id, &bundle, null()?, null()?, null()?)
            .await?;
        let created = t.elapsed();
        helper.start(&id).await?;
        let started = t.elapsed();
        let exit = helper.wait(&id).await.context("no exit reported")?;
        let exited = t.elapsed();
        helper.delete(&id).await?;
        if i > 0 {
            shim.push(t.elapsed());
            phases[0] += created;
            phases[1] += started - created;
            phases[2] += exited - started;
            phases[3] += t.elapsed() - exited;
        }
        anyhow::ensure!(exit.code == 0, "the container exited with {}", exit.code);
    }
    drop(helper);
    if std::env::var_os("SKIFF_BENCH_PHASES").is_some() {
        let n = iterations.max(1) as u32;
        println!(
            "shim phases (mean): create {:?}, start {:?}, run to exit {:?}, delete {:?}",
            phases[0] / n,
            phases[1] / n,
            phases[2] / n,
            phases[3] / n
        );
    }

    write_spec(&bundle, &spec)?;
    cli_runtime("crun", &bundle, 1)?;
    let crun = cli_runtime("crun", &bundle, iterations)?;
    cli_runtime("runc", &bundle, 1)?;
    let runc = cli_runtime("runc", &bundle, iterations)?;
    let version = |bin: &str| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    println!(
        "create+start+wait+delete of /bin/true in a busybox bundle, {iterations} one after another{}:",
        if hybrid {
            " (private mount namespace without the cgroup v2 mount: crun refuses hybrid hosts)"
        } else {
            ""
        }
    );
    println!(
        "  {}",
        summary("skiff container shim (libcontainer 0.7, helper)", shim)
    );
    println!(
        "  {}",
        summary(&format!("crun ({})", version("crun")), crun)
    );
    println!(
        "  {}",
        summary(&format!("runc ({})", version("runc")), runc)
    );
    Ok(())
}

const BUSYBOX: &str = "bench.local/skiff/busybox:v1";
const HTTP_SERVER: &str = "bench.local/skiff/http-server:v1";
const HTTP_WASM: &str = "bench.local/skiff/http:v1";

fn pod(name: &str, image: &str, args: &[&str], restart: &str, port: bool) -> Pod {
    let mut container = serde_json::json!({
        "name": "app",
        "image": image,
        "imagePullPolicy": "Never",
    });
    if !args.is_empty() {
        container["command"] = serde_json::json!(args);
    }
    if port {
        container["ports"] = serde_json::json!([{"containerPort": 8080}]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }))
    .expect("pod")
}

/// Creation-to-Running times of `pods` HTTP pods of `image` created at `rate` a second.
async fn startup(
    api: &Api<Pod>,
    prefix: &str,
    image: &str,
    pods: usize,
    rate: u64,
) -> anyhow::Result<Vec<Duration>> {
    startup_latencies(api, pods, rate, |i| {
        pod(&format!("{prefix}-{i}"), image, &[], "Always", true)
    })
    .await
}

pub async fn containers(pods: usize, rate: u64, burst: usize) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/build");
    let layouts = [
        (root.join("busybox-oci"), BUSYBOX, "examples/build.sh"),
        (
            root.join("http-server-oci"),
            HTTP_SERVER,
            "examples/images/http-server.sh",
        ),
    ];
    let mut imports = vec![(root.join("http.wasm"), HTTP_WASM, "examples/build.sh")];
    imports.extend(layouts);
    for (path, _, script) in &imports {
        anyhow::ensure!(path.exists(), "{} is missing: run {script}", path.display());
    }
    let cluster = BenchCluster::start_with(&imports).await?;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    println!("machine: {}", machine());

    // Warm-up: one pod of each (the Wasm one compiles once; the container's layer is
    // unpacked once).
    startup(&api, "warm-wasm", HTTP_WASM, 1, 1).await?;
    startup(&api, "warm-container", HTTP_SERVER, 1, 1).await?;
    clear(&api).await?;

    // 1. The same HTTP app, side by side: Wasm pods, then container pods, same rate.
    let wasm = startup(&api, "wasm", HTTP_WASM, pods, rate).await?;
    clear(&api).await?;
    let linux = startup(&api, "container", HTTP_SERVER, pods, rate).await?;
    clear(&api).await?;
    println!(
        "pod startup of the HTTP example ({pods} pods at {rate}/s, creation to Running via a watch, image present):"
    );
    println!("  {}", summary("wasm component (wasmtime)", wasm));
    println!(
        "  {}",
        summary("static Linux binary in a container (libcontainer)", linux)
    );

    // 2. A burst of short container pods, created from 32 clients at once, on a node done
    // with the pods before (their containers and sandboxes go after their API objects).
    let seen = watch_phases(api.clone(), &["Succeeded"]);
    settle().await?;
    let rev_before = store_revision(&api).await?;
    let cpu_before = machine_cpu()?;
    let t0 = Instant::now();
    create_all(&api, burst, 32, |i| {
        pod(&format!("burst-{i}"), BUSYBOX, &["true"], "Never", false)
    })
    .await?;
    let created = t0.elapsed();
    wait_count(&seen, burst, Duration::from_secs(600)).await?;
    let took = t0.elapsed();
    // The whole machine's: the helpers and the containers' own processes are not
    // `skiff up`'s threads, and the burst keeps both CPUs busy.
    let cpu = machine_cpu()?.saturating_sub(cpu_before);
    let writes = store_revision(&api).await?.saturating_sub(rev_before);
    println!(
        "burst of {burst} short container pods (busybox true): all Succeeded in {:.2} s = {:.0} pods/s (all created after {:.2} s; per pod {:.2} ms of the machine's CPU, {:.1} store writes)",
        took.as_secs_f64(),
        burst as f64 / took.as_secs_f64(),
        created.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / burst.max(1) as f64,
        writes as f64 / burst.max(1) as f64,
    );
    cluster.stop(&api).await;
    Ok(())
}

/// CPU time every CPU of the machine has spent busy (all but idle and iowait) since boot,
/// from `/proc/stat`.
/// Waits (up to 20 s) until the machine is idle: under a tenth of a CPU busy over a
/// quarter of a second.
async fn settle() -> anyhow::Result<()> {
    let window = Duration::from_millis(250);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let before = machine_cpu()?;
        tokio::time::sleep(window).await;
        if machine_cpu()?.saturating_sub(before) < window / 10 {
            break;
        }
    }
    Ok(())
}

fn machine_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    anyhow::ensure!(ticks.len() >= 8, "/proc/stat: {line}");
    // user nice system idle iowait irq softirq steal
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(busy * 1_000_000 / hz))
}
