//! The CronJob controller (kube's cronjob controller v2): at each time the schedule names,
//! in the CronJob's time zone, it makes one Job from the template, as the concurrency
//! policy allows and within `startingDeadlineSeconds`; it keeps `status.active` to the
//! Jobs still running, notes the last schedule and the last success, and deletes finished
//! Jobs beyond the history limits.
//!
//! Next and previous times come from croner, in time zones from jiff's built-in tz
//! database; `@every <duration>` (which robfig/cron, and so Kubernetes, accepts and croner
//! does not) is counted here from the CronJob's creation.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::events::Recorder;
use crate::informer::{Change, Informer, controller_of, key_of};
use crate::{Error, Informers, SyncResult, WorkQueue, job, run_workers, util};

pub const NAME: &str = "cronjob-controller";
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed times than this since the last run is worth a warning (as Kubernetes).
const TOO_MANY_MISSED: usize = 100;

struct Controller {
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    client: kube::Client,
    events: Recorder,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize) {
    let cronjobs = informers.cronjobs();
    let jobs = informers.jobs();
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        cronjobs: cronjobs.clone(),
        jobs: jobs.clone(),
        client: informers.client().clone(),
        events: events.for_controller(NAME),
    });
    cronjobs.enqueue_keys(&queue);
    {
        let (queue, cronjobs) = (queue.clone(), cronjobs.clone());
        jobs.subscribe(move |change| {
            let job = match change {
                Change::Added(j) | Change::Deleted(j) => *j,
                Change::Updated { new, .. } => *new,
            };
            if let Some(r) = controller_of(&**job).filter(|r| r.kind == "CronJob")
                && let Some(cj) = cronjobs.get_by_uid(&r.uid)
            {
                queue.add(key_of(&*cj));
            }
        });
    }
    let ready = {
        let (cronjobs, jobs) = (cronjobs.clone(), jobs.clone());
        async move {
            cronjobs.synced().await;
            jobs.synced().await;
        }
    };
    run_workers(NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

/// A CronJob's schedule, read once per sync.
pub enum Schedule {
    Cron(Box<croner::Cron>),
    Every(Duration),
}

impl Schedule {
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        if let Some(every) = skiff_apimachinery::cron::every(spec) {
            if every.is_zero() {
                return Err("@every needs a positive duration".into());
            }
            return Ok(Schedule::Every(every.max(Duration::from_secs(1))));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .sloppy_ranges(true)
            .build()
            .parse(spec)
            .map_err(|e| e.to_string())?;
        Ok(Schedule::Cron(Box::new(cron)))
    }

    /// The latest time the schedule names in `(after, now]`, and how many it names there
    /// (counted up to a little over `TOO_MANY_MISSED`).
    pub fn most_recent(
        &self,
        after: &jiff::Zoned,
        now: &jiff::Zoned,
    ) -> (Option<jiff::Zoned>, usize) {
        match self {
            Schedule::Cron(cron) => {
                let latest = cron
                    .find_previous_occurrence(now, true)
                    .ok()
                    .filter(|t| t > after);
                let missed = match &latest {
                    None => 0,
                    Some(_) => cron
                        .iter_after(after.clone())
                        .take_while(|t| t <= now)
                        .take(TOO_MANY_MISSED + 1)
                        .count(),
                };
                (latest, missed)
            }
            Schedule::Every(every) => {
                let span = now.timestamp().as_millisecond() - after.timestamp().as_millisecond();
                let step = every.as_millis() as i64;
                let n = span.div_euclid(step);
                if n < 1 {
                    return (None, 0);
                }
                let at = jiff::Timestamp::from_millisecond(
                    after.timestamp().as_millisecond() + n * step,
                )
                .unwrap_or(now.timestamp())
                .to_zoned(now.time_zone().clone());
                (Some(at), n as usize)
            }
        }
    }

    /// The first time the schedule names after `now`, counting `@every` from `origin`.
    pub fn next(&self, origin: &jiff::Zoned, now: &jiff::Zoned) -> Option<jiff::Zoned> {
        match self {
            Schedule::Cron(cron) => cron.find_next_occurrence(now, false).ok(),
            Schedule::Every(every) => {
                let step = every.as_millis() as i64;
                let from = origin.timestamp().as_millisecond();
                let n = (now.timestamp().as_millisecond() - from).div_euclid(step) + 1;
                jiff::Timestamp::from_millisecond(from + n * step)
                    .ok()
                    .map(|t| t.to_zoned(now.time_zone().clone()))
            }
        }
    }
}

fn zoned(t: &Time, tz: &jiff::tz::TimeZone) -> jiff::Zoned {
    t.0.to_zoned(tz.clone())
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn job_status_word(j: &Job) -> &'static str {
    let complete = j
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        });
    if complete { "Complete" } else { "Failed" }
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let Some(cj) = self.cronjobs.get(key) else {
            return Ok(None);
        };
        let ns = cj.namespace().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let spec = cj.spec.clone().unwrap_or_default();
        let old_status = cj.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        let children: Vec<Arc<Job>> = self
            .jobs
            .owned_by(&uid)
            .into_iter()
            .filter(|j| controller_of(&**j).is_some_and(|r| r.uid == uid))
            .collect();
        let mut active = status.active.take().unwrap_or_default();

        // What became of the Jobs it runs.
        for j in &children {
            let found = active.iter().any(|r| r.uid == j.metadata.uid);
            let finished = job::finished(j);
            if !found && !finished {
                self.events.warning(
                    cj.object_ref(&()),
                    "UnexpectedJob",
                    "Sync",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    ),
                );
            } else if found && finished {
                active.retain(|r| r.uid != j.metadata.uid);
                self.events.normal(
                    cj.object_ref(&()),
                    "SawCompletedJob",
                    "Sync",
                    format!(
                        "Saw completed job: {}, status: {}",
                        j.name_any(),
                        job_status_word(j)
                    ),
                );
                if job_status_word(j) == "Complete"
                    && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
                    && status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
        }
        // Jobs in the list that are not in the cache: gone, or too new for the cache. A
        // read tells which.
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let mut kept = Vec::new();
        for r in active {
            if children.iter().any(|j| j.metadata.uid == r.uid) {
                kept.push(r);
                continue;
            }
            match jobs_api
                .get_opt(r.name.as_deref().unwrap_or_default())
                .await?
            {
                Some(j) if j.metadata.uid == r.uid => kept.push(r),
                _ => self.events.normal(
                    cj.object_ref(&()),
                    "MissingJob",
                    "Sync",
                    format!(
                        "Active job went missing: {}",
                        r.name.clone().unwrap_or_default()
                    ),
                ),
            }
        }
        let mut active = kept;

        let again = if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
            None
        } else {
            self.run_schedule(&cj, &children, &mut active, &mut status)
                .await?
        };
        status.active = (!active.is_empty()).then_some(active);
        if status != old_status {
            let patch = json!({"status": {
                "active": status.active,
                "lastScheduleTime": status.last_schedule_time,
                "lastSuccessfulTime": status.last_successful_time,
            }});
            match util::merge_patch_status(&self.client, &*cj, &patch).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        self.clean_history(&cj, &children).await?;
        Ok(again)
    }

    /// Starts the Job of the latest unmet schedule time, if one is due; returns when to
    /// look again (the next time).
    async fn run_schedule(
        &self,
        cj: &CronJob,
        children: &[Arc<Job>],
        active: &mut Vec<ObjectReference>,
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
    ) -> Result<Option<Duration>, Error> {
        let spec = cj.spec.clone().unwrap_or_default();
        let tz = match spec.time_zone.as_deref() {
            None => jiff::tz::TimeZone::UTC,
            Some(name) => match jiff::tz::TimeZone::get(name) {
                Ok(tz) => tz,
                Err(_) => {
                    self.events.warning(
                        cj.object_ref(&()),
                        "UnknownTimeZone",
                        "Sync",
                        format!("invalid timeZone: {name:?}: unknown time zone {name}"),
                    );
                    return Ok(None);
                }
            },
        };
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.events.warning(
                    cj.object_ref(&()),
                    "UnparseableSchedule",
                    "Sync",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                );
                return Ok(None);
            }
        };
        let now = jiff::Timestamp::now().to_zoned(tz.clone());
        let created = cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| zoned(t, &tz))
            .unwrap_or_else(|| now.clone());
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .map(|t| zoned(t, &tz))
            .unwrap_or_else(|| created.clone());
        if let Some(deadline) = spec.starting_deadline_seconds
            && let Ok(window) = now.checked_sub(jiff::SignedDuration::from_secs(deadline))
            && window > earliest
        {
            earliest = window;
        }
        let next_in = |now: &jiff::Zoned| {
            schedule.next(&created, now).map(|next| {
                let ms = next.timestamp().as_millisecond() - now.timestamp().as_millisecond();
                Duration::from_millis(ms.max(0) as u64 + 100)
            })
        };
        let (due, missed) = schedule.most_recent(&earliest, &now);
        let Some(due) = due else {
            return Ok(next_in(&now));
        };
        if missed > TOO_MANY_MISSED {
            self.events.warning(
                cj.object_ref(&()),
                "TooManyMissedTimes",
                "Sync",
                format!(
                    "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                ),
            );
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active.is_empty() {
            // The time stays unmet; it runs when the active Job ends, if still in time.
            return Ok(next_in(&now));
        }
        let ns = cj.namespace().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        if policy == "Replace" {
            for r in std::mem::take(active) {
                let name = r.name.clone().unwrap_or_default();
                match delete_job(&jobs_api, &name, r.uid.clone()).await {
                    Ok(()) => self.events.normal(
                        cj.object_ref(&()),
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted job {name}"),
                    ),
                    Err(e) => {
                        active.push(r);
                        return Err(e.into());
                    }
                }
            }
        }
        let job = job_from_template(cj, &due);
        let name = job.name_any();
        let made = match jobs_api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.events.normal(
                    cj.object_ref(&()),
                    "SuccessfulCreate",
                    "Create",
                    format!("Created job {name}"),
                );
                j
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Made by an earlier sync whose status write was lost, or someone else's.
                match children.iter().find(|j| j.name_any() == name) {
                    Some(j) => (**j).clone(),
                    None => match jobs_api.get_opt(&name).await? {
                        Some(j)
                            if controller_of(&j)
                                .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref()) =>
                        {
                            j
                        }
                        _ => {
                            self.events.warning(
                                cj.object_ref(&()),
                                "FailedCreate",
                                "Create",
                                format!("Error creating job: a job named {name} exists and is not this CronJob's"),
                            );
                            status.last_schedule_time = Some(Time(due.timestamp()));
                            return Ok(next_in(&now));
                        }
                    },
                }
            }
            Err(e) => {
                self.events.warning(
                    cj.object_ref(&()),
                    "FailedCreate",
                    "Create",
                    format!("Error creating job: {e}"),
                );
                return Err(e.into());
            }
        };
        if !job::finished(&made) && !active.iter().any(|r| r.uid == made.metadata.uid) {
            active.push(job_ref(&made));
        }
        status.last_schedule_time = Some(Time(due.timestamp()));
        Ok(next_in(&jiff::Timestamp::now().to_zoned(tz)))
    }

    /// Deletes the oldest finished Jobs beyond the CronJob's history limits.
    async fn clean_history(&self, cj: &CronJob, children: &[Arc<Job>]) -> Result<(), Error> {
        let spec = cj.spec.clone().unwrap_or_default();
        let ns = cj.namespace().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        for (word, limit) in [
            ("Complete", spec.successful_jobs_history_limit),
            ("Failed", spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = children
                .iter()
                .filter(|j| job::finished(j) && job_status_word(j) == word)
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .collect();
            if done.len() <= limit.max(0) as usize {
                continue;
            }
            done.sort_by_key(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .or(j.metadata.creation_timestamp.as_ref())
                    .map(|t| t.0)
            });
            let extra = done.len() - limit.max(0) as usize;
            for j in done.into_iter().take(extra) {
                delete_job(&api, &j.name_any(), j.metadata.uid.clone()).await?;
                self.events.normal(
                    cj.object_ref(&()),
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted job {}", j.name_any()),
                );
            }
        }
        Ok(())
    }
}

