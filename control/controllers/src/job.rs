//! The Job controller: runs a Job's pods until enough of them succeed (or, Indexed, until
//! every index has), retries failures with back-off up to `backoffLimit`, applies
//! `podFailurePolicy`, `activeDeadlineSeconds` and `suspend`, and deletes a finished Job
//! `ttlSecondsAfterFinished` later (kube's ttl-after-finished controller, folded in here).
//!
//! Finished pods are counted as Kubernetes counts them, so that none is lost or counted
//! twice whatever is deleted when: each pod is made with the `batch.kubernetes.io/
//! job-tracking` finalizer; a finished pod's uid is first written to the Job's
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then the uid moves
//! into `succeeded` or `failed`. Every status write is guarded by the resourceVersion it
//! was computed from, and a pod whose finalizer removal is in flight is not looked at
//! again until the cache shows it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informer::{Change, Informer, controller_of, key_of, split_key};
use crate::pods::PodControl;
use crate::util::{self, count};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers};

pub const NAME: &str = "job-controller";
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The first retry of a failed pod waits this long, doubling up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(360);
/// Keys of orphaned pods that still carry the tracking finalizer.
const POD_KEY: &str = "pod:";

struct Controller {
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    client: kube::Client,
    queue: Arc<WorkQueue>,
    expectations: Expectations,
    events: Recorder,
    /// Pods whose finalizer removal was sent and not yet seen in the cache.
    removing: Mutex<HashSet<String>>,
    /// Per Job: failures since the last success and when the last one was counted.
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
    /// Per Job, the resourceVersion of its last status write here. A sync whose cached Job
    /// is older waits for the cache: counts written a moment ago (a failure, say) must not
    /// be read as never having happened, or a failed pod would be replaced at once.
    written: Mutex<HashMap<String, u64>>,
    /// Whether finished Jobs are deleted after `ttlSecondsAfterFinished`
    /// (`ttl-after-finished-controller`).
    ttl: bool,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize, ttl: bool) {
    let jobs = informers.jobs();
    let pods = informers.pods();
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        jobs: jobs.clone(),
        pods: pods.clone(),
        client: informers.client().clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        events: events.for_controller(NAME),
        removing: Mutex::default(),
        backoff: Mutex::default(),
        written: Mutex::default(),
        ttl,
    });
    jobs.enqueue_keys(&queue);
    {
        let c = c.clone();
        pods.subscribe(move |change| c.pod_changed(change));
    }
    let ready = {
        let (jobs, pods) = (jobs.clone(), pods.clone());
        async move {
            jobs.synced().await;
            pods.synced().await;
        }
    };
    run_workers(NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// A resourceVersion as the number Skiff's (and etcd's) are; an unparsable one is 0.
fn revision(job: &Job) -> u64 {
    job.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(INDEX_ANNOTATION)?
        .parse()
        .ok()
}

fn condition_true(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

pub fn finished(job: &Job) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

/// A set of indexes as the API writes it: `1,3-5,7`.
fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().unwrap_or(last);
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(",")
}

fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            set.extend((a.max(0)..=b.min(completions - 1)).take(1 << 20));
        }
    }
    set
}

/// What a failed pod's first matching `podFailurePolicy` rule says to do.
#[derive(Debug, PartialEq)]
enum Verdict {
    Count,
    Ignore,
    FailJob(String),
}

