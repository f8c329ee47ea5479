//! The cloud controller's load balancers (cloud-controller-manager's
//! `service-lb-controller`): a Service of `type: LoadBalancer` gets its
//! `status.loadBalancer` from a provider, and loses it when it stops being one.
//!
//! Providers sit behind [`LoadBalancerProvider`]. The built-in one, [`LocalPool`], hands
//! out addresses from a configured pool (`--load-balancer-pool`) for the nodes to announce
//! on their link (each node's agent adds the address of the Services it is chosen for and
//! answers ARP for it, MetalLB's layer-2 mode). A Service naming a `loadBalancerClass` is
//! left to whatever implements that class, as on Kubernetes.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::json;
use skiff_informer::{Change, Informer, key_of, split_key};

use crate::events::Recorder;
use crate::{Informers, SyncResult, WorkQueue, run_workers};

pub const SERVICE_LB: &str = "service-lb-controller";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A load balancer implementation (cloud-provider's `LoadBalancer` interface, reduced to
/// what a Service needs).
pub trait LoadBalancerProvider: Send + Sync {
    /// Makes (or keeps) `svc`'s balancer and says where it answers. `others` are the
    /// cluster's other Services, whose addresses are taken.
    fn ensure<'a>(
        &'a self,
        svc: &'a Service,
        others: &'a [Arc<Service>],
    ) -> BoxFuture<'a, Result<Vec<LoadBalancerIngress>, String>>;
    /// Removes `svc`'s balancer (the Service is gone or no longer a load balancer).
    fn remove<'a>(&'a self, svc: &'a Service) -> BoxFuture<'a, Result<(), String>>;
}

/// Addresses from a pool, announced by the nodes. What a Service holds is its status:
/// nothing else to keep, nothing to lose on a restart. Addresses handed out since the last
/// informer update are remembered here, so two Services never get the same one.
pub struct LocalPool {
    ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    recent: Mutex<HashMap<IpAddr, String>>,
}

impl LocalPool {
    /// A pool of `ranges` (first, last), inclusive.
    pub fn new(ranges: Vec<(Ipv4Addr, Ipv4Addr)>) -> LocalPool {
        LocalPool {
            ranges,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `a.b.c.d-a.b.c.e` and CIDR ranges, comma-separated (a CIDR without its network
    /// and broadcast addresses when it has them).
    pub fn parse(text: &str) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>, String> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let range = if let Some((a, b)) = item.split_once('-') {
                let (a, b): (Ipv4Addr, Ipv4Addr) = (
                    a.trim()
                        .parse()
                        .map_err(|_| format!("{item:?}: {a:?} is not an IPv4 address"))?,
                    b.trim()
                        .parse()
                        .map_err(|_| format!("{item:?}: {b:?} is not an IPv4 address"))?,
                );
                if a > b {
                    return Err(format!("{item:?}: the first address is after the last"));
                }
                (a, b)
            } else {
                let net: ipnet::Ipv4Net = item
                    .parse()
                    .map_err(|_| format!("{item:?} is neither a range (a-b) nor a CIDR"))?;
                if net.prefix_len() >= 31 {
                    (net.network(), net.broadcast())
                } else {
                    (
                        Ipv4Addr::from(u32::from(net.network()) + 1),
                        Ipv4Addr::from(u32::from(net.broadcast()) - 1),
                    )
                }
            };
            out.push(range);
        }
        Ok(out)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.ranges.iter().any(|(a, b)| *a <= ip && ip <= *b)
    }
}

fn uid(svc: &Service) -> String {
    svc.metadata.uid.clone().unwrap_or_default()
}

/// The IPs a Service's status holds.
fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_ref()?.parse().ok())
        .collect()
}

