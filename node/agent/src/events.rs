//! The agent's Events on their way to the API server, counted and combined as client-go's
//! event correlator does for the kubelet:
//! * an event that repeats one sent in the last ten minutes (the same object, source, type,
//!   reason and message) raises that one's `count` and `lastTimestamp` instead of making
//!   another object: a probe failing every second is one event counting up (`kubectl
//!   describe` shows "x12 over 12s"), not a store filling with copies;
//! * once an object has had ten events of one type and reason with different messages in
//!   ten minutes, the next ones become one event "(combined from similar events): <the
//!   latest message>", counted in the same way, as client-go's aggregator does.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// How long events wait before they are sent: they trail the status writes of the pod
/// starts they describe instead of holding them up in the store.
const EVENT_TRAIL: Duration = Duration::from_millis(25);

/// How long a repeated event is counted on the first one, and how long similar events
/// are remembered for combining (client-go's `defaultAggregateIntervalInSeconds`).
const WINDOW: Duration = Duration::from_secs(600);
/// Events (and kinds of similar events) remembered, at most, before the old are dropped.
const REMEMBERED: usize = 4096;
/// Different messages of one kind of event before they are combined (client-go's
/// `defaultAggregateMaxEvents`).
const SIMILAR_MAX: usize = 10;
/// The prefix of a combined event's message, client-go's.
pub const COMBINED: &str = "(combined from similar events): ";

/// What to send for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Send {
    /// A new Event object.
    Create(Box<Event>),
    /// A merge patch of the Event object named `name` (its count, last time and message).
    Patch {
        name: String,
        patch: serde_json::Value,
    },
}

/// An event already sent: its name, and how many times it happened.
struct Sent {
    name: String,
    count: i32,
    first: Instant,
}

/// Events of one object, type and reason with different messages.
struct Similar {
    messages: HashSet<String>,
    last: Instant,
}

/// Decides, event by event, whether to make an Event object or count on one.
#[derive(Default)]
pub struct Correlator {
    sent: HashMap<String, Sent>,
    similar: HashMap<String, Similar>,
}

/// What makes events similar (client-go's `EventAggregatorByReasonFunc`): the object, the
/// source, the type and the reason, whatever the message and the field path.
fn similar_key(e: &Event) -> String {
    let o = &e.involved_object;
    let source = e.source.as_ref();
    [
        source.and_then(|s| s.component.as_deref()),
        source.and_then(|s| s.host.as_deref()),
        o.kind.as_deref(),
        o.namespace.as_deref(),
        o.name.as_deref(),
        o.uid.as_deref(),
        o.api_version.as_deref(),
        e.type_.as_deref(),
        e.reason.as_deref(),
        e.reporting_component.as_deref(),
        e.reporting_instance.as_deref(),
    ]
    .map(Option::unwrap_or_default)
    .join("\0")
}

/// What makes two events the same (client-go's `getEventKey`): what makes them similar,
/// and the field path and the message.
fn same_key(e: &Event) -> String {
    format!(
        "{}\0{}\0{}",
        similar_key(e),
        e.involved_object.field_path.as_deref().unwrap_or_default(),
        e.message.as_deref().unwrap_or_default()
    )
}

impl Correlator {
    /// What to send for `event`, which happened at `now`.
    pub fn observe(&mut self, mut event: Event, now: Instant) -> Send {
        if self.sent.len() > REMEMBERED {
            self.sent
                .retain(|_, s| now.duration_since(s.first) < WINDOW);
        }
        if self.similar.len() > REMEMBERED {
            self.similar
                .retain(|_, s| now.duration_since(s.last) < WINDOW);
        }
        let similar_key = similar_key(&event);
        let similar = self
            .similar
            .entry(similar_key.clone())
            .or_insert_with(|| Similar {
                messages: HashSet::new(),
                last: now,
            });
        if now.duration_since(similar.last) > WINDOW {
            similar.messages.clear();
        }
        similar.last = now;
        similar
            .messages
            .insert(event.message.clone().unwrap_or_default());
        let key = if similar.messages.len() >= SIMILAR_MAX {
            // Do not grow the set past the limit (client-go drops any one).
            if let Some(any) = similar.messages.iter().next().cloned() {
                similar.messages.remove(&any);
            }
            let message = event.message.take().unwrap_or_default();
            event.message = Some(format!("{COMBINED}{message}"));
            event.involved_object.field_path = None;
            similar_key
        } else {
            same_key(&event)
        };
        match self.sent.get_mut(&key) {
            Some(s) if now.duration_since(s.first) < WINDOW => {
                s.count += 1;
                Send::Patch {
                    name: s.name.clone(),
                    patch: serde_json::json!({
                        "count": s.count,
                        "lastTimestamp": event.last_timestamp,
                        "message": event.message,
                    }),
                }
            }
            _ => {
                self.sent.insert(
                    key,
                    Sent {
                        name: event.metadata.name.clone().unwrap_or_default(),
                        count: 1,
                        first: now,
                    },
                );
                Send::Create(Box::new(event))
            }
        }
    }
}

