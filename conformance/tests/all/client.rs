//! The kube Rust client against Skiff: CRUD, paging, watch, and durability across kill -9.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use skiff_conformance::{Backend, Cluster};

pub(crate) async fn client_for(cluster: &Cluster) -> kube::Client {
    client(cluster).await
}

async fn client(cluster: &Cluster) -> kube::Client {
    let kc = Kubeconfig::read_from(&cluster.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()},
        "data": {"n": name},
    }))
    .expect("configmap")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn kube_client_create_list_watch(backend: Backend) {
    let cluster = Cluster::start(backend);
    runtime().block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
        let list = api.list(&ListParams::default()).await.expect("list");
        let rv = list
            .metadata
            .resource_version
            .clone()
            .expect("list resourceVersion");
        let mut events = api
            .watch(&WatchParams::default().labels("team=a"), &rv)
            .await
            .expect("watch")
            .boxed();
        for i in 0..7 {
            let team = if i % 2 == 0 { "a" } else { "b" };
            api.create(
                &PostParams::default(),
                &configmap(&format!("c{i}"), &[("team", team)]),
            )
            .await
            .expect("create");
        }
        // Paged list: 3 per page, every object exactly once.
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(3);
        loop {
            let page = api.list(&params).await.expect("page");
            names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
        let selected = api
            .list(&ListParams::default().labels("team=a"))
            .await
            .expect("selector");
        assert_eq!(selected.items.len(), 4);
        // The watch sees exactly the team=a creations, in order.
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(20), events.try_next())
                .await
                .expect("watch event in time")
                .expect("watch ok")
                .expect("stream open");
            match ev {
                WatchEvent::Added(cm) => seen.push(cm.metadata.name.unwrap_or_default()),
                WatchEvent::Bookmark(_) => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert_eq!(seen, ["c0", "c2", "c4", "c6"]);
        // Conflicting update through the client: 409.
        let mut stale = api.get("c0").await.expect("get");
        let mut fresh = stale.clone();
        fresh
            .data
            .get_or_insert_default()
            .insert("n".into(), "x".into());
        api.replace("c0", &PostParams::default(), &fresh)
            .await
            .expect("replace");
        stale
            .data
            .get_or_insert_default()
            .insert("n".into(), "y".into());
        let err = api
            .replace("c0", &PostParams::default(), &stale)
            .await
            .expect_err("conflict");
        match err {
            kube::Error::Api(s) => assert_eq!(s.code, 409),
            other => panic!("expected 409, got {other:?}"),
        }
    });
}

pub fn durable_across_kill_9(backend: Backend) {
    let mut cluster = Cluster::start(backend);
    let rt = runtime();
    let acknowledged = rt.block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
        let mut names = Vec::new();
        for i in 0..100 {
            let name = format!("durable-{i}");
            api.create(&PostParams::default(), &configmap(&name, &[]))
                .await
                .expect("create");
            names.push(name);
        }
        names
    });
    cluster.restart_after_kill();
    rt.block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list after restart");
        let names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        for n in &acknowledged {
            assert!(
                names.contains(n),
                "{n} was acknowledged before kill -9 and is gone"
            );
        }
    });
}
