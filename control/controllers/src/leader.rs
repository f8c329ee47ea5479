//! Leader election on a coordination.k8s.io Lease, as client-go's `leaderelection` does it
//! for kube-controller-manager and kube-scheduler: several `skiff server`s share one etcd
//! and serve the API together, and exactly one of them runs the scheduler and the
//! controllers.
//!
//! A candidate takes the Lease when it is free or its holder has not renewed it for
//! `lease_duration`, with a write guarded by the resourceVersion it read (two candidates
//! cannot both win); the leader renews every `retry_period`, and when it has not managed
//! to for `renew_deadline` it stops leading. As kube-controller-manager exits then, so
//! does the caller: controllers that may be acting on a stale view must not keep writing.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

/// Where and how the election runs.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// Who this candidate is (client-go: `<hostname>_<uuid>`).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Election {
    /// kube-controller-manager's defaults: 15 s lease, 10 s renew deadline, 2 s retries.
    pub fn new(name: &str, identity: String) -> Election {
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(chrono::Utc::now().timestamp_micros())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// One attempt to take or keep the Lease: `Ok(true)` when this candidate holds it now.
async fn try_acquire_or_renew(api: &Api<Lease>, e: &Election) -> Result<bool, kube::Error> {
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(e.identity.clone()),
        lease_duration_seconds: Some(e.lease_duration.as_secs() as i32),
        acquire_time: acquired.or_else(|| Some(now())),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec(0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let holder = current.holder_identity.clone().unwrap_or_default();
    let ours = holder == e.identity;
    if !ours && !holder.is_empty() {
        let renewed = current.renew_time.as_ref().map(|t| t.0.as_millisecond());
        let duration = i64::from(current.lease_duration_seconds.unwrap_or(15)) * 1000;
        let expired = renewed.is_none_or(|r| r + duration < chrono::Utc::now().timestamp_millis());
        if !expired {
            return Ok(false);
        }
    }
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let acquired = if ours {
        current.acquire_time.clone()
    } else {
        None
    };
    lease.spec = Some(spec(transitions, acquired));
    // The read resourceVersion rides along: a write by anyone else meanwhile is a 409.
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Campaigns until this candidate leads, then calls `lead` and keeps renewing; returns
/// when leadership is lost (never while it is kept).
pub async fn run(client: kube::Client, e: Election, lead: impl FnOnce()) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    loop {
        match try_acquire_or_renew(&api, &e).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => tracing::debug!(lease = %e.name, "leader election: {err}"),
        }
        tokio::time::sleep(e.retry_period).await;
    }
    tracing::info!(lease = %e.name, identity = %e.identity, "became leader");
    lead();
    let mut last_renewal = Instant::now();
    loop {
        tokio::time::sleep(e.retry_period).await;
        match try_acquire_or_renew(&api, &e).await {
            Ok(true) => last_renewal = Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %e.name, "leader election lost: another holder took the lease");
                return;
            }
            Err(err) => {
                tracing::warn!(lease = %e.name, "renewing the lease: {err}");
                if last_renewal.elapsed() > e.renew_deadline {
                    tracing::error!(lease = %e.name, "leader election lost: no renewal within the deadline");
                    return;
                }
            }
        }
    }
}