fn failure_verdict(job: &Job, pod: &Pod) -> Verdict {
    let Some(policy) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return Verdict::Count;
    };
    let status = pod.status.as_ref();
    let exits: Vec<(String, i32)> = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            Some((c.name.clone(), t.exit_code))
        })
        .collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(on) = &rule.on_exit_codes {
            matched = exits
                .iter()
                .filter(|(name, _)| on.container_name.as_ref().is_none_or(|n| n == name))
                .find(|(_, code)| {
                    let listed = on.values.contains(code);
                    match on.operator.as_str() {
                        "In" => listed,
                        "NotIn" => !listed && *code != 0,
                        _ => false,
                    }
                })
                .map(|(name, code)| {
                    format!(
                        "Container {name} for pod {}/{} failed with exit code {code} matching {} rule at index {i}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any(),
                        rule.action
                    )
                });
        }
        if let Some(conds) = &rule.on_pod_conditions {
            let pod_conds = status.and_then(|s| s.conditions.as_ref());
            matched = conds
                .iter()
                .find(|want| {
                    pod_conds.is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == want.type_ && c.status == want.status)
                    })
                })
                .map(|want| {
                    format!(
                        "Pod {}/{} has condition {} matching {} rule at index {i}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any(),
                        want.type_,
                        rule.action
                    )
                });
        }
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(message),
                "Ignore" => Verdict::Ignore,
                // FailIndex needs backoffLimitPerIndex, which Skiff does not run yet: the
                // failure counts against backoffLimit instead.
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// What the tracking step found: the Job as written last, and the pods that count.
struct Tracked {
    job: Job,
    /// Failures counted in this sync (for the retry back-off).
    new_failures: u32,
    new_successes: u32,
}

impl Controller {
    fn job_of(&self, pod: &Pod) -> Option<Arc<Job>> {
        let r = controller_of(pod)?;
        if r.kind != "Job" {
            return None;
        }
        let job = self.jobs.get_by_uid(&r.uid)?;
        (job.meta().namespace == pod.metadata.namespace).then_some(job)
    }