impl LoadBalancerProvider for LocalPool {
    fn ensure<'a>(
        &'a self,
        svc: &'a Service,
        others: &'a [Arc<Service>],
    ) -> BoxFuture<'a, Result<Vec<LoadBalancerIngress>, String>> {
        Box::pin(async move {
            let me = uid(svc);
            let mut recent = self.recent.lock().expect("pool lock");
            // What the informer shows now supersedes what was remembered.
            let mut taken: HashMap<IpAddr, String> = recent.clone();
            for o in others {
                for ip in ingress_ips(o) {
                    taken.insert(ip, uid(o));
                }
            }
            taken.retain(|_, holder| *holder != me);
            let free = |ip: Ipv4Addr| !taken.contains_key(&IpAddr::V4(ip));
            let asked = svc
                .spec
                .as_ref()
                .and_then(|s| s.load_balancer_ip.as_deref())
                .filter(|s| !s.is_empty());
            let ip = if let Some(asked) = asked {
                let ip: Ipv4Addr = asked
                    .parse()
                    .map_err(|_| format!("spec.loadBalancerIP {asked:?} is not an IPv4 address"))?;
                if !self.contains(ip) {
                    return Err(format!(
                        "spec.loadBalancerIP {ip} is not in the load balancer pool"
                    ));
                }
                if !free(ip) {
                    return Err(format!(
                        "spec.loadBalancerIP {ip} is held by another Service"
                    ));
                }
                ip
            } else if let Some(IpAddr::V4(kept)) = ingress_ips(svc).first().copied()
                && self.contains(kept)
                && free(kept)
            {
                kept
            } else {
                if self.ranges.is_empty() {
                    return Err(
                        "no load balancer addresses: start the server with --load-balancer-pool (a range or CIDR on the nodes' link)"
                            .into(),
                    );
                }
                self.ranges
                    .iter()
                    .flat_map(|(a, b)| (u32::from(*a)..=u32::from(*b)).map(Ipv4Addr::from))
                    .find(|ip| free(*ip))
                    .ok_or_else(|| "the load balancer pool is exhausted".to_string())?
            };
            recent.retain(|_, holder| *holder != me);
            recent.insert(IpAddr::V4(ip), me);
            Ok(vec![LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            }])
        })
    }

    fn remove<'a>(&'a self, svc: &'a Service) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let me = uid(svc);
            self.recent
                .lock()
                .expect("pool lock")
                .retain(|_, holder| *holder != me);
            Ok(())
        })
    }
}

/// Whether the default provider balances `svc`: a LoadBalancer Service without a class.
fn ours(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_none()
}

struct Controller {
    services: Arc<Informer<Service>>,
    provider: Arc<dyn LoadBalancerProvider>,
    events: Recorder,
    client: kube::Client,
}

