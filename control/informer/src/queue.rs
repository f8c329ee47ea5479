//! A work queue of object keys, as client-go's rate-limited work queue: a key waits at most
//! once however often it is added, is never handed to two workers at once (added while
//! being worked on, it is handed out again once that work is done), and a key that failed
//! comes back after a back-off that doubles per failure (5 ms to 1000 s, client-go's
//! per-item defaults) until it succeeds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

const BASE_DELAY: Duration = Duration::from_millis(5);

/// How long a change that only moves a status may wait for others to share one sync
/// ([`WorkQueue::add_batched`]). While a thousand pods start, their owner is then synced
/// and its status written about once per window instead of once per pod. Kubernetes'
/// controllers get the same batching from their client's rate limit.
pub const STATUS_BATCH: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    /// Keys waiting to be handed out (in `order`, or to be queued when their work ends).
    dirty: HashSet<String>,
    processing: HashSet<String>,
    /// Keys with a batched add on its way (`add_batched`).
    batching: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    ready: Notify,
}

impl WorkQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue::default())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut st = self.state.lock().expect("queue lock");
        if st.shut_down || st.dirty.contains(&key) {
            return;
        }
        st.dirty.insert(key.clone());
        if st.processing.contains(&key) {
            return;
        }
        st.order.push_back(key);
        drop(st);
        self.ready.notify_one();
    }

    /// Adds `key` once `delay` has passed.
    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            self.add(key);
            return;
        }
        self.after(delay, move |q| q.add(key));
    }

    /// Adds `key` once [`STATUS_BATCH`] has passed, together with every other
    /// `add_batched` of it meanwhile: for changes that only move a status (a pod of a
    /// thousand became ready), which then cost one sync per window instead of one each. A
    /// key already waiting is left as it is; a plain `add` meanwhile is not delayed.
    pub fn add_batched(self: &Arc<Self>, key: impl Into<String>) {
        let key = key.into();
        {
            let mut st = self.state.lock().expect("queue lock");
            if st.shut_down
                || (st.dirty.contains(&key) && !st.processing.contains(&key))
                || !st.batching.insert(key.clone())
            {
                return;
            }
        }
        self.after(STATUS_BATCH, move |q| {
            q.state.lock().expect("queue lock").batching.remove(&key);
            q.add(key);
        });
    }

    /// Runs `f` on the queue after `delay`, if the queue is still there.
    fn after(self: &Arc<Self>, delay: Duration, f: impl FnOnce(&WorkQueue) + Send + 'static) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = me.upgrade() {
                f(&q);
            }
        });
    }

    /// Adds `key` after its back-off, which doubles with every failure since the last
    /// `forget`.
    pub fn add_rate_limited(self: &Arc<Self>, key: impl Into<String>) {
        let key = key.into();
        let failures = {
            let mut st = self.state.lock().expect("queue lock");
            let n = st.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(key, backoff(failures));
    }

    /// Ends `key`'s back-off: its next failure waits the shortest time again.
    pub fn forget(&self, key: &str) {
        self.state.lock().expect("queue lock").failures.remove(key);
    }

    /// How often `key` failed since it was last forgotten.
    pub fn failures(&self, key: &str) -> u32 {
        self.state
            .lock()
            .expect("queue lock")
            .failures
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// The next key to work on, once there is one; `None` once the queue is shut down.
    /// The caller must call `done` with it when the work ends.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock().expect("queue lock");
                if let Some(key) = st.order.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.order.is_empty();
                    drop(st);
                    if more {
                        // Pass the wake-up on: one notify may have stood for several keys.
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
                if st.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &str) {
        let mut st = self.state.lock().expect("queue lock");
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.order.push_back(key.to_string());
            drop(st);
            self.ready.notify_one();
        }
    }

    pub fn shut_down(&self) {
        self.state.lock().expect("queue lock").shut_down = true;
        self.ready.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The wait after the `failures`-th failure in a row: 5 ms doubling, at most 1000 s.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    BASE_DELAY
        .checked_mul(1u32 << exp)
        .map_or(MAX_DELAY, |d| d.min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_is_handed_out_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_being_worked_on_comes_back_after_done() {
        let q = WorkQueue::new();
        q.add("a");
        let k = q.get().await.unwrap();
        q.add("a");
        assert!(
            q.is_empty(),
            "not handed to a second worker while the first works"
        );
        q.done(&k);
        assert_eq!(q.get().await.as_deref(), Some("a"));
    }

    // On the current-thread runtime of `#[tokio::test]` a batched add cannot land before
    // the test awaits, so what is queued before then is exact, not a matter of timing.
    #[tokio::test]
    async fn batched_adds_within_a_window_are_one() {
        let q = WorkQueue::new();
        let window = STATUS_BATCH;
        for _ in 0..50 {
            q.add_batched("a");
        }
        assert!(q.is_empty(), "nothing before the window ends");
        tokio::time::sleep(window * 3).await;
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert!(q.is_empty(), "one add for the whole window");
        // Added while being worked on: handed out again after `done`, once.
        q.add_batched("a");
        q.add_batched("a");
        tokio::time::sleep(window * 3).await;
        q.done("a");
        assert_eq!(q.get().await.as_deref(), Some("a"));
        q.done("a");
        assert!(q.is_empty());
        // A key already waiting is not added twice; a plain add is not delayed.
        q.add("b");
        q.add_batched("b");
        tokio::time::sleep(window * 3).await;
        assert_eq!(q.len(), 1);
        q.add_batched("c");
        q.add("c");
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn back_off_doubles_from_five_milliseconds_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(4), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
    }

    #[tokio::test]
    async fn a_shut_down_queue_wakes_its_workers() {
        let q = WorkQueue::new();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.get().await });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
