use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_podnet::{NetConfig, PodNetwork, Sandbox};

/// A config unique to this test process and test: bridge `sktest<pid%1000><tag>`, CIDR
/// 10.<200+n>.<pid%250>.0/24, state under /run/skiff-podnet-test/.
pub fn config(tag: char, n: u8, warm_pool: usize, masquerade: bool) -> NetConfig {
    let pid = std::process::id();
    let bridge = format!("sktest{}{tag}", pid % 1000);
    NetConfig {
        pod_cidr: format!("10.{}.{}.0/24", 200 + n, pid % 250)
            .parse()
            .unwrap(),
        state_dir: PathBuf::from("/run/skiff-podnet-test").join(&bridge),
        bridge,
        warm_pool,
        masquerade,
    }
}

/// Clears leftovers of a crashed run with the same names, then starts the network.
pub async fn start(config: NetConfig) -> PodNetwork {
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &config.bridge])
        .stderr(std::process::Stdio::null())
        .status();
    if config.state_dir.exists() {
        let stale = PodNetwork::new(config.clone())
            .await
            .expect("adopt stale state");
        stale.shutdown(true).await.expect("clear stale state");
    }
    PodNetwork::new(config).await.expect("start pod network")
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn links_with_prefix(prefix: &str) -> usize {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .count()
}

/// Mount points at or under `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| *mp == dir || mp.starts_with(&format!("{dir}/")))
        .count()
}

pub fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Connects from inside `from` (or from the host when `None`) and says hello; the
/// answer is whether a connection was made.
pub fn connect_from(from: Option<&Sandbox>, to: SocketAddr) -> bool {
    let attempt = move || std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok();
    match from {
        Some(s) => s.run_in(attempt).unwrap(),
        None => attempt(),
    }
}

/// Accepts one connection on a pod listener and returns the peer's address, after reading
/// what it sent.
pub async fn accept_one(listener: std::net::TcpListener) -> (Ipv4Addr, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (mut stream, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("accept in time")
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("read in time")
        .unwrap();
    match peer.ip() {
        std::net::IpAddr::V4(ip) => (ip, buf),
        other => panic!("unexpected peer {other}"),
    }
}

/// Sends `msg` to `to` from inside `from`, or from the host.
pub fn send_from(from: Option<&Sandbox>, to: SocketAddr, msg: &'static [u8]) {
    use std::io::Write;
    let send = move || -> std::io::Result<()> {
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.write_all(msg)
    };
    match from {
        Some(s) => s.run_in(send).unwrap().unwrap(),
        None => send().unwrap(),
    }
}

/// A port on 127.0.0.1 that nothing on the host listens on right now.
pub fn host_port_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Clears a test network if the test panics before its `shutdown(true)`, so a failed
/// test leaves no bridge, table or namespace behind (the veths go with the namespaces).
pub struct CleanupOnPanic(pub NetConfig);

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let cfg = &self.0;
        let run = |cmd: &str, args: &[&str]| {
            let _ = std::process::Command::new(cmd)
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        };
        let netns = cfg.state_dir.join("netns");
        if let Ok(entries) = std::fs::read_dir(&netns) {
            for e in entries.flatten() {
                run("umount", &["-l", &e.path().to_string_lossy()]);
            }
        }
        run("umount", &["-l", &netns.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&cfg.state_dir);
        run("ip", &["link", "del", &cfg.bridge]);
        run("nft", &["delete", "table", "ip", &cfg.bridge]);
    }
}

/// The /32 addresses on a bridge (address-only pods'), as `ip` lists them.
pub fn bridge_addresses(bridge: &str) -> Vec<Ipv4Addr> {
    addresses_32(None, bridge)
}

/// The /32 addresses of `dev`, in the namespace pinned at `netns` or the host's.
pub fn addresses_32(netns: Option<&std::path::Path>, dev: &str) -> Vec<Ipv4Addr> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("ip");
            c
        }
        None => std::process::Command::new("ip"),
    };
    let out = cmd
        .args(["-4", "-o", "addr", "show", "dev", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // The shared namespace's own anchor (scope host) is no pod's.
        .filter(|l| !l.contains("scope host"))
        .filter_map(|l| {
            let addr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            addr.strip_suffix("/32")?.parse().ok()
        })
        .collect()
}