pub fn start(
    informers: &Arc<Informers>,
    events: &Recorder,
    provider: Arc<dyn LoadBalancerProvider>,
) {
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        services: informers.services(),
        provider,
        events: events.for_controller(SERVICE_LB),
        client: informers.client().clone(),
    });
    {
        let q = queue.clone();
        c.services.subscribe(move |change| match change {
            Change::Added(s) | Change::Deleted(s) => q.add(key_of(&***s)),
            Change::Updated { old, new } => {
                if old.spec != new.spec || old.status != new.status {
                    q.add(key_of(&***new));
                }
            }
        });
    }
    let ready = {
        let c = c.clone();
        async move { c.services.synced().await }
    };
    // One worker: addresses are handed out one Service at a time.
    run_workers(SERVICE_LB, queue, 1, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let Some(svc) = self.services.get(key) else {
            return Ok(None);
        };
        let class_owned = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_some();
        let current: Vec<LoadBalancerIngress> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        let wanted = if ours(&svc) {
            let others: Vec<Arc<Service>> = self
                .services
                .list()
                .into_iter()
                .filter(|o| o.metadata.uid != svc.metadata.uid)
                .collect();
            match self.provider.ensure(&svc, &others).await {
                Ok(ingress) => ingress,
                Err(why) => {
                    self.events.warning(
                        svc.object_ref(&()),
                        "SyncLoadBalancerFailed",
                        "EnsureLoadBalancer",
                        format!("Error syncing load balancer: {why}"),
                    );
                    return Ok(Some(std::time::Duration::from_secs(30)));
                }
            }
        } else if class_owned {
            // Another implementation's.
            return Ok(None);
        } else {
            if !current.is_empty() {
                self.provider
                    .remove(&svc)
                    .await
                    .map_err(crate::Error::Other)?;
            }
            Vec::new()
        };
        if wanted == current {
            return Ok(None);
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns.unwrap_or_default());
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": wanted}}})),
        )
        .await?;
        if wanted.is_empty() {
            self.events.normal(
                svc.object_ref(&()),
                "DeletedLoadBalancer",
                "DeleteLoadBalancer",
                "Deleted load balancer".into(),
            );
        } else {
            self.events.normal(
                svc.object_ref(&()),
                "EnsuredLoadBalancer",
                "EnsureLoadBalancer",
                format!(
                    "Ensured load balancer at {}",
                    wanted
                        .iter()
                        .filter_map(|i| i.ip.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(uid: &str, status_ip: Option<&str>, asked: Option<&str>) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": uid, "namespace": "default", "uid": uid},
                "spec": {"type": "LoadBalancer", "loadBalancerIP": asked},
                "status": {"loadBalancer": {"ingress": status_ip.map(|ip| vec![json!({"ip": ip})]).unwrap_or_default()}},
            }))
            .unwrap(),
        )
    }

    fn ip_of(v: &[LoadBalancerIngress]) -> &str {
        v[0].ip.as_deref().unwrap()
    }

    #[tokio::test]
    async fn the_local_pool_hands_out_free_addresses_and_keeps_them() {
        let pool = LocalPool::new(LocalPool::parse("192.0.2.10-192.0.2.11").unwrap());
        let a = svc("a", None, None);
        let got = pool.ensure(&a, &[]).await.unwrap();
        assert_eq!(ip_of(&got), "192.0.2.10");
        // Before the informer shows a's status, b still gets another address.
        let b = svc("b", None, None);
        assert_eq!(
            ip_of(&pool.ensure(&b, std::slice::from_ref(&a)).await.unwrap()),
            "192.0.2.11"
        );
        // a keeps its own; a third finds the pool exhausted.
        let a = svc("a", Some("192.0.2.10"), None);
        let b = svc("b", Some("192.0.2.11"), None);
        assert_eq!(
            ip_of(&pool.ensure(&a, std::slice::from_ref(&b)).await.unwrap()),
            "192.0.2.10"
        );
        let c = svc("c", None, None);
        let err = pool.ensure(&c, &[a.clone(), b.clone()]).await.unwrap_err();
        assert!(err.contains("exhausted"), "{err}");
        // Once a is gone, its address is free again.
        pool.remove(&a).await.unwrap();
        assert_eq!(
            ip_of(&pool.ensure(&c, std::slice::from_ref(&b)).await.unwrap()),
            "192.0.2.10"
        );
    }

    #[tokio::test]
    async fn an_asked_address_must_be_in_the_pool_and_free() {
        let pool = LocalPool::new(LocalPool::parse("192.0.2.0/30").unwrap());
        assert_eq!(
            pool.ranges,
            [(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2))]
        );
        let other = svc("o", Some("192.0.2.1"), None);
        let want = |ip| svc("w", None, Some(ip));
        assert_eq!(
            ip_of(
                &pool
                    .ensure(&want("192.0.2.2"), std::slice::from_ref(&other))
                    .await
                    .unwrap()
            ),
            "192.0.2.2"
        );
        let err = pool
            .ensure(&want("192.0.2.1"), std::slice::from_ref(&other))
            .await
            .unwrap_err();
        assert!(err.contains("held by another Service"), "{err}");
        let err = pool.ensure(&want("198.51.100.1"), &[]).await.unwrap_err();
        assert!(err.contains("not in the load balancer pool"), "{err}");
        let none = LocalPool::new(vec![]);
        let err = none.ensure(&svc("x", None, None), &[]).await.unwrap_err();
        assert!(err.contains("--load-balancer-pool"), "{err}");
        assert!(LocalPool::parse("192.0.2.9-192.0.2.1").is_err());
        assert!(LocalPool::parse("nope").is_err());
    }
}