    fn pod_changed(&self, change: &Change<'_, Pod>) {
        let (pod, gone) = match change {
            Change::Added(p) => (*p, false),
            Change::Updated { new, .. } => (*new, false),
            Change::Deleted(p) => (*p, true),
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if gone || !has_finalizer(pod) {
            self.removing.lock().expect("removing").remove(&uid);
        }
        match self.job_of(pod) {
            Some(job) => {
                let key = key_of(&*job);
                match change {
                    Change::Added(_) => {
                        self.expectations.creation_observed(&key);
                    }
                    Change::Deleted(_) => {
                        self.expectations.deletion_observed(&key, &key_of(&**pod));
                    }
                    Change::Updated { old, new } => {
                        if new.metadata.deletion_timestamp.is_some()
                            && old.metadata.deletion_timestamp.is_none()
                        {
                            self.expectations.deletion_observed(&key, &key_of(&***new));
                        }
                    }
                }
                self.queue.add(key);
            }
            None if !gone && has_finalizer(pod) => {
                // Its Job is gone (or it was orphaned): nobody else will remove the
                // finalizer.
                let is_job_pod = controller_of(&**pod).is_none_or(|r| r.kind == "Job");
                if is_job_pod {
                    self.queue.add(format!("{POD_KEY}{}", key_of(&**pod)));
                }
            }
            None => {}
        }
    }

    async fn sync(&self, key: &str) -> SyncResult {
        if let Some(pod_key) = key.strip_prefix(POD_KEY) {
            return self.sync_orphan(pod_key).await;
        }
        let Some(job) = self.jobs.get(key) else {
            self.expectations.forget(key);
            self.backoff.lock().expect("backoff").remove(key);
            self.written.lock().expect("written").remove(key);
            return Ok(None);
        };
        let cached = revision(&job);
        if self
            .written
            .lock()
            .expect("written")
            .get(key)
            .is_some_and(|w| cached < *w)
        {
            // The Job's update event brings the key back.
            return Ok(None);
        }
        // Read before the pods are: a creation seen between the two would otherwise
        // satisfy the expectations while the pod list still lacks it (kube's order).
        let satisfied = self.expectations.satisfied(key);
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or_default().to_string();
        let selector = match util::selector(job.spec.as_ref().and_then(|s| s.selector.as_ref())) {
            Ok(s) => s,
            Err(e) => {
                self.events.warning(
                    job.object_ref(&()),
                    "InvalidSelector",
                    "Sync",
                    format!("invalid selector: {e}"),
                );
                return Ok(None);
            }
        };
        // Its pods: its own (finished ones too), and orphans its selector matches, adopted.
        let pods = crate::refs::claim_pods(&self.client, &self.pods, &*job, |pod: &Pod| {
            selector
                .as_ref()
                .is_some_and(|s| !s.is_empty() && s.matches(util::labels(pod)))
        })
        .await?;
        let tracked = self.track(&job, &pods).await?;
        {
            let mut backoff = self.backoff.lock().expect("backoff");
            let entry = backoff
                .entry(key.to_string())
                .or_insert((0, Instant::now()));
            if tracked.new_successes > 0 {
                entry.0 = 0;
            }
            if tracked.new_failures > 0 {
                *entry = (entry.0 + tracked.new_failures, Instant::now());
            }
        }
        let job = tracked.job;
        if finished(&job) {
            return self.after_finished(&job).await;
        }
        if !satisfied {
            return Ok(None);
        }
        self.reconcile(key, &ns, &job, &pods).await
    }

    /// A pod with the tracking finalizer whose Job is gone: the finalizer comes off.
    async fn sync_orphan(&self, pod_key: &str) -> SyncResult {
        let Some(pod) = self.pods.get(pod_key) else {
            return Ok(None);
        };
        if !has_finalizer(&pod) || self.job_of(&pod).is_some() {
            return Ok(None);
        }
        self.remove_finalizers(&[pod]).await?;
        Ok(None)
    }

    /// Counts the pods that finished, in the three steps the module comment describes.
    async fn track(&self, job: &Job, pods: &[Arc<Pod>]) -> Result<Tracked, Error> {
        let spec = job.spec.clone().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions.unwrap_or(0);
        let only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
        let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut succeeded_uids: BTreeSet<String> = uncounted
            .succeeded
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut failed_uids: BTreeSet<String> = uncounted
            .failed
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut completed = parse_indexes(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions,
        );
        let mut fail_job: Option<String> = None;
        let mut ignored: Vec<Arc<Pod>> = Vec::new();
        let (mut new_failures, mut new_successes) = (0, 0);
        let mut changed = false;
        {
            let removing = self.removing.lock().expect("removing");
            for pod in pods.iter().filter(|p| has_finalizer(p)) {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if removing.contains(&uid)
                    || succeeded_uids.contains(&uid)
                    || failed_uids.contains(&uid)
                {
                    continue;
                }
                let deleting = pod.metadata.deletion_timestamp.is_some();
                match phase(pod) {
                    "Succeeded" => {
                        if indexed {
                            match index_of(pod) {
                                Some(i) if (0..completions).contains(&i) => {
                                    completed.insert(i);
                                }
                                // A pod with no valid index, or an index done already, is
                                // let go without counting.
                                _ => {
                                    ignored.push(pod.clone());
                                    continue;
                                }
                            }
                        }
                        succeeded_uids.insert(uid);
                        new_successes += 1;
                        changed = true;
                    }
                    p if p == "Failed" || (deleting && !only_failed) => {
                        match failure_verdict(job, pod) {
                            Verdict::Ignore => {
                                ignored.push(pod.clone());
                                continue;
                            }
                            Verdict::FailJob(message) => {
                                fail_job.get_or_insert(message);
                            }
                            Verdict::Count => {}
                        }
                        failed_uids.insert(uid);
                        new_failures += 1;
                        changed = true;
                    }
                    // Deleted while running with podReplacementPolicy Failed: waits for its
                    // phase.
                    _ => {}
                }
            }
        }
        let mut job = job.clone();
        // Step 1: the uids (and indexes) are written before any finalizer comes off.
        if changed {
            let mut conditions = Vec::new();
            if let Some(message) = &fail_job
                && !condition_true(&job, "FailureTarget")
            {
                conditions.push(condition("FailureTarget", "PodFailurePolicy", message));
            }
            let mut patch = json!({"status": {"uncountedTerminatedPods": {
                "succeeded": succeeded_uids.iter().collect::<Vec<_>>(),
                "failed": failed_uids.iter().collect::<Vec<_>>(),
            }}});
            if indexed {
                patch["status"]["completedIndexes"] = json!(format_indexes(&completed));
            }
            if !conditions.is_empty() {
                let mut all = current_conditions(&job);
                all.extend(conditions);
                patch["status"]["conditions"] = Value::Array(all);
            }
            job = self.write_status(&job, patch).await?;
        }
        // Step 2: the finalizers of every pod in the uncounted lists (and of the ignored).
        let uncounted: HashSet<&String> = succeeded_uids.iter().chain(&failed_uids).collect();
        let mut release: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| has_finalizer(p))
            .filter(|p| {
                p.metadata
                    .uid
                    .as_ref()
                    .is_some_and(|u| uncounted.contains(u))
            })
            .cloned()
            .collect();
        release.extend(ignored);
        let released = self.remove_finalizers(&release).await?;
        // Step 3: uids whose pods have no finalizer left (or are gone) move to the counts.
        let still_held: HashSet<String> = pods
            .iter()
            .filter(|p| has_finalizer(p))
            .filter_map(|p| p.metadata.uid.clone())
            .filter(|u| !released.contains(u))
            .collect();
        let done_succeeded: Vec<&String> = succeeded_uids
            .iter()
            .filter(|u| !still_held.contains(*u))
            .collect();
        let done_failed: Vec<&String> = failed_uids
            .iter()
            .filter(|u| !still_held.contains(*u))
            .collect();
        if !done_succeeded.is_empty() || !done_failed.is_empty() {
            let status = job.status.clone().unwrap_or_default();
            let keep = |set: &BTreeSet<String>| -> Vec<String> {
                set.iter()
                    .filter(|u| still_held.contains(*u))
                    .cloned()
                    .collect()
            };
            let patch = json!({"status": {
                "succeeded": count(status.succeeded.unwrap_or(0) + done_succeeded.len() as i32),
                "failed": count(status.failed.unwrap_or(0) + done_failed.len() as i32),
                "uncountedTerminatedPods": {
                    "succeeded": keep(&succeeded_uids),
                    "failed": keep(&failed_uids),
                },
            }});
            job = self.write_status(&job, patch).await?;
        }
        Ok(Tracked {
            job,
            new_failures,
            new_successes,
        })
    }

