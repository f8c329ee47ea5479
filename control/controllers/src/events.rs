//! Events for what the controllers do, as `kubectl describe` shows them, sent without
//! holding up the reconcile that reports them.
//!
//! Written as events.k8s.io/v1 Events, each from the controller that acted
//! (`deployment-controller`, `replicaset-controller`, ...). The same event again (same
//! object, type, reason and note within the last 6 minutes) raises its series count
//! instead of adding one, as client-go's recorder does. kube-runtime's `Recorder` would do
//! this, but keys a series without the note, so "Scaled up ... to 3" and "Scaled down ...
//! to 1" became one event counted twice. In front sits client-go's spam filter: each object
//! may have 25 events at once, then one more every 5 minutes, so a ReplicaSet scaled to
//! 1,000 does not write 1,000 events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

const BURST: f64 = 25.0;
const REFILL_EVERY: Duration = Duration::from_secs(300);
/// How long an event can be continued as a series (kube-runtime's and client-go's).
const SERIES_FOR: Duration = Duration::from_secs(360);

/// (object uid, type, reason, note).
type SeriesKey = (String, &'static str, String, String);

#[derive(Default)]
struct State {
    buckets: HashMap<String, (f64, Instant)>,
    /// The event each series continues, its count and when it was last seen.
    series: HashMap<SeriesKey, (String, i32, Instant)>,
}

/// The controllers' event writer; `for_controller` names who reports.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    controller: &'static str,
    state: Arc<Mutex<State>>,
}

impl Recorder {
    pub fn new(client: kube::Client) -> Self {
        Recorder {
            client,
            controller: "skiff-controller-manager",
            state: Arc::default(),
        }
    }

    /// The same writer, reporting as `controller`.
    pub fn for_controller(&self, controller: &'static str) -> Self {
        Recorder {
            controller,
            ..self.clone()
        }
    }

    pub fn normal(&self, regarding: ObjectReference, reason: &str, action: &str, note: String) {
        self.publish("Normal", regarding, reason, action, note);
    }

    pub fn warning(&self, regarding: ObjectReference, reason: &str, action: &str, note: String) {
        self.publish("Warning", regarding, reason, action, note);
    }

    fn publish(
        &self,
        type_: &'static str,
        regarding: ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let uid = regarding.uid.clone().unwrap_or_default();
        let now = Instant::now();
        let key: SeriesKey = (uid.clone(), type_, reason.to_string(), note.clone());
        let continued = {
            let mut st = self.state.lock().expect("event state");
            if !admit(&mut st.buckets, &uid, now) {
                return;
            }
            if st.series.len() > 10_000 {
                st.series
                    .retain(|_, (_, _, at)| now.duration_since(*at) < SERIES_FOR);
            }
            match st.series.get_mut(&key) {
                Some((name, count, at)) if now.duration_since(*at) < SERIES_FOR => {
                    *count += 1;
                    *at = now;
                    Some((name.clone(), *count))
                }
                _ => None,
            }
        };
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let time = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let (me, controller) = (self.clone(), self.controller);
        let (reason, action) = (reason.to_string(), action.to_string());
        tokio::spawn(async move {
            let result = match continued {
                Some((name, count)) => {
                    let patch = serde_json::json!({"series": EventSeries {
                        count,
                        last_observed_time: time,
                    }});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
                None => {
                    let name = format!(
                        "{}.{:x}",
                        regarding.name.as_deref().unwrap_or(controller),
                        k8s_openapi::jiff::Timestamp::now().as_nanosecond()
                    );
                    let event = Event {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(ns.clone()),
                            ..Default::default()
                        },
                        event_time: Some(time),
                        reporting_controller: Some(controller.to_string()),
                        reporting_instance: Some(controller.to_string()),
                        action: Some(action),
                        reason: Some(reason),
                        note: Some(note),
                        type_: Some(type_.to_string()),
                        regarding: Some(regarding),
                        ..Default::default()
                    };
                    let created = api.create(&PostParams::default(), &event).await;
                    if created.is_ok() {
                        me.state
                            .lock()
                            .expect("event state")
                            .series
                            .insert(key, (name, 1, Instant::now()));
                    }
                    created.map(|_| ())
                }
            };
            if let Err(e) = result {
                tracing::debug!("event not written: {e}");
            }
        });
    }
}

/// The spam filter's token bucket for one object.
fn admit(buckets: &mut HashMap<String, (f64, Instant)>, uid: &str, now: Instant) -> bool {
    if buckets.len() > 10_000 {
        buckets.retain(|_, (_, at)| now.duration_since(*at) < REFILL_EVERY * 25);
    }
    let (tokens, at) = buckets.entry(uid.to_string()).or_insert((BURST, now));
    let refill = now.duration_since(*at).as_secs_f64() / REFILL_EVERY.as_secs_f64();
    *tokens = (*tokens + refill).min(BURST);
    *at = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_gets_25_events_at_once_then_one_per_five_minutes() {
        let mut buckets = HashMap::new();
        let t0 = Instant::now();
        let admitted = (0..40).filter(|_| admit(&mut buckets, "a", t0)).count();
        assert_eq!(admitted, 25);
        assert!(
            admit(&mut buckets, "b", t0),
            "another object has its own bucket"
        );
        assert!(!admit(&mut buckets, "a", t0 + Duration::from_secs(60)));
        assert!(admit(&mut buckets, "a", t0 + Duration::from_secs(301)));
    }
}
