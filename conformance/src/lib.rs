//! Harness for black-box tests of a running Skiff cluster: starts `skiff up` on a free port
//! with a temporary data dir (on the embedded store or on a real etcd it starts too), writes
//! a kubeconfig, and runs the real kubectl against it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_store::local_etcd::LocalEtcd;

/// kubectl binaries by minor version, as installed on these machines.
pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// Which store the cluster runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

/// The `skiff` binary: `$SKIFF_BIN`, or the one cargo built next to this test binary.
pub fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/all-<hash> -> target/<profile>/skiff
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("skiff"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p skiff` (the README's test command does)",
        bin.display()
    );
    bin
}

/// A port for a server a test starts, free now and never handed out twice in a run.
///
/// Not one the kernel picks (`bind` to port 0): those come from the ephemeral range
/// (32768 and up), where every outgoing connection of the tests running meanwhile (kubectl,
/// clients, agents) also takes its local port, so one could take it between this check and
/// the server's bind ("Address already in use"). Ports below that range are only ever taken
/// by a bind that asks for them.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Where this run starts in the span: apart from another test binary running meanwhile.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

fn wait_for_port(port: u16, timeout: Duration) {
    wait_for_address("127.0.0.1", port, timeout)
}

fn wait_for_address(host: &str, port: u16, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect((host, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {host}:{port} after {timeout:?}");
}

/// A running `skiff up`, stopped on drop.
pub struct Cluster {
    /// More flags `skiff up` was started with.
    flags: Vec<String>,
    child: Child,
    pub backend: Backend,
    pub url: String,
    pub kubeconfig: PathBuf,
    port: u16,
    /// The address the API server listens on (loopback, or a test bridge's).
    host: String,
    store: String,
    pub node: Option<NodeNet>,
    /// Whether `skiff up` runs a node itself (else its pod network is for `skiff agent`s).
    local_node: bool,
    /// Where `skiff up` keeps its state: `<dir>/data`, given with `--data-dir`, or the
    /// default under the HOME it runs with (see [`Cluster::start_with_node_in_home`]).
    pub data_dir: PathBuf,
    data_dir_given: bool,
    pub dir: tempfile::TempDir,
    _etcd: Option<LocalEtcd>,
}

/// The node part of a cluster: its bridge and pod network are unique per cluster, so
/// clusters of parallel tests do not meet.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub bridge: String,
    pub cluster_cidr: String,
}

static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl NodeNet {
    fn unique() -> NodeNet {
        let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid = std::process::id();
        NodeNet {
            bridge: format!("skc{}x{n}", pid % 100_000),
            // 10.100.0.0/16 to 10.199.0.0/16: away from podnet's tests (10.200+) and
            // from the default 10.244.0.0/16.
            cluster_cidr: format!("10.{}.0.0/16", 100 + (pid as u32 * 7 + n) % 100),
        }
    }
}

/// The `skiff` binary in the environment of a cluster's user: HOME is the cluster's
/// temporary dir, and nothing else names a data dir.
fn skiff_in_home(home: &Path) -> Command {
    let mut command = Command::new(skiff_bin());
    command
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("SKIFF_DATA_DIR");
    command
}

#[allow(clippy::too_many_arguments)]
fn spawn_skiff(
    dir: &Path,
    data_dir: Option<&Path>,
    host: &str,
    port: u16,
    store: &str,
    node: Option<&NodeNet>,
    local_node: bool,
    extra: &[String],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("skiff.log"))
        .expect("log file");
    let mut command = skiff_in_home(dir);
    command.arg("up");
    if let Some(data_dir) = data_dir {
        command.arg("--data-dir").arg(data_dir);
    }
    command
        .args(["--listen", &format!("{host}:{port}")])
        .args(["--store", store])
        .args(match node {
            None => vec!["--no-node".to_string()],
            Some(n) if !local_node => vec![
                "--no-node".into(),
                "--cluster-cidr".into(),
                n.cluster_cidr.clone(),
            ],
            Some(n) => vec![
                "--bridge".into(),
                n.bridge.clone(),
                "--cluster-cidr".into(),
                n.cluster_cidr.clone(),
                "--agent-port".into(),
                "0".into(),
                "--warm-sandboxes".into(),
                "4".into(),
            ],
        })
        .args(extra)
        .env("SKIFF_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start skiff up")
}

impl Cluster {
    /// The control plane alone (`skiff up --no-node`).
    pub fn start(backend: Backend) -> Cluster {
        Self::start_inner(backend, None, false, true, &[])
    }

    /// A whole cluster: control plane and a node running pods (needs root).
    pub fn start_with_node(backend: Backend) -> Cluster {
        let cluster = Self::start_inner(backend, Some(NodeNet::unique()), true, true, &[]);
        cluster.wait_for_node();
        cluster
    }

    /// As [`Cluster::start_with_node`], with `skiff up` given no `--data-dir`: its data dir
    /// is the default under the HOME it runs with, as on a user's machine, so commands run
    /// with [`Cluster::skiff`] meet it only if their defaults agree.
    pub fn start_with_node_in_home(backend: Backend) -> Cluster {
        let cluster = Self::start_inner(backend, Some(NodeNet::unique()), true, false, &[]);
        cluster.wait_for_node();
        cluster
    }

    /// A `skiff` command run as the cluster's user runs one beside `skiff up`: the same
    /// HOME, no `--data-dir` unless the caller gives one.
    pub fn skiff(&self) -> Command {
        skiff_in_home(self.dir.path())
    }

    /// The control plane alone, with a pod network of its own for nodes started with
    /// [`Cluster::start_agent`].
    pub fn start_for_agents(backend: Backend) -> Cluster {
        Self::start_for_agents_with(backend, &[])
    }

    /// As [`Cluster::start_for_agents`], with more flags for `skiff up`.
    pub fn start_for_agents_with(backend: Backend, flags: &[&str]) -> Cluster {
        Self::start_inner(backend, Some(NodeNet::unique()), false, true, flags)
    }

    /// A `skiff agent` process joining this cluster as node `name` (needs root): its own
    /// data dir and bridge, stopped with SIGTERM on drop.
    pub fn start_agent(&self, name: &str) -> AgentNode {
        self.start_agent_with(name, &[])
    }

    /// A `skiff agent` joining through another API server of this cluster (`server`).
    pub fn start_agent_on(&self, name: &str, server: &str) -> AgentNode {
        let mut agent = self.start_agent_with(name, &[]);
        agent.kill();
        agent.server = server.to_string();
        agent.spawn();
        agent
    }

    /// A second `skiff server` on this cluster's store (a real etcd: start the cluster with
    /// `Backend::Etcd`), serving the same API on its own port.
    pub fn start_second_server(&self) -> SecondServer {
        let port = free_port();
        let dir = self.dir.path().join(format!("server-{port}"));
        std::fs::create_dir_all(&dir).expect("server dir");
        let log = std::fs::File::create(dir.join("skiff.log")).expect("log file");
        let mut command = skiff_in_home(self.dir.path());
        command
            .arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--store", &self.store]);
        if let Some(n) = &self.node {
            command.args(["--cluster-cidr", &n.cluster_cidr]);
        }
        let child = command
            .args(&self.flags)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff server");
        wait_for_port(port, Duration::from_secs(20));
        let url = format!("http://127.0.0.1:{port}");
        let kubeconfig = dir.join("kubeconfig");
        let original = std::fs::read_to_string(&self.kubeconfig).expect("the cluster's kubeconfig");
        std::fs::write(&kubeconfig, original.replace(&self.url, &url)).expect("kubeconfig");
        SecondServer {
            child: Some(child),
            url,
            kubeconfig,
            dir,
            home: self.dir.path().to_path_buf(),
        }
    }

    /// As [`Cluster::start_agent`], with more flags for `skiff agent`.
    pub fn start_agent_with(&self, name: &str, flags: &[&str]) -> AgentNode {
        self.agent(name, flags, None)
    }

    /// The control plane alone, listening on the test bridge of `hosts` (a pod network of
    /// its own for the agents started there with [`Cluster::start_agent_in`]), load
    /// balancer addresses from [`TestHosts::load_balancer_pool`].
    pub fn start_for_hosts(backend: Backend, hosts: &TestHosts) -> Cluster {
        let pool = hosts.load_balancer_pool();
        Self::start_on(
            &hosts.gateway.to_string(),
            backend,
            Some(NodeNet::unique()),
            false,
            true,
            &["--load-balancer-pool", &format!("{}-{}", pool.0, pool.1)],
        )
    }

    /// A `skiff agent` joining as node `name` on host `i` of `hosts`: inside that host's
    /// network namespace, at its address, with its own bridge and pod CIDR, reaching the
    /// API server over the test bridge. Its image store is its own (see
    /// [`AgentNode::import`]): a host reaches no loopback registry.
    pub fn start_agent_in(&self, name: &str, hosts: &TestHosts, i: usize) -> AgentNode {
        self.agent(
            name,
            &[],
            Some((hosts.netns(i).to_string(), hosts.address(i))),
        )
    }

    fn agent(&self, name: &str, flags: &[&str], host: Option<(String, Ipv4Addr)>) -> AgentNode {
        let net = self
            .node
            .as_ref()
            .expect("start the cluster with Cluster::start_for_agents");
        let n = AGENTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut agent = AgentNode {
            child: None,
            name: name.to_string(),
            server: self.url.clone(),
            bridge: format!("{}a{n}", net.bridge),
            dir: self.dir.path().join(format!("agent-{name}")),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            host,
        };
        agent.spawn();
        agent
    }

    fn wait_for_node(&self) {
        let start = Instant::now();
        while !self.log().contains("skiff: node ") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the node did not start; skiff's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_inner(
        backend: Backend,
        node: Option<NodeNet>,
        local_node: bool,
        data_dir_given: bool,
        flags: &[&str],
    ) -> Cluster {
        Self::start_on(
            "127.0.0.1",
            backend,
            node,
            local_node,
            data_dir_given,
            flags,
        )
    }

    fn start_on(
        host: &str,
        backend: Backend,
        node: Option<NodeNet>,
        local_node: bool,
        data_dir_given: bool,
        flags: &[&str],
    ) -> Cluster {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let etcd = (backend == Backend::Etcd)
            .then(|| LocalEtcd::start(None).expect("start a real etcd (.ci/deps installs it)"));
        let store = match &etcd {
            Some(e) => format!("etcd://{}", e.host_port()),
            None => "embedded".into(),
        };
        // Where `skiff up` keeps its data without `--data-dir`, by the HOME it runs with.
        let data_dir = if data_dir_given {
            dir.path().join("data")
        } else {
            dir.path().join(".local/share/skiff")
        };
        let child = spawn_skiff(
            dir.path(),
            data_dir_given.then_some(data_dir.as_path()),
            host,
            port,
            &store,
            node.as_ref(),
            local_node,
            &flags,
        );
        let cluster = Cluster {
            flags,
            child,
            backend,
            url: format!("http://{host}:{port}"),
            kubeconfig: data_dir.join("kubeconfig"),
            port,
            host: host.to_string(),
            store,
            node,
            local_node,
            data_dir,
            data_dir_given,
            dir,
            _etcd: etcd,
        };
        cluster.wait_ready();
        cluster
    }

    /// Kills the server with SIGKILL and starts it again on the same data (and etcd).
    pub fn restart_after_kill(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.kubeconfig);
        self.child = spawn_skiff(
            self.dir.path(),
            self.data_dir_given.then_some(self.data_dir.as_path()),
            &self.host,
            self.port,
            &self.store,
            self.node.as_ref(),
            self.local_node,
            &self.flags,
        );
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while !self.kubeconfig.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "skiff up wrote no kubeconfig; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_for_address(&self.host, self.port, Duration::from_secs(10));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("skiff.log")).unwrap_or_default()
    }

    /// A kubectl of the given minor version (`"1.33"`) bound to this cluster, with its own
    /// discovery cache.
    /// One request straight to the API server, as plain curl sends it: the status code and
    /// the body as JSON (a body that is not JSON comes back as a JSON string).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl AsRef<[u8]>,
    ) -> (u16, serde_json::Value) {
        let out = output_with_stdin(
            Command::new("curl")
                .args(["-sS", "-X", method, "-H"])
                .arg(format!("Content-Type: {content_type}"))
                .args(["--data-binary", "@-", "-w", "\n%{http_code}"])
                .arg(format!("{}{path}", self.url)),
            body.as_ref(),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text
            .rsplit_once('\n')
            .expect("curl printed the status code");
        let code: u16 = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "{method} {path}: no status code: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let body = serde_json::from_str(body)
            .unwrap_or_else(|_| serde_json::Value::String(body.to_string()));
        (code, body)
    }

    pub fn kubectl(&self, version: &str) -> Kubectl {
        let bin = PathBuf::from(KUBECTL_DIR).join(format!("kubectl.{version}"));
        assert!(bin.exists(), "{} is missing", bin.display());
        Kubectl {
            bin,
            kubeconfig: self.kubeconfig.clone(),
            home: self.dir.path().join(format!("home-{version}")),
        }
    }

    /// Stops the server with SIGKILL (no chance to flush anything).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.local_node {
            // SIGTERM: the node releases its bridge, sandboxes and NAT table.
            terminate(&mut self.child);
        }
        self.kill();
    }
}

/// SIGTERM, then up to 15 s for the process to exit.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static AGENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Another `skiff server` of a cluster, killed on drop.
pub struct SecondServer {
    child: Option<Child>,
    pub url: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    home: PathBuf,
}

impl SecondServer {
    pub fn kubectl(&self, version: &str) -> Kubectl {
        let bin = PathBuf::from(KUBECTL_DIR).join(format!("kubectl.{version}"));
        Kubectl {
            bin,
            kubeconfig: self.kubeconfig.clone(),
            home: self.home.join(format!("home-second-{version}")),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("skiff.log")).unwrap_or_default()
    }
}

impl Drop for SecondServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `skiff agent` process: a node of its own (data dir, bridge) joined to a cluster.
pub struct AgentNode {
    child: Option<Child>,
    pub name: String,
    server: String,
    pub bridge: String,
    /// The agent's data dir (images, pod dirs, logs).
    pub dir: PathBuf,
    /// More flags for `skiff agent`.
    flags: Vec<String>,
    /// The test host it runs on: a network namespace (`/run/netns/<name>`) and its
    /// address there; `None`: this machine's namespace, on loopback.
    host: Option<(String, Ipv4Addr)>,
}

impl AgentNode {
    /// Imports a `.wasm` file or an OCI layout into the node's own image store as
    /// `reference` (for hosts that cannot reach a loopback registry); pods naming it
    /// with `imagePullPolicy: IfNotPresent` (a tag's default) run it from there.
    pub fn import(&self, source: &Path, reference: &str) {
        let out = Command::new(skiff_bin())
            .args(["image", "--data-dir"])
            .arg(&self.dir)
            .arg("import")
            .arg(source)
            .arg(reference)
            .output()
            .expect("run skiff image import");
        assert!(
            out.status.success(),
            "skiff image import {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The node's address: its test host's, or loopback.
    pub fn address(&self) -> Ipv4Addr {
        self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, |h| h.1)
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("agent dir");
        // The log is appended to across restarts: each start prints its ready line once.
        let started_before = self.log().matches("skiff: node ").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("agent log");
        let mut command = match &self.host {
            None => Command::new(skiff_bin()),
            Some((netns, _)) => {
                // nsenter joins the namespace and becomes the agent (no fork).
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{netns}")).arg(skiff_bin());
                c
            }
        };
        let child = command
            .arg("agent")
            .args(["--server", &self.server])
            .arg("--data-dir")
            .arg(&self.dir)
            .args([
                "--node-name",
                &self.name,
                "--node-ip",
                &self.address().to_string(),
            ])
            .args(["--bridge", &self.bridge, "--agent-port", "0"])
            .args(["--warm-sandboxes", "2"])
            .args(&self.flags)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff agent");
        self.child = Some(child);
        let start = Instant::now();
        while self.log().matches("skiff: node ").count() <= started_before {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "agent {} did not start; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: the agent and every Wasm instance in it die at once, its sandboxes stay.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again on the same data dir and bridge.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            terminate(c);
        }
        self.kill();
    }
}

/// Machines for one test: network namespaces it makes (`/run/netns/<name>`), each a host
/// with its own `eth0` and address on one test bridge in this namespace, which holds the
/// bridge's first address (where a control plane for them listens) and routes nothing
/// further: 198.18.<k>.0/24 (RFC 2544's benchmarking range, never a real network's).
/// Everything goes when it is dropped.
pub struct TestHosts {
    pub bridge: String,
    pub gateway: Ipv4Addr,
    hosts: Vec<(String, Ipv4Addr)>,
}

static TEST_HOSTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestHosts {
    pub fn new(count: usize) -> TestHosts {
        let n = TEST_HOSTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = (std::process::id() * 7 + n) % 250;
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let bridge = format!("skt{tag}");
        let gateway = Ipv4Addr::new(198, 18, id as u8, 1);
        let mut hosts = TestHosts {
            bridge: bridge.clone(),
            gateway,
            hosts: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..count {
            let netns = format!("skh{tag}h{i}");
            let veth = format!("skv{tag}h{i}");
            let address = Ipv4Addr::new(198, 18, id as u8, 10 + i as u8);
            ip(&["netns", "add", &netns]);
            hosts.hosts.push((netns.clone(), address));
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ]);
            ip(&["link", "set", &veth, "master", &bridge, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["-n", netns.as_str()];
                all.extend_from_slice(args);
                ip(&all);
            };
            inside(&["link", "set", "lo", "up"]);
            inside(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
            inside(&["link", "set", "eth0", "up"]);
            inside(&["route", "add", "default", "via", &gateway.to_string()]);
        }
        hosts
    }

    /// The network namespace of host `i`.
    pub fn netns(&self, i: usize) -> &str {
        &self.hosts[i].0
    }

    /// The address of host `i` on the test bridge.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].1
    }

    /// Free addresses on the test bridge for load balancers (first, last).
    pub fn load_balancer_pool(&self) -> (Ipv4Addr, Ipv4Addr) {
        let [a, b, c, _] = self.gateway.octets();
        (Ipv4Addr::new(a, b, c, 200), Ipv4Addr::new(a, b, c, 220))
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        for (netns, _) in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// A real OCI registry (Debian's `docker-registry`) on a free loopback port, with the
/// example guests pushed to it by `skiff image`.
pub struct Registry {
    child: Child,
    pub host: String,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (.ci/deps installs it)");
        wait_for_port(port, Duration::from_secs(10));
        Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
        }
    }

    /// Imports an example guest (`examples/build/<file>`) and pushes it as
    /// `<host>/skiff/<name>:v1`; returns the reference.
    pub fn push_example(&self, file: &str, name: &str) -> String {
        let path = repo_root().join("examples/build").join(file);
        assert!(
            path.exists(),
            "{} is missing: run examples/build.sh",
            path.display()
        );
        self.push(&path, name)
    }

    /// Imports a `.wasm` file or an OCI layout directory and pushes it as
    /// `<host>/skiff/<name>:v1`; returns the reference.
    pub fn push(&self, source: &Path, name: &str) -> String {
        self.push_tagged(source, name, "v1")
    }

    /// As [`Registry::push`], as `<host>/skiff/<name>:<tag>`.
    pub fn push_tagged(&self, source: &Path, name: &str, tag: &str) -> String {
        let wasm = source;
        let reference = format!("{}/skiff/{name}:{tag}", self.host);
        // A staging store of the registry's own (its images in `<dir>/images`).
        let data_dir = self.dir.path();
        for args in [
            vec![
                "import".to_string(),
                wasm.display().to_string(),
                reference.clone(),
            ],
            vec!["push".to_string(), reference.clone()],
        ] {
            let out = Command::new(skiff_bin())
                .arg("image")
                .arg("--data-dir")
                .arg(data_dir)
                .args(&args)
                .output()
                .expect("run skiff image");
            assert!(
                out.status.success(),
                "skiff image {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        reference
    }
}

impl Registry {
    /// Pushes an OCI image index as `<host>/skiff/<name>:<tag>` over manifests already
    /// pushed to that repository, each `(tag, os, architecture)`, through the registry's
    /// HTTP API (with curl); returns the entries' digests in order.
    pub fn push_index(&self, name: &str, tag: &str, entries: &[(&str, &str, &str)]) -> Vec<String> {
        let url = |r: &str| format!("http://{}/v2/skiff/{name}/manifests/{r}", self.host);
        let mut manifests = Vec::new();
        let mut digests = Vec::new();
        for (entry, os, arch) in entries {
            let out = Command::new("curl")
                .args(["-sSf", "-D", "-", "-o", "/dev/null", "-H"])
                .arg("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
                .arg(url(entry))
                .output()
                .expect("run curl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
            let header = |h: &str| {
                headers
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{h}: ")))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| panic!("no {h} in {headers}"))
            };
            let digest = header("docker-content-digest");
            manifests.push(serde_json::json!({
                "mediaType": header("content-type"),
                "digest": digest,
                "size": header("content-length").parse::<u64>().expect("a length"),
                "platform": {"os": os, "architecture": arch},
            }));
            digests.push(digest);
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let mut put = Command::new("curl")
            .args(["-sSf", "-X", "PUT", "-H"])
            .arg("Content-Type: application/vnd.oci.image.index.v1+json")
            .args(["--data-binary", "@-"])
            .arg(url(tag))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run curl");
        use std::io::Write;
        put.stdin
            .take()
            .expect("stdin")
            .write_all(index.to_string().as_bytes())
            .expect("write the index");
        let out = put.wait_with_output().expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        digests
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    home: PathBuf,
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    pub fn command(&self) -> Command {
        std::fs::create_dir_all(&self.home).expect("kubectl home");
        let mut cmd = Command::new(&self.bin);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl with `args`, whatever its exit code.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().expect("run kubectl"))
    }

    /// Runs kubectl with `stdin` piped in.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        Run::from(output_with_stdin(
            self.command().args(args),
            stdin.as_bytes(),
        ))
    }

    /// Runs kubectl and insists that it succeeds; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// `kubectl get events` of the objects named `name`, as kubectl prints them.
    pub fn events_of(&self, name: &str) -> String {
        self.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ])
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let r = self.run_stdin(args, stdin);
        assert_eq!(
            r.code, 0,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs kubectl expecting failure; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_ne!(
            r.code, 0,
            "kubectl {args:?} should have failed:\nstdout: {}",
            r.stdout
        );
        r.stderr
    }

    /// Creates a ConfigMap from a manifest (`kubectl create -f`), in `namespace` if given.
    ///
    /// Not `kubectl create configmap`: kubectl 1.32+ sends imperative creates as protobuf,
    /// a path `imperative.rs` tests on its own; this helper only needs the object there.
    pub fn create_configmap(&self, namespace: Option<&str>, name: &str, data: &[(&str, &str)]) {
        let mut manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
        if let Some(ns) = namespace {
            manifest.push_str(&format!("  namespace: {ns}\n"));
        }
        manifest.push_str("data:\n");
        for (k, v) in data {
            manifest.push_str(&format!("  {k}: {v:?}\n"));
        }
        self.ok_stdin(&["create", "-f", "-"], &manifest);
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out).expect("kubectl printed JSON")
    }

    /// As [`Kubectl::json`], or `None` when kubectl fails (the object is not there yet).
    pub fn try_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.run(&a);
        (out.code == 0).then(|| serde_json::from_str(&out.stdout).expect("kubectl printed JSON"))
    }
}

/// The repository root (for example manifests).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Runs `command` with `input` on its stdin, and waits for its output.
fn output_with_stdin(command: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", command.get_program()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait for the output")
}
