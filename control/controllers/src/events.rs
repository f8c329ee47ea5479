//! Events for what the controllers do, as `kubectl describe` shows them, sent without
//! holding up the reconcile that reports them.
//!
//! kube-runtime's `Recorder` writes them (events.k8s.io/v1, repeats counted as a series).
//! In front of it sits client-go's spam filter: each object may have 25 events at once, then
//! one more every 5 minutes, so a ReplicaSet scaled to 1,000 does not write 1,000 events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Reporter};

const BURST: f64 = 25.0;
const REFILL_EVERY: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct Recorder {
    inner: Arc<kube::runtime::events::Recorder>,
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
}

impl Recorder {
    pub fn new(client: Client, controller: &str) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: None,
        };
        Recorder {
            inner: Arc::new(kube::runtime::events::Recorder::new(client, reporter)),
            buckets: Arc::default(),
        }
    }

    pub fn normal(&self, regarding: ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(EventType::Normal, regarding, reason, action, note);
    }

    pub fn warning(&self, regarding: ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(EventType::Warning, regarding, reason, action, note);
    }

    fn publish(
        &self,
        type_: EventType,
        regarding: ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if !self.admit(regarding.uid.as_deref().unwrap_or_default()) {
            return;
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.publish(&event, &regarding).await {
                tracing::debug!("event not written: {e}");
            }
        });
    }

    /// The spam filter's token bucket for one object.
    fn admit(&self, uid: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("event buckets");
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
}
