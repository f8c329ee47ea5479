//! Pod status the way the kubelet computes it: container states, phase, conditions.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_apimachinery::quantity::{parse_milli, parse_value};

/// An API time from a chrono one (k8s-openapi's times are jiff timestamps).
pub fn time(t: DateTime<Utc>) -> Time {
    Time(micros(t))
}

pub fn micro_time(t: DateTime<Utc>) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(micros(t))
}

fn micros(t: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.0.as_microsecond()).unwrap_or_default()
}

/// What one container is doing, as the agent knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: DateTime<Utc>,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    /// The attempt's `<runtime>://<id>`.
    pub container_id: Option<String>,
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    /// The current attempt's `<runtime>://<id>`, new with every attempt, as the kubelet
    /// reports its runtime's container ids.
    pub container_id: Option<String>,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Self {
        Container {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
            container_id: None,
        }
    }

    /// An ephemeral container's status as an earlier agent wrote it. One it reported
    /// running ended with that agent (it is never run again): it is reported terminated,
    /// with the kubelet's reason for a container it can no longer find.
    pub fn from_api(status: &ContainerStatus) -> Self {
        let mut c = Container::new(&status.name, &status.image);
        c.image_id = status.image_id.clone();
        c.container_id = status.container_id.clone();
        c.restart_count = status.restart_count;
        let s = status.state.as_ref();
        if let Some(t) = s.and_then(|s| s.terminated.as_ref()) {
            c.state = State::Terminated(Terminated {
                container_id: t.container_id.clone(),
                exit_code: t.exit_code,
                reason: t.reason.clone().unwrap_or_default(),
                message: t.message.clone(),
                started_at: t.started_at.as_ref().map(from_time),
                finished_at: t.finished_at.as_ref().map_or_else(Utc::now, from_time),
            });
        } else if let Some(r) = s.and_then(|s| s.running.as_ref()) {
            c.state = State::Terminated(Terminated {
                container_id: status.container_id.clone(),
                exit_code: 137,
                reason: "ContainerStatusUnknown".into(),
                message: Some(
                    "The container could not be located when the node agent restarted".into(),
                ),
                started_at: r.started_at.as_ref().map(from_time),
                finished_at: Utc::now(),
            });
        } else if let Some(w) = s.and_then(|s| s.waiting.as_ref()) {
            c.state = State::Waiting {
                reason: w.reason.clone().unwrap_or_default(),
                message: w.message.clone(),
            };
        }
        c
    }

    /// Whether it has run (it is running or has ended): an ephemeral container that has is
    /// never started again.
    pub fn has_run(&self) -> bool {
        !matches!(self.state, State::Waiting { .. })
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            state: Some(state(&self.state)),
            last_state: Some(
                self.last
                    .as_ref()
                    .map(|t| state(&State::Terminated(t.clone())))
                    .unwrap_or_default(),
            ),
            restart_count: self.restart_count,
            ready: self.ready,
            started: Some(self.started),
            ..Default::default()
        }
    }
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: t.container_id.clone(),
                exit_code: t.exit_code,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: t.started_at.map(time),
                finished_at: Some(time(t.finished_at)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// Everything the pod's status is computed from.
pub struct Snapshot<'a> {
    pub restart_policy: &'a str,
    pub host_ip: String,
    pub pod_ip: Option<String>,
    pub start_time: DateTime<Utc>,
    pub sandbox_ready: bool,
    pub init: &'a [Container],
    pub containers: &'a [Container],
    /// Ephemeral containers (`kubectl debug`): shown, never counted in the phase or
    /// readiness, as the kubelet reports them.
    pub ephemeral: &'a [Container],
    /// Set when the pod failed as a whole (e.g. an init container failed for good).
    pub failed: Option<(String, String)>,
}

/// The kubelet's phase rules (`getPhase`).
pub fn phase(s: &Snapshot) -> &'static str {
    if s.failed.is_some() {
        return "Failed";
    }
    let init_pending = s
        .init
        .iter()
        .any(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0));
    if init_pending {
        let failed_for_good = s.restart_policy == "Never"
            && s.init
                .iter()
                .any(|c| matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
        return if failed_for_good { "Failed" } else { "Pending" };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in s.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match s.restart_policy {
            "Always" => "Running",
            _ if succeeded == stopped => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        };
    }
    "Pending"
}