/// Sends the agent's events, a batch at a time, [`EVENT_TRAIL`] after the first of each,
/// through a [`Correlator`].
pub async fn send_events(client: kube::Client, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut batch = Vec::new();
    let mut correlator = Correlator::default();
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(EVENT_TRAIL).await;
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for event in batch.drain(..) {
            let namespace = event.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
            match correlator.observe(event, Instant::now()) {
                Send::Patch { name, patch } => {
                    tokio::spawn(async move {
                        if let Err(e) = api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            tracing::debug!("event count not recorded: {e}");
                        }
                    });
                }
                Send::Create(event) => {
                    tokio::spawn(async move {
                        if let Err(e) = api.create(&PostParams::default(), &*event).await {
                            tracing::debug!("event not recorded: {e}");
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn event(n: u32, pod: &str, reason: &str, message: &str) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{pod}.{n:x}")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{pod}")),
                field_path: Some("spec.containers{web}".into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("node-1".into()),
            }),
            ..Default::default()
        }
    }

    fn created(send: &Send) -> &Event {
        match send {
            Send::Create(e) => e.as_ref(),
            other => panic!("expected a new event, got {other:?}"),
        }
    }

    #[test]
    fn repeats_count_on_the_first_and_different_messages_are_combined_past_ten() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        // The same event twice: one object, counted.
        let first = c.observe(event(0, "web", "Unhealthy", "probe failed: 500"), t0);
        assert_eq!(created(&first).metadata.name.as_deref(), Some("web.0"));
        assert_eq!(
            c.observe(event(1, "web", "Unhealthy", "probe failed: 500"), t0),
            Send::Patch {
                name: "web.0".into(),
                patch: serde_json::json!({
                    "count": 2, "lastTimestamp": null, "message": "probe failed: 500"
                }),
            }
        );
        // Nine more different messages: each its own event, up to ten kinds.
        for n in 2..=9 {
            let send = c.observe(event(n, "web", "Unhealthy", &format!("failed: {n}")), t0);
            assert_eq!(
                created(&send).message.as_deref(),
                Some(&*format!("failed: {n}"))
            );
        }
        // Another pod and another reason are not similar.
        created(&c.observe(event(20, "db", "Unhealthy", "failed: x"), t0));
        created(&c.observe(event(21, "web", "BackOff", "failed: x"), t0));
        // The tenth different message starts a combined event; later ones count on it.
        let combined = c.observe(event(10, "web", "Unhealthy", "failed: 10"), t0);
        let e = created(&combined);
        assert_eq!(e.metadata.name.as_deref(), Some("web.a"));
        assert_eq!(
            e.message.as_deref(),
            Some("(combined from similar events): failed: 10")
        );
        assert_eq!(e.reason.as_deref(), Some("Unhealthy"));
        assert_eq!(
            c.observe(event(11, "web", "Unhealthy", "failed: 11"), t0),
            Send::Patch {
                name: "web.a".into(),
                patch: serde_json::json!({
                    "count": 2,
                    "lastTimestamp": null,
                    "message": "(combined from similar events): failed: 11"
                }),
            }
        );
        // Ten minutes later it all starts again.
        let later = t0 + WINDOW + Duration::from_secs(1);
        let fresh = c.observe(event(30, "web", "Unhealthy", "failed: 11"), later);
        assert_eq!(created(&fresh).message.as_deref(), Some("failed: 11"));
    }
}
