//! Jobs through kubectl on a real node, for Wasm and container pods alike: completions and
//! parallelism, retries up to backoffLimit, Indexed Jobs and `JOB_COMPLETION_INDEX`,
//! podFailurePolicy, activeDeadlineSeconds, suspend and resume, ttlSecondsAfterFinished,
//! and deletion. Each runtime's Jobs run side by side on one cluster.

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, Registry};

use crate::containers::push_busybox;
use crate::workloads::eventually;

/// How a pod of one runtime says what the test asks it to.
#[derive(Clone, Copy)]
enum Runtime {
    Wasm,
    Container,
}

impl Runtime {
    /// The container's command and the pod's runtime class, as YAML lines of the pod spec.
    fn pod_spec(self, image: &str, action: &Action) -> String {
        let (class, run) = match self {
            Runtime::Wasm => {
                let args: Vec<String> = match action {
                    Action::Echo(text) => vec!["echo".into(), text.to_string()],
                    Action::Exit(code) => vec!["exit".into(), code.to_string()],
                    Action::Sleep(secs) => vec!["sleep".into(), secs.to_string()],
                    Action::PrintEnv => vec!["print-env".into()],
                };
                let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
                (
                    "      runtimeClassName: wasmtime\n",
                    format!("        args: [{}]\n", args.join(", ")),
                )
            }
            Runtime::Container => {
                let script = match action {
                    Action::Echo(text) => format!("echo {text}"),
                    Action::Exit(code) => format!("exit {code}"),
                    Action::Sleep(secs) => format!("sleep {secs}"),
                    Action::PrintEnv => "env".into(),
                };
                (
                    "",
                    format!("        command: [\"sh\", \"-c\", {script:?}]\n"),
                )
            }
        };
        format!(
            "{class}      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n{run}"
        )
    }
}

impl Runtime {
    /// An exit code a failing pod can report: a Wasm component's exit is a result
    /// (wasi:cli/exit), so a failure is always 1; a container's is its own.
    fn failure_code(self) -> i32 {
        match self {
            Runtime::Wasm => 1,
            Runtime::Container => 42,
        }
    }
}

enum Action {
    Echo(&'static str),
    Exit(i32),
    Sleep(u32),
    PrintEnv,
}

fn job(name: &str, spec: &str, pod_spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n{pod_spec}"
    )
}