/// The pod's status as the agent reports it (the API server keeps what the agent does not
/// own, like `qosClass`).
pub fn render(s: &Snapshot, previous: Option<&PodStatus>) -> PodStatus {
    let phase = phase(s);
    let init_done = s
        .init
        .iter()
        .all(|c| matches!(&c.state, State::Terminated(t) if t.exit_code == 0));
    let containers_ready = phase != "Failed"
        && phase != "Succeeded"
        && !s.containers.is_empty()
        && s.containers.iter().all(|c| c.ready);
    let bool_str = |b: bool| if b { "True" } else { "False" };
    let now = time(Utc::now());
    let old = |type_: &str| {
        previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
    };
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let status = bool_str(ok).to_string();
        // The transition time moves only when the status does.
        let since = old(type_)
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        PodCondition {
            type_: type_.into(),
            status,
            reason: if ok { None } else { reason.map(str::to_string) },
            last_transition_time: Some(since),
            ..Default::default()
        }
    };
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", s.sandbox_ready, None),
        condition("Initialized", init_done, Some("ContainersNotInitialized")),
        condition("Ready", containers_ready, Some(not_ready_reason)),
        condition("ContainersReady", containers_ready, Some(not_ready_reason)),
        condition("PodScheduled", true, None),
    ];
    let (reason, message) = match &s.failed {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(s.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: s.host_ip.clone(),
        }]),
        pod_ip: s.pod_ip.clone(),
        pod_ips: s.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: Some(time(s.start_time)),
        init_container_statuses: (!s.init.is_empty())
            .then(|| s.init.iter().map(Container::to_api).collect()),
        container_statuses: Some(s.containers.iter().map(Container::to_api).collect()),
        ephemeral_container_statuses: (!s.ephemeral.is_empty())
            .then(|| s.ephemeral.iter().map(Container::to_api).collect()),
        reason,
        message,
        ..Default::default()
    }
}

/// Millicores, rounded up (`100m` → 100, `2` → 2000, `0.5` → 500, `1.5m` → 2), by the one
/// quantity parser.
pub fn cpu_millis(q: &str) -> Option<u64> {
    parse_milli(q).and_then(|m| u64::try_from(m).ok())
}

/// Bytes, rounded up (`32Mi`, `1G`, `129e6`, `128974848`), by the one quantity parser.
pub fn bytes(q: &str) -> Option<u64> {
    parse_value(q).and_then(|v| u64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: State, last: bool) -> Container {
        let mut c = Container::new("c", "img");
        c.state = state;
        if last {
            c.last = Some(term(1));
        }
        c
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            container_id: None,
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: Utc::now(),
        }
    }

    fn snap<'a>(policy: &'a str, init: &'a [Container], cs: &'a [Container]) -> Snapshot<'a> {
        Snapshot {
            restart_policy: policy,
            host_ip: "10.0.0.1".into(),
            pod_ip: None,
            start_time: Utc::now(),
            sandbox_ready: true,
            init,
            containers: cs,
            ephemeral: &[],
            failed: None,
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let running = State::Running {
            started_at: Utc::now(),
        };
        assert_eq!(
            phase(&snap("Always", &[], &[c(waiting.clone(), false)])),
            "Pending"
        );
        assert_eq!(
            phase(&snap("Always", &[], &[c(running.clone(), false)])),
            "Running"
        );
        // Crash looping counts as running, not pending.
        assert_eq!(
            phase(&snap("Always", &[], &[c(waiting.clone(), true)])),
            "Running"
        );
        let done = [c(State::Terminated(term(0)), false)];
        assert_eq!(phase(&snap("Never", &[], &done)), "Succeeded");
        assert_eq!(phase(&snap("OnFailure", &[], &done)), "Succeeded");
        let failed = [c(State::Terminated(term(2)), false)];
        assert_eq!(phase(&snap("Never", &[], &failed)), "Failed");
        assert_eq!(phase(&snap("OnFailure", &[], &failed)), "Running");
        // Init containers gate the rest.
        let init = [c(running, false)];
        assert_eq!(phase(&snap("Never", &init, &done)), "Pending");
        let init_failed = [c(State::Terminated(term(1)), false)];
        assert_eq!(phase(&snap("Never", &init_failed, &done)), "Failed");
    }

    #[test]
    fn ephemeral_containers_are_shown_and_never_counted() {
        let running = State::Running {
            started_at: Utc::now(),
        };
        let app = [c(running.clone(), false)];
        let mut debug = Container::new("debugger", "busybox");
        debug.state = State::Terminated(term(1));
        let ephemeral = [debug];
        let s = Snapshot {
            ephemeral: &ephemeral,
            ..snap("Never", &[], &app)
        };
        let mut app_ready = app.clone();
        app_ready[0].ready = true;
        assert_eq!(phase(&s), "Running");
        let status = render(&s, None);
        let shown = status.ephemeral_container_statuses.expect("shown");
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].name, "debugger");
        assert!(!shown[0].ready);
        let ready = render(
            &Snapshot {
                ephemeral: &ephemeral,
                ..snap("Never", &[], &app_ready)
            },
            None,
        );
        let ready_condition = ready
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready_condition.status, "True");
        // Reported running by an agent that is gone: it ended with it, and stays ended.
        let mut was = Container::new("debugger", "busybox");
        was.state = running;
        let back = Container::from_api(&was.to_api());
        assert!(back.has_run());
        assert!(
            matches!(&back.state, State::Terminated(t) if t.reason == "ContainerStatusUnknown")
        );
        assert!(!Container::from_api(&Container::new("d", "i").to_api()).has_run());
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("100m"), Some(100));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.25"), Some(250));
        assert_eq!(bytes("32Mi"), Some(32 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("junk"), None);
        assert_eq!(cpu_millis("1.5m"), Some(2));
        assert_eq!(bytes("9007199254740993"), Some(9_007_199_254_740_993));
    }
}
