//! What a controller has asked for and not yet seen in its caches (client-go's
//! `UIDTrackingControllerExpectations`): after creating 10 pods, a ReplicaSet's next sync
//! must not count the pods its cache has not seen yet and create 10 more. A key's
//! expectations are met when every creation and deletion asked for was observed, or after
//! five minutes (a watch event lost for good).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(300);

struct Pending {
    adds: i64,
    deletes: HashSet<String>,
    since: Instant,
}

impl Pending {
    fn met(&self) -> bool {
        (self.adds <= 0 && self.deletes.is_empty()) || self.since.elapsed() > TTL
    }
}

#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// Whether the controller may act on `key`: nothing it asked for is still unseen.
    pub fn satisfied(&self, key: &str) -> bool {
        let map = self.map.lock().expect("expectations");
        map.get(key).is_none_or(Pending::met)
    }

    /// `n` more creations to wait for, on top of what is still awaited (a sync that
    /// creates and deletes, as a DaemonSet's, waits for both).
    pub fn expect_creations(&self, key: &str, n: usize) {
        self.pending(key, |p| p.adds += n as i64);
    }

    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        self.pending(key, |p| p.deletes.extend(pods));
    }

    /// The key's pending expectations, started afresh when the last were met or expired,
    /// changed by `f`.
    fn pending(&self, key: &str, f: impl FnOnce(&mut Pending)) {
        let mut map = self.map.lock().expect("expectations");
        let p = map.entry(key.to_string()).or_insert_with(|| Pending {
            adds: 0,
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        if (p.adds <= 0 && p.deletes.is_empty()) || p.since.elapsed() > TTL {
            p.adds = 0;
            p.deletes.clear();
        }
        p.since = Instant::now();
        f(p);
    }

    /// A creation seen (or one that failed, and so will never be seen). Returns whether
    /// the key is now [`Expectations::satisfied`].
    pub fn creation_observed(&self, key: &str) -> bool {
        self.observed(key, |p| p.adds -= 1)
    }

    /// A deletion seen (the object gone or being deleted), or one that failed. Returns
    /// whether the key is now [`Expectations::satisfied`].
    pub fn deletion_observed(&self, key: &str, pod: &str) -> bool {
        self.observed(key, |p| {
            p.deletes.remove(pod);
        })
    }

    fn observed(&self, key: &str, f: impl FnOnce(&mut Pending)) -> bool {
        let mut map = self.map.lock().expect("expectations");
        map.get_mut(key).is_none_or(|p| {
            f(p);
            p.met()
        })
    }

    pub fn forget(&self, key: &str) {
        self.map.lock().expect("expectations").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_once_every_creation_and_deletion_is_seen() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs"));
        // Creations and deletions asked for in one sync are both waited for.
        e.expect_creations("ns/ds", 1);
        e.expect_deletions("ns/ds", ["ns/old".to_string()]);
        e.deletion_observed("ns/ds", "ns/old");
        assert!(!e.satisfied("ns/ds"), "the creation is still awaited");
        e.creation_observed("ns/ds");
        assert!(e.satisfied("ns/ds"));
    }
}
