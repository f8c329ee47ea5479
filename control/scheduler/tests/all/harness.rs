use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skiff_scheduler::SchedulerOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A scheduler task and the sender that stops it.
type RunningScheduler = (oneshot::Sender<()>, JoinHandle<()>);

/// An API server on a fresh store, and optionally the scheduler running against it.
pub struct Cluster {
    pub client: kube::Client,
    _dir: tempfile::TempDir,
    scheduler: Option<RunningScheduler>,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let store = skiff_store::embedded::EmbeddedStore::open(&dir.path().join("store"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = skiff_apiserver::ApiServer::start(
            Arc::new(store),
            listener,
            skiff_apiserver::Config::default(),
        )
        .await?;
        let url = format!("http://{}", server.local_addr).parse()?;
        let client = kube::Client::try_from(kube::Config::new(url))?;
        Ok(Cluster {
            client,
            _dir: dir,
            scheduler: None,
        })
    }

    pub async fn with_scheduler() -> anyhow::Result<Cluster> {
        let mut c = Cluster::start().await?;
        c.start_scheduler();
        Ok(c)
    }

    pub fn start_scheduler(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(skiff_scheduler::run(
            self.client.clone(),
            SchedulerOptions {
                name: "default-scheduler".into(),
                parallelism: 16,
            },
            async {
                let _ = stopped.await;
            },
        ));
        self.scheduler = Some((stop, task));
    }

    /// Stops the scheduler and checks that it ended cleanly.
    pub async fn stop_scheduler(&mut self) -> anyhow::Result<()> {
        if let Some((stop, task)) = self.scheduler.take() {
            let _ = stop.send(());
            task.await?;
        }
        Ok(())
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// A Ready node with `cpu` and `memory` allocatable and room for 110 pods; `extra` is
    /// merged into the node object (labels, taints) and `status` into its status.
    pub async fn add_node(
        &self,
        name: &str,
        cpu: &str,
        memory: &str,
        extra: Value,
    ) -> anyhow::Result<()> {
        self.add_node_with_status(
            name,
            extra,
            json!({
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
            }),
        )
        .await
    }

    pub async fn add_node_with_status(
        &self,
        name: &str,
        extra: Value,
        status: Value,
    ) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
        merge(&mut node, extra);
        let node: Node = serde_json::from_value(node)?;
        nodes
            .create(&PostParams::default(), &node)
            .await
            .context("creating a node")?;
        // Status only goes through nodes/status: a plain create resets it.
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .context("setting the node's status")?;
        Ok(())
    }

    /// A pod with one container requesting `cpu` (none when empty); `extra` is merged in.
    pub async fn create_pod(&self, name: &str, cpu: &str, extra: Value) -> anyhow::Result<()> {
        let resources = if cpu.is_empty() {
            json!({})
        } else {
            json!({"requests": {"cpu": cpu}})
        };
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "example/app", "resources": resources}]}
        });
        merge(&mut pod, extra);
        let pod: Pod = serde_json::from_value(pod)?;
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .context("creating a pod")?;
        Ok(())
    }

    /// The node the pod gets bound to.
    pub async fn bound_node(&self, pod: &str) -> anyhow::Result<String> {
        let pods = self.pods();
        wait(&format!("pod {pod} to be bound"), || async {
            let p = pods.get(pod).await?;
            Ok(p.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()))
        })
        .await
    }

    /// The message of the first FailedScheduling event about the pod.
    pub async fn failed_scheduling(&self, pod: &str) -> anyhow::Result<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().fields(&format!(
            "involvedObject.name={pod},reason=FailedScheduling"
        ));
        wait(&format!("a FailedScheduling event for {pod}"), || async {
            let list = events.list(&lp).await?;
            Ok(list.items.into_iter().next().map(|e| {
                assert_eq!(e.type_.as_deref(), Some("Warning"));
                assert_eq!(
                    e.source.and_then(|s| s.component).as_deref(),
                    Some("default-scheduler")
                );
                e.message.unwrap_or_default()
            }))
        })
        .await
    }

    /// How many pods each node holds.
    pub async fn pods_per_node(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut out = BTreeMap::new();
        for p in self.pods().list(&ListParams::default()).await? {
            if let Some(n) = p.spec.and_then(|s| s.node_name) {
                *out.entry(n).or_insert(0) += 1;
            }
        }
        Ok(out)
    }
}

/// Polls `check` until it yields a value; fails after 60 s (a hang, not a measurement).
pub async fn wait<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}