    /// Removes the tracking finalizer from `pods`; returns the uids it came off.
    async fn remove_finalizers(&self, pods: &[Arc<Pod>]) -> Result<HashSet<String>, Error> {
        if pods.is_empty() {
            return Ok(HashSet::new());
        }
        {
            let mut removing = self.removing.lock().expect("removing");
            for p in pods {
                removing.insert(p.metadata.uid.clone().unwrap_or_default());
            }
        }
        let results = futures::future::join_all(pods.iter().map(|pod| {
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let patch = json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
                "uid": pod.metadata.uid,
            }});
            async move {
                let r = api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await;
                (pod.metadata.uid.clone().unwrap_or_default(), r)
            }
        }))
        .await;
        let mut released = HashSet::new();
        let mut failure = None;
        for (uid, r) in results {
            match r {
                Ok(_) => {
                    released.insert(uid);
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    // Gone, or a new pod under the name: this one holds nothing now.
                    released.insert(uid);
                }
                Err(e) => {
                    self.removing.lock().expect("removing").remove(&uid);
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) if released.is_empty() => Err(e.into()),
            _ => Ok(released),
        }
    }

    /// A status merge patch guarded by the resourceVersion `job` was read at.
    async fn write_status(&self, job: &Job, mut patch: Value) -> Result<Job, Error> {
        patch["metadata"] = json!({"resourceVersion": job.metadata.resource_version});
        let written = util::merge_patch_status(&self.client, job, &patch).await?;
        // Until the cache has this version, a sync would read counts from before it.
        self.written
            .lock()
            .expect("written")
            .insert(key_of(job), revision(&written));
        Ok(written)
    }

    /// A finished Job: its ttlSecondsAfterFinished, if any.
    async fn after_finished(&self, job: &Job) -> SyncResult {
        let Some(ttl) = job
            .spec
            .as_ref()
            .and_then(|s| s.ttl_seconds_after_finished)
            .filter(|_| self.ttl)
        else {
            return Ok(None);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let status = job.status.as_ref();
        let finished_at = status
            .and_then(|s| s.completion_time.as_ref())
            .or_else(|| {
                status
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| {
                        cs.iter()
                            .find(|c| c.type_ == "Failed" && c.status == "True")
                    })
                    .and_then(|c| c.last_transition_time.as_ref())
            })
            .map(|t| t.0.as_millisecond())
            .unwrap_or(0);
        let due = finished_at + i64::from(ttl) * 1000;
        let now = chrono::Utc::now().timestamp_millis();
        if now < due {
            return Ok(Some(Duration::from_millis((due - now) as u64)));
        }
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&job.name_any(), &dp).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One step of an unfinished Job: fail it, complete it, suspend it, or run the pods
    /// it needs; then write what it sees.
    async fn reconcile(&self, key: &str, ns: &str, job: &Job, pods: &[Arc<Pod>]) -> SyncResult {
        let spec = job.spec.clone().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let suspended = spec.suspend == Some(true);
        let only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
        let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let succeeded =
            status.succeeded.unwrap_or(0) + uncounted.succeeded.as_ref().map_or(0, Vec::len) as i32;
        let failed =
            status.failed.unwrap_or(0) + uncounted.failed.as_ref().map_or(0, Vec::len) as i32;
        let completed = parse_indexes(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions.unwrap_or(0),
        );
        let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| util::is_active(p)).collect();
        let terminating = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(phase(p), "Succeeded" | "Failed")
            })
            .count() as i32;
        let mut conditions = current_conditions(job);
        let mut again: Option<Duration> = None;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut start_time = status.start_time.clone();
        let mut completion_time = status.completion_time.clone();

        // Why the Job fails, if it does.
        let restarts: i32 = if spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
        {
            active
                .iter()
                .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
                .flatten()
                .map(|c| c.restart_count)
                .sum()
        } else {
            0
        };
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let mut failure: Option<(&str, String)> = None;
        if let Some(c) = conditions
            .iter()
            .find(|c| c["type"] == "FailureTarget" && c["status"] == "True")
        {
            failure = Some((
                "PodFailurePolicy",
                c["message"].as_str().unwrap_or_default().to_string(),
            ));
        } else if failed + restarts > backoff_limit {
            failure = Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ));
        } else if let (Some(deadline), Some(start)) = (spec.active_deadline_seconds, &start_time)
            && !suspended
        {
            let due = start.0.as_millisecond() + deadline * 1000;
            if now_ms >= due {
                failure = Some((
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                again = Some(Duration::from_millis((due - now_ms) as u64));
            }
        }

        let complete = match (indexed, completions) {
            (true, Some(n)) => completed.len() as i32 >= n,
            (_, Some(n)) => succeeded >= n,
            (_, None) => succeeded > 0 && active.is_empty(),
        };
        let no_uncounted = uncounted.succeeded.as_ref().is_none_or(Vec::is_empty)
            && uncounted.failed.as_ref().is_none_or(Vec::is_empty);

        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if let Some((reason, message)) = failure {
            self.control(job, &api).delete(key, &active).await?;
            if no_uncounted {
                set_condition(&mut conditions, "Failed", reason, &message);
                self.events
                    .warning(job.object_ref(&()), reason, "Sync", message.clone());
            }
        } else if complete {
            self.control(job, &api).delete(key, &active).await?;
            if no_uncounted {
                set_condition(&mut conditions, "Complete", "", "");
                completion_time = Some(util::now());
                self.events.normal(
                    job.object_ref(&()),
                    "Completed",
                    "Sync",
                    "Job completed".into(),
                );
            }
        } else if suspended {
            if !active.is_empty() {
                self.control(job, &api).delete(key, &active).await?;
            }
            if !condition_true(job, "Suspended") {
                set_condition(
                    &mut conditions,
                    "Suspended",
                    "JobSuspended",
                    "Job suspended",
                );
                self.events.normal(
                    job.object_ref(&()),
                    "Suspended",
                    "Sync",
                    "Job suspended".into(),
                );
            }
            start_time = None;
        } else {
            if condition_true(job, "Suspended") {
                set_status(
                    &mut conditions,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                );
                self.events
                    .normal(job.object_ref(&()), "Resumed", "Sync", "Job resumed".into());
                start_time = None;
            }
            if start_time.is_none() {
                start_time = Some(util::now());
                if let Some(deadline) = spec.active_deadline_seconds {
                    again = Some(Duration::from_secs(deadline.max(0) as u64));
                }
            }
            // Pods being deleted hold their place until they fail, under
            // podReplacementPolicy Failed.
            let busy = active.len() as i32 + if only_failed { terminating } else { 0 };
            let wait = self.backoff_left(key, failed);
            let retry = self
                .manage(
                    key,
                    job,
                    &api,
                    &active,
                    busy,
                    parallelism,
                    succeeded,
                    &completed,
                    wait,
                )
                .await?;
            again = util::min_some(again, retry);
        }

        let ready = active.iter().filter(|p| util::is_ready(p)).count() as i32;
        let active_now = if finished_conditions(&conditions) {
            0
        } else {
            active.len() as i32
        };
        let patch = json!({"status": {
            "active": count(active_now),
            "ready": ready,
            "terminating": terminating,
            "startTime": start_time,
            "completionTime": completion_time,
            "conditions": if conditions.is_empty() { Value::Null } else { Value::Array(conditions.clone()) },
        }});
        let current = serde_json::to_value(&status).unwrap_or(Value::Null);
        let unchanged = patch["status"].as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| {
                current.get(k).unwrap_or(&Value::Null) == v
                    || (v.as_i64() == Some(0) && current.get(k).is_none())
            })
        });
        if !unchanged {
            match self.write_status(job, patch).await {
                Ok(_) => {}
                Err(Error::Api(kube::Error::Api(e))) if e.code == 404 => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(again)
    }

    /// How long the next pod must wait after `failed` failures (kube's back-off: 10 s
    /// doubling to 6 minutes, counted from the last failure since the last success).
    fn backoff_left(&self, key: &str, failed: i32) -> Option<Duration> {
        if failed == 0 {
            return None;
        }
        let backoff = self.backoff.lock().expect("backoff");
        let (n, at) = *backoff.get(key)?;
        if n == 0 {
            return None;
        }
        let delay = BASE_BACKOFF
            .saturating_mul(1 << (n - 1).min(10))
            .min(MAX_BACKOFF);
        delay.checked_sub(at.elapsed())
    }

    /// Creates or deletes pods so that as many run as the Job wants now; returns when to
    /// look again (a back-off).
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        key: &str,
        job: &Job,
        api: &Api<Pod>,
        active: &[&Arc<Pod>],
        busy: i32,
        parallelism: i32,
        succeeded: i32,
        completed: &BTreeSet<i32>,
        wait: Option<Duration>,
    ) -> Result<Option<Duration>, Error> {
        let spec = job.spec.as_ref().cloned().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let want = match spec.completions {
            None if succeeded > 0 => 0,
            None => parallelism,
            Some(n) if indexed => parallelism.min(n - completed.len() as i32),
            Some(n) => parallelism.min(n - succeeded),
        }
        .max(0);
        // Indexed: a second pod of one index, or a pod of an index done already, goes.
        let mut extra: Vec<&Arc<Pod>> = Vec::new();
        let mut running: BTreeSet<i32> = BTreeSet::new();
        if indexed {
            for p in active {
                match index_of(p) {
                    Some(i) if !completed.contains(&i) && running.insert(i) => {}
                    _ => extra.push(p),
                }
            }
        }
        let kept = active.len() as i32 - extra.len() as i32;
        if kept > want {
            let mut ranked: Vec<&Arc<Pod>> = active
                .iter()
                .copied()
                .filter(|p| !extra.contains(p))
                .collect();
            // Not ready first, then the highest indexes, then the newest.
            ranked.sort_by_key(|p| {
                (
                    util::is_ready(p),
                    std::cmp::Reverse(index_of(p).unwrap_or(0)),
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                )
            });
            extra.extend(ranked.into_iter().take((kept - want) as usize));
        }
        if !extra.is_empty() {
            self.control(job, api).delete(key, &extra).await?;
            return Ok(None);
        }
        let missing = (want - busy.max(kept)).max(0) as usize;
        if missing == 0 {
            return Ok(None);
        }
        if let Some(left) = wait {
            return Ok(Some(left));
        }
        let template = spec.template.clone();
        let indexes: Vec<Option<i32>> = if indexed {
            let n = spec.completions.unwrap_or(0);
            (0..n)
                .filter(|i| !completed.contains(i) && !running.contains(i))
                .take(missing)
                .map(Some)
                .collect()
        } else {
            vec![None; missing]
        };
        let pods: Vec<Pod> = indexes
            .iter()
            .map(|i| pod_for(job, &template, *i))
            .collect();
        self.control(job, api).create(key, &pods).await?;
        Ok(None)
    }

    fn control<'a>(&'a self, job: &Job, api: &'a Api<Pod>) -> PodControl<'a> {
        PodControl {
            api,
            expectations: &self.expectations,
            events: &self.events,
            owner: job.object_ref(&()),
        }
    }
}

