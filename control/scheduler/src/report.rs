//! What the scheduler tells users: Events (`Scheduled`, `FailedScheduling`) and the pod's
//! `PodScheduled` condition. Written off the scheduling path, a few at a time, so that
//! reporting never holds up binding.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

pub(crate) enum Report {
    Scheduled {
        pod: Arc<Pod>,
        node: String,
    },
    Unschedulable {
        pod: Arc<Pod>,
        message: String,
        /// False when the pod already carries this very condition.
        set_condition: bool,
    },
}

/// Sends reports with at most `slots` requests in flight until the sender side closes.
pub(crate) async fn run(
    client: kube::Client,
    scheduler: String,
    slots: usize,
    mut rx: mpsc::UnboundedReceiver<Report>,
) {
    let slots = Arc::new(Semaphore::new(slots.max(1)));
    let scheduler: Arc<str> = scheduler.into();
    let mut batch = Vec::new();
    while let Some(report) = rx.recv().await {
        // Reports trail the bindings they describe, so their store writes do not land
        // on the pod's start (its node agent's status write) a moment later.
        tokio::time::sleep(TRAIL).await;
        batch.push(report);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for report in batch.drain(..) {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let client = client.clone();
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                send(&client, &scheduler, report).await;
                drop(permit);
            });
        }
    }
}

/// How long reports wait before they are sent.
const TRAIL: std::time::Duration = std::time::Duration::from_millis(25);

async fn send(client: &kube::Client, scheduler: &str, report: Report) {
    match report {
        Report::Scheduled { pod, node } => {
            let message = format!(
                "Successfully assigned {}/{} to {node}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            event(
                client,
                scheduler,
                &pod,
                "Normal",
                "Scheduled",
                "Binding",
                message,
            )
            .await;
        }
        Report::Unschedulable {
            pod,
            message,
            set_condition,
        } => {
            if set_condition {
                condition(client, &pod, &message).await;
            }
            event(
                client,
                scheduler,
                &pod,
                "Warning",
                "FailedScheduling",
                "Scheduling",
                message,
            )
            .await;
        }
    }
}

async fn event(
    client: &kube::Client,
    scheduler: &str,
    pod: &Pod,
    type_: &str,
    reason: &str,
    action: &str,
    message: String,
) {
    let now = Timestamp::now();
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let event = Event {
        metadata: ObjectMeta {
            // The name client-go's recorder gives: the object's name and the time in hex.
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace.clone()),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        action: Some(action.into()),
        source: Some(EventSource {
            component: Some(scheduler.into()),
            host: None,
        }),
        reporting_component: Some(scheduler.into()),
        reporting_instance: Some(scheduler.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, reason, "could not record an event");
    }
}

/// PodScheduled=False, reason Unschedulable, through pods/status. A strategic merge
/// patch merges by condition type, so the pod's other conditions stay.
async fn condition(client: &kube::Client, pod: &Pod, message: &str) {
    let meta = &pod.metadata;
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        meta.namespace.as_deref().unwrap_or_default(),
    );
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": Time(Timestamp::now()),
    }]}});
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => {}
        // Deleted meanwhile (a controller scaling down): nothing to report.
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(pod = name, error = %e, "could not set the PodScheduled condition")
        }
    }
}

/// Whether the pod already says it is unschedulable for this reason.
pub(crate) fn has_condition(pod: &Pod, message: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        })
}