/// `yaml` with every line moved `n` spaces right.
fn indent(yaml: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    yaml.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// A Job's pods as YAML: what a wrong count is shown with.
fn pods_yaml(k: &Kubectl, job: &str) -> String {
    k.run(&[
        "get",
        "pods",
        "-l",
        &format!("job-name={job}"),
        "-o",
        "yaml",
    ])
    .stdout
}

fn status(k: &Kubectl, name: &str) -> Value {
    k.json(&["get", "job", name])["status"].clone()
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

fn pods_of(k: &Kubectl, job: &str) -> Vec<Value> {
    k.json(&["get", "pods", "-l", &format!("job-name={job}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `kubectl wait --for=condition=<condition>` on `jobs`; on a timeout, fails with what the
/// Jobs and their pods say.
fn wait(k: &Kubectl, condition: &str, jobs: &[&str]) {
    let mut args = vec!["wait".to_string(), format!("--for=condition={condition}")];
    args.extend(jobs.iter().map(|j| format!("job/{j}")));
    args.push("--timeout=120s".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = k.run(&args);
    if r.code != 0 {
        let jobs = k.run(&["get", "jobs", "-o", "yaml"]).stdout;
        let pods = k.run(&["get", "pods", "-o", "yaml"]).stdout;
        panic!(
            "kubectl {args:?}: {}{}\njobs:\n{jobs}\npods:\n{pods}",
            r.stdout, r.stderr
        );
    }
}

fn jobs_on_a_node(runtime: Runtime, image: &str, cluster: &Cluster) {
    let k = cluster.kubectl("1.33");
    let apply = |name: &str, spec: &str, action: Action| {
        k.ok_stdin(
            &["apply", "-f", "-"],
            &job(name, spec, &runtime.pod_spec(image, &action)),
        );
    };
    // All at once: the node runs them side by side.
    apply(
        "done",
        "  completions: 2\n  parallelism: 2\n",
        Action::Echo("finished"),
    );
    apply("fails", "  backoffLimit: 1\n", Action::Exit(3));
    apply(
        "indexed",
        "  completions: 3\n  parallelism: 2\n  completionMode: Indexed\n",
        Action::PrintEnv,
    );
    let code = runtime.failure_code();
    apply(
        "policy",
        &format!(
            "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {{operator: In, values: [{code}]}}\n"
        ),
        Action::Exit(code),
    );
    apply(
        "deadline",
        "  activeDeadlineSeconds: 3\n",
        Action::Sleep(60),
    );
    apply("later", "  suspend: true\n", Action::Echo("resumed"));
    apply(
        "brief",
        "  ttlSecondsAfterFinished: 0\n",
        Action::Echo("brief"),
    );
    // A CronJob firing every minute, in a time zone half an hour off UTC; suspended
    // until its manual run is done.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: report\nspec:\n  schedule: \"* * * * *\"\n  timeZone: Asia/Kolkata\n  suspend: true\n  successfulJobsHistoryLimit: 1\n  jobTemplate:\n    spec:\n      template:\n        spec:\n{}",
            indent(&runtime.pod_spec(image, &Action::Echo("report")), 4)
        ),
    );
    k.ok(&["create", "job", "once", "--from=cronjob/report"]);

    // Completions and parallelism: two pods, both succeeded, counted once each, their
    // tracking finalizers gone.
    wait(&k, "complete", &["done", "indexed"]);
    let s = status(&k, "done");
    assert_eq!(s["succeeded"], 2, "{s}\n{}", pods_yaml(&k, "done"));
    assert!(s["completionTime"].is_string(), "{s}");
    assert!(s.get("active").is_none(), "{s}");
    let pods = pods_of(&k, "done");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Succeeded");
        assert!(p["metadata"]["finalizers"].is_null(), "{p}");
    }
    let logs = k.ok(&["logs", "job/done"]);
    assert!(logs.contains("finished"), "{logs}");
    let describe = k.ok(&["describe", "job", "done"]);
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
    assert!(describe.contains("Completed"), "{describe}");

    // Indexed: each index once, each pod told its own.
    let s = status(&k, "indexed");
    assert_eq!(s["completedIndexes"], "0-2", "{s}");
    let pods = pods_of(&k, "indexed");
    let mut seen: Vec<String> = Vec::new();
    for p in &pods {
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("indexed-{index}-")), "{name}");
        assert_eq!(p["spec"]["hostname"], format!("indexed-{index}"));
        let logs = k.ok(&["logs", name]);
        assert!(
            logs.lines()
                .any(|l| l == format!("JOB_COMPLETION_INDEX={index}")),
            "{name}: {logs}"
        );
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"], "{}", pods_yaml(&k, "indexed"));

    // Retried up to backoffLimit (one retry, after kube's 10 s back-off), then failed.
    wait(&k, "failed", &["fails", "policy", "deadline"]);
    let s = status(&k, "fails");
    assert_eq!(s["failed"], 2, "{s}\n{}", pods_yaml(&k, "fails"));
    assert_eq!(
        condition(&s, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(pods_of(&k, "fails").len(), 2);

    // A FailJob rule fails the Job at the first matching exit, whatever the backoffLimit.
    let s = status(&k, "policy");
    assert_eq!(s["failed"], 1, "{s}\n{}", pods_yaml(&k, "policy"));
    let failed = condition(&s, "Failed").unwrap();
    assert_eq!(failed["reason"], "PodFailurePolicy", "{s}");
    assert!(
        failed["message"].as_str().unwrap().contains(&format!(
            "failed with exit code {code} matching FailJob rule at index 0"
        )),
        "{s}"
    );

    // Past its deadline: failed, its pod stopped.
    let s = status(&k, "deadline");
    assert_eq!(
        condition(&s, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    eventually("the deadline Job's pod stopped", || {
        pods_of(&k, "deadline")
            .iter()
            .all(|p| {
                p["status"]["phase"] != "Running" || p["metadata"]["deletionTimestamp"].is_string()
            })
            .then_some(())
    });

    // Suspended: no pods until resumed, then it runs to completion.
    let s = status(&k, "later");
    assert!(condition(&s, "Suspended").is_some(), "{s}");
    assert!(pods_of(&k, "later").is_empty());
    k.ok(&[
        "patch",
        "job",
        "later",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    wait(&k, "complete", &["later"]);
    let s = status(&k, "later");
    assert_eq!(s["succeeded"], 1, "{s}");

    // ttlSecondsAfterFinished: 0 deletes the Job, and its pods with it, once finished.
    eventually("the brief Job deleted after it finished", || {
        (k.run(&["get", "job", "brief"]).code != 0 && pods_of(&k, "brief").is_empty()).then_some(())
    });

    // The CronJob's manual run, then its first scheduled one, named by its minute, the
    // time noted in the CronJob's zone; history keeps one successful Job.
    wait(&k, "complete", &["once"]);
    let logs = k.ok(&["logs", "job/once"]);
    assert!(logs.contains("report"), "{logs}");
    k.ok(&[
        "patch",
        "cronjob",
        "report",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    let report_uid = k.json(&["get", "cronjob", "report"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let owned_by_report = |j: &Value| {
        j["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["uid"] == report_uid.as_str()))
    };
    let start = Instant::now();
    let scheduled = loop {
        let jobs = k.json(&["get", "jobs"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let found = jobs.into_iter().find(|j| {
            owned_by_report(j) && j["metadata"]["name"] != "once" && j["status"]["succeeded"] == 1
        });
        if let Some(j) = found {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "the CronJob never ran"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let name = scheduled["metadata"]["name"].as_str().unwrap();
    let minute: i64 = name.strip_prefix("report-").unwrap().parse().unwrap();
    let at =
        scheduled["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .unwrap();
    assert!(at.ends_with(":00+05:30"), "{at}");
    let cj = k.json(&["get", "cronjob", "report"]);
    let last = cj["status"]["lastScheduleTime"].as_str().unwrap();
    assert!(last.ends_with(":00Z"), "{cj}");
    assert!(minute * 60 > 1_700_000_000, "{name}");
    eventually("the CronJob's last success noted", || {
        k.json(&["get", "cronjob", "report"])["status"]["lastSuccessfulTime"]
            .is_string()
            .then_some(())
    });
    let describe = k.ok(&["describe", "cronjob", "report"]);
    assert!(
        describe.contains(&format!("Created job {name}")),
        "{describe}"
    );
    k.ok(&[
        "patch",
        "cronjob",
        "report",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    eventually("one successful Job kept", || {
        let jobs = k.json(&["get", "jobs"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let kept: Vec<&Value> = jobs
            .iter()
            .filter(|j| owned_by_report(j) && j["status"]["succeeded"] == 1)
            .collect();
        (kept.len() == 1).then_some(())
    });
    k.ok(&["delete", "cronjob", "report"]);
    k.ok(&["delete", "job", "once", "--ignore-not-found"]);

    // Deleting a Job deletes its pods.
    k.ok(&["delete", "job", "done", "fails"]);
    eventually("the deleted Jobs' pods gone", || {
        (pods_of(&k, "done").is_empty() && pods_of(&k, "fails").is_empty()).then_some(())
    });
    for name in ["indexed", "policy", "deadline", "later"] {
        k.ok(&["delete", "job", name]);
    }
    eventually("every Job pod gone", || {
        k.json(&["get", "pods"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
}

#[test]
fn wasm_jobs() {
    let registry = Registry::start();
    let image = registry.push_example("testbed.wasm", "testbed");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    // The example Job, as its comment says to run it.
    let manifest = crate::node::example("job.yaml", &registry);
    k.ok_stdin(&["apply", "-f", "-"], &manifest);
    wait(&k, "complete", &["pi"]);
    let logs = k.ok(&["logs", "job/pi"]);
    assert!(logs.starts_with("3.14159265358979323846"), "{logs}");
    assert_eq!(logs.trim().len(), 2002, "{logs}");
    let out = k.ok(&["get", "jobs"]);
    assert!(out.contains("Complete") && out.contains("1/1"), "{out}");
    k.ok(&["delete", "job", "pi"]);
    // The example CronJob, and a run of it now.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &crate::node::example("cronjob.yaml", &registry),
    );
    k.ok(&["create", "job", "now", "--from=cronjob/report"]);
    wait(&k, "complete", &["now"]);
    let logs = k.ok(&["logs", "job/now"]);
    assert!(logs.contains("report written"), "{logs}");
    k.ok(&["delete", "cronjob", "report"]);
    eventually("the example CronJob's Job deleted with it", || {
        (k.run(&["get", "job", "now"]).code != 0).then_some(())
    });

    // A Job Kubernetes refuses.
    let err = k
        .run_stdin(
            &["apply", "-f", "-"],
            &job(
                "negative",
                "  completions: -1\n",
                &Runtime::Wasm.pod_spec(&image, &Action::Echo("x")),
            ),
        )
        .stderr;
    assert!(
        err.contains("spec.completions: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );

    let err = k
        .run_stdin(
            &["apply", "-f", "-"],
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: mars}\nspec:\n  schedule: '@hourly'\n  timeZone: Mars/Olympus\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: m, image: x}]}}}}\n",
        )
        .stderr;
    assert!(
        err.contains(
            r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#
        ),
        "{err}"
    );

    jobs_on_a_node(Runtime::Wasm, &image, &cluster);
}

#[test]
fn container_jobs() {
    let registry = Registry::start();
    let image = push_busybox(&registry, "busybox", &[]);
    let cluster = Cluster::start_with_node(Backend::Embedded);
    jobs_on_a_node(Runtime::Container, &image, &cluster);
}