/// Deletes a Job and, in the background, its pods; a Job already gone is fine.
async fn delete_job(api: &Api<Job>, name: &str, uid: Option<String>) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The Job a CronJob makes for the time `due`: named by the minute (so one time makes one
/// Job), its template's labels and annotations, the scheduled time noted.
fn job_from_template(cj: &CronJob, due: &jiff::Zoned) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let template = spec.job_template;
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_ANNOTATION.into(),
        due.strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z"),
    );
    let minute = due.timestamp().as_second().div_euclid(60);
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{minute}", cj.name_any())),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![util::controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str, tz: &str) -> jiff::Zoned {
        let tz = jiff::tz::TimeZone::get(tz).unwrap();
        s.parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(tz)
            .unwrap()
    }

    #[test]
    fn schedules_run_in_their_time_zone() {
        let s = Schedule::parse("30 9 * * 1-5").unwrap();
        // Friday 2026-03-06 10:00 in New York: the next run is Monday 09:30 there.
        let now = at("2026-03-06T10:00", "America/New_York");
        let next = s.next(&now, &now).unwrap();
        assert_eq!(next.datetime().to_string(), "2026-03-09T09:30:00");
        // That Monday is after the change to daylight time: 13:30 UTC, not 14:30.
        assert_eq!(next.timestamp().to_string(), "2026-03-09T13:30:00Z");
    }

    #[test]
    fn the_latest_missed_time_is_the_one_run() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let after = at("2026-01-01T00:05", "UTC");
        let now = at("2026-01-01T01:20", "UTC");
        let (due, missed) = s.most_recent(&after, &now);
        assert_eq!(due.unwrap().datetime().to_string(), "2026-01-01T01:15:00");
        assert_eq!(missed, 5); // 00:15, 00:30, 00:45, 01:00, 01:15
        let (due, _) = s.most_recent(&now, &at("2026-01-01T01:29", "UTC"));
        assert!(due.is_none());
    }

    #[test]
    fn every_counts_from_the_origin() {
        let s = Schedule::parse("@every 90s").unwrap();
        let origin = at("2026-01-01T00:00", "UTC");
        let now = at("2026-01-01T00:04", "UTC");
        let (due, missed) = s.most_recent(&origin, &now);
        assert_eq!(due.unwrap().datetime().to_string(), "2026-01-01T00:03:00");
        assert_eq!(missed, 2);
        assert_eq!(
            s.next(&origin, &now).unwrap().datetime().to_string(),
            "2026-01-01T00:04:30"
        );
    }

    #[test]
    fn descriptors_and_names_parse() {
        for ok in [
            "@hourly",
            "@daily",
            "0 0 * jan-mar mon",
            "*/5 * * * *",
            "0/10 * * * *",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
    }
}