fn current_conditions(job: &Job) -> Vec<Value> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn finished_conditions(conditions: &[Value]) -> bool {
    conditions
        .iter()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

fn condition(type_: &str, reason: &str, message: &str) -> Value {
    let now = util::now();
    let mut c = json!({"type": type_, "status": "True",
        "lastProbeTime": now, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    c
}

fn set_condition(conditions: &mut Vec<Value>, type_: &str, reason: &str, message: &str) {
    set_status(conditions, type_, "True", reason, message);
}

/// Sets a condition's status, keeping its transition time when the status stays.
fn set_status(conditions: &mut Vec<Value>, type_: &str, status: &str, reason: &str, message: &str) {
    let mut c = condition(type_, reason, message);
    c["status"] = json!(status);
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        Some(old) if old["status"] == status => {}
        Some(old) => *old = c,
        None => conditions.push(c),
    }
}

/// The pod a Job makes from its template, with the tracking finalizer and, Indexed, its
/// index (in an annotation, a label, the hostname and `JOB_COMPLETION_INDEX`).
fn pod_for(
    job: &Job,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    index: Option<i32>,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let name = job.name_any();
    let mut finalizers = meta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(INDEX_ANNOTATION.into(), i.to_string());
            annotations.insert(INDEX_ANNOTATION.into(), i.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = k8s_openapi::api::core::v1::EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                    field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{INDEX_ANNOTATION}']"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            for c in spec
                .init_containers
                .iter_mut()
                .flatten()
                .chain(spec.containers.iter_mut())
            {
                c.env.get_or_insert_with(Vec::new).push(env.clone());
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![util::controller_ref(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sets_read_and_write_as_the_api_does() {
        let set = parse_indexes("0,2-4,7", 8);
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        // Out-of-range indexes (after completions shrank) are dropped.
        assert_eq!(format_indexes(&parse_indexes("1-9", 3)), "1-2");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    fn failed_pod(exit: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn pod_failure_policy_takes_the_first_matching_rule() {
        let job: Job = serde_json::from_value(json!({"spec": {"template": {}, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "NotIn", "values": [1, 3]}},
        ]}}}))
        .unwrap();
        assert_eq!(failure_verdict(&job, &failed_pod(3)), Verdict::Ignore);
        assert_eq!(failure_verdict(&job, &failed_pod(1)), Verdict::Count);
        match failure_verdict(&job, &failed_pod(42)) {
            Verdict::FailJob(m) => assert!(
                m.contains("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
