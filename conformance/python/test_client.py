"""The official Python client (PyPI `kubernetes`) against a running Skiff, every call written
as the client's documentation writes it: models without apiVersion or kind, dict bodies for
patches, `watch.Watch().stream`, `ApiException` for errors.

Run by `conformance/tests/all/python.rs` with the venv `.ci/deps` makes; `KUBECONFIG` names
the cluster. Each scenario runs even when one before it failed, and the script exits 1
naming every scenario that failed. The client validates the objects it gets back (a
required field missing from a reply raises), so every reply is checked that way too.
"""

import json
import sys
import time
import traceback

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "python"

config.load_kube_config()
core = client.CoreV1Api()
apps = client.AppsV1Api()


def meta(name, labels=None):
    return client.V1ObjectMeta(name=name, labels=labels)


def pod_template(labels, image="registry.local/web:1", names=("web",)):
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name=n,
                    image=image,
                    ports=[client.V1ContainerPort(container_port=8080)],
                )
                for n in names
            ]
        ),
    )


def api_error(call, *args, **kwargs):
    """The ApiException `call` raises, with its Status body parsed."""
    try:
        call(*args, **kwargs)
    except ApiException as e:
        return e, json.loads(e.body)
    raise AssertionError(f"{call.__name__} succeeded; an ApiException was expected")


def gone(read, *args):
    """Waits until `read(*args)` answers 404."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            read(*args)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(0.1)
    raise AssertionError(f"{read.__name__}{args} still there after 20 s")


def create_namespace():
    # The call the client's README shows: no apiVersion, no kind.
    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    assert ns.api_version == "v1" and ns.kind == "Namespace", (ns.api_version, ns.kind)
    assert ns.metadata.name == NS and ns.metadata.uid
    assert ns.status.phase == "Active", ns.status
    names = [n.metadata.name for n in core.list_namespace().items]
    assert NS in names, names


def configmaps_list_with_selectors_and_paging():
    for i in range(7):
        core.create_namespaced_config_map(
            NS,
            client.V1ConfigMap(
                metadata=meta(f"c{i}", {"team": "a" if i % 2 == 0 else "b"}),
                data={"n": str(i)},
            ),
        )
    got = core.read_namespaced_config_map("c3", NS)
    assert (got.api_version, got.kind, got.data) == ("v1", "ConfigMap", {"n": "3"}), got
    team_a = core.list_namespaced_config_map(NS, label_selector="team=a")
    assert [c.metadata.name for c in team_a.items] == ["c0", "c2", "c4", "c6"]
    assert team_a.metadata.resource_version
    not_a = core.list_namespaced_config_map(NS, label_selector="team notin (a)")
    assert [c.metadata.name for c in not_a.items] == ["c1", "c3", "c5"]
    by_name = core.list_namespaced_config_map(NS, field_selector="metadata.name=c5")
    assert [c.metadata.name for c in by_name.items] == ["c5"]
    everywhere = core.list_config_map_for_all_namespaces(label_selector="team=b")
    assert {(c.metadata.namespace, c.metadata.name) for c in everywhere.items} == {
        (NS, "c1"),
        (NS, "c3"),
        (NS, "c5"),
    }
    names, pages, token = [], 0, None
    while True:
        page = core.list_namespaced_config_map(NS, limit=3, _continue=token)
        pages += 1
        assert len(page.items) <= 3, len(page.items)
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3 and names == [f"c{i}" for i in range(7)], (pages, names)


def watch_from_a_resource_version():
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("c7", {"team": "a"})))
    core.patch_namespaced_config_map("c0", NS, {"data": {"watched": "yes"}})
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("c8", {"team": "b"})))
    core.delete_namespaced_config_map("c2", NS)
    w = watch.Watch()
    seen = []
    for event in w.stream(
        core.list_namespaced_config_map,
        NS,
        label_selector="team=a",
        resource_version=rv,
        timeout_seconds=10,
    ):
        assert isinstance(event["object"], client.V1ConfigMap), type(event["object"])
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "c7"), ("MODIFIED", "c0"), ("DELETED", "c2")], seen
    # Without a resourceVersion: the current objects as ADDED, then the stream ends when
    # timeoutSeconds have passed.
    start = time.monotonic()
    events = list(
        watch.Watch().stream(core.list_namespaced_config_map, NS, label_selector="team=b", timeout_seconds=1)
    )
    elapsed = time.monotonic() - start
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "c1"),
        ("ADDED", "c3"),
        ("ADDED", "c5"),
        ("ADDED", "c8"),
    ], events
    assert 0.9 <= elapsed < 10, elapsed


def patches_of_three_kinds():
    apps.create_namespaced_deployment(
        NS,
        client.V1Deployment(
            metadata=meta("web"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels={"app": "web"}),
                template=pod_template({"app": "web"}, names=("web", "sidecar")),
            ),
        ),
    )
    # A dict body is a strategic merge patch: containers merge by name.
    d = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "registry.local/web:2"}]}}}},
    )
    containers = {c.name: c.image for c in d.spec.template.spec.containers}
    assert containers == {"web": "registry.local/web:2", "sidecar": "registry.local/web:1"}, containers
    assert d.spec.template.spec.containers[0].ports[0].container_port == 8080
    # A merge patch replaces lists whole.
    d = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "registry.local/web:3"}]}}}},
        _content_type="application/merge-patch+json",
    )
    assert [c.name for c in d.spec.template.spec.containers] == ["web"]
    assert d.spec.replicas == 3
    # A list body is a JSON patch.
    d = apps.patch_namespaced_deployment(
        "web",
        NS,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 4},
            {"op": "add", "path": "/metadata/labels", "value": {"tier": "front"}},
        ],
    )
    assert d.spec.replicas == 4 and d.metadata.labels == {"tier": "front"}
    assert d.metadata.generation == 4, d.metadata.generation
    # A merge patch that removes a key with None.
    cm = core.patch_namespaced_config_map(
        "c1", NS, {"data": {"n": None, "m": "1"}}, _content_type="application/merge-patch+json"
    )
    assert cm.data == {"m": "1"}, cm.data
    # Scale through the subresource, as `kubectl scale` does.
    scale = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2 and scale.status.selector == "app=web", scale


def replace_with_and_without_type():
    cm = core.read_namespaced_config_map("c3", NS)
    cm.data["replaced"] = "yes"
    replaced = core.replace_namespaced_config_map("c3", NS, cm)
    assert replaced.data == {"n": "3", "replaced": "yes"}, replaced.data
    # A body built from scratch, as the documentation builds one: no apiVersion or kind.
    fresh = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="c3", resource_version=replaced.metadata.resource_version),
        data={"only": "this"},
    )
    replaced = core.replace_namespaced_config_map("c3", NS, fresh)
    assert (replaced.kind, replaced.data) == ("ConfigMap", {"only": "this"}), replaced
    # The resourceVersion read before the last replace is stale now.
    e, status = api_error(core.replace_namespaced_config_map, "c3", NS, cm)
    assert e.status == 409 and status["reason"] == "Conflict", (e.status, status)


def delete_with_propagation():
    status = apps.delete_namespaced_deployment(
        "web", NS, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    assert status is not None
    gone(apps.read_namespaced_deployment, "web", NS)
    core.delete_namespaced_config_map("c4", NS, propagation_policy="Background", grace_period_seconds=0)
    gone(core.read_namespaced_config_map, "c4", NS)
    e, status = api_error(
        core.delete_namespaced_config_map,
        "c5",
        NS,
        body=client.V1DeleteOptions(propagation_policy="Sideways"),
    )
    assert e.status == 422 and status["reason"] == "Invalid", (e.status, status)
    # c3 lost its labels to the replace above.
    core.delete_collection_namespaced_config_map(NS, label_selector="team=b")
    left = [c.metadata.name for c in core.list_namespaced_config_map(NS).items]
    assert left == ["c0", "c3", "c6", "c7"], left


def errors_as_api_exceptions():
    e, status = api_error(core.read_namespaced_config_map, "missing", NS)
    assert e.status == 404 and e.reason == "Not Found", (e.status, e.reason)
    assert status["kind"] == "Status" and status["reason"] == "NotFound", status
    assert status["details"] == {"name": "missing", "kind": "configmaps"}, status
    assert status["message"] == 'configmaps "missing" not found', status
    e, status = api_error(
        core.create_namespaced_config_map, NS, client.V1ConfigMap(metadata=meta("c0"))
    )
    assert e.status == 409 and status["reason"] == "AlreadyExists", (e.status, status)
    e, status = api_error(
        core.create_namespaced_config_map, NS, client.V1ConfigMap(metadata=meta("Not_A_Name"))
    )
    assert e.status == 422 and status["reason"] == "Invalid", (e.status, status)
    assert [c["field"] for c in status["details"]["causes"]] == ["metadata.name"], status
    # The client sends the kind the caller set: one that contradicts the URL is refused.
    e, status = api_error(
        core.create_namespaced_config_map,
        NS,
        client.V1ConfigMap(api_version="v1", kind="Secret", metadata=meta("typed")),
    )
    assert e.status == 400 and status["reason"] == "BadRequest", (e.status, status)
    assert status["message"] == (
        'Secret in version "v1" cannot be handled as a ConfigMap: '
        "converting (v1.Secret) to (core.ConfigMap): unknown conversion"
    ), status
    e, status = api_error(core.read_namespace, "no-such-namespace")
    assert e.status == 404, e.status


def replication_controllers():
    rc = core.create_namespaced_replication_controller(
        NS,
        client.V1ReplicationController(
            metadata=meta("frontend"),
            spec=client.V1ReplicationControllerSpec(replicas=2, template=pod_template({"app": "frontend"})),
        ),
    )
    assert (rc.api_version, rc.kind) == ("v1", "ReplicationController")
    # Selector and labels default to the template's labels.
    assert rc.spec.selector == {"app": "frontend"}, rc.spec.selector
    assert rc.metadata.labels == {"app": "frontend"}, rc.metadata.labels
    assert rc.spec.template.spec.restart_policy == "Always"
    listed = core.list_namespaced_replication_controller(NS, label_selector="app=frontend")
    assert [r.metadata.name for r in listed.items] == ["frontend"]
    scale = core.read_namespaced_replication_controller_scale("frontend", NS)
    assert (scale.kind, scale.spec.replicas, scale.status.selector) == ("Scale", 2, "app=frontend"), scale
    scale = core.patch_namespaced_replication_controller_scale("frontend", NS, {"spec": {"replicas": 5}})
    assert scale.spec.replicas == 5, scale
    # A read-modify-write of the scale, retried on a conflict as clients do: the RC's
    # controller writes its status meanwhile, which moves the resourceVersion.
    for attempt in range(20):
        scale = core.read_namespaced_replication_controller_scale("frontend", NS)
        scale.spec.replicas = 1
        try:
            scale = core.replace_namespaced_replication_controller_scale("frontend", NS, scale)
            break
        except ApiException as e:
            assert e.status == 409 and attempt < 19, e
    assert scale.spec.replicas == 1, scale
    assert core.read_namespaced_replication_controller("frontend", NS).spec.replicas == 1
    # The controller keeps one pod (no node here: it stays Pending) and says so.
    deadline = time.time() + 30
    while True:
        status = core.read_namespaced_replication_controller_status("frontend", NS)
        if status.status.replicas == 1 and status.status.observed_generation == status.metadata.generation:
            break
        assert time.time() < deadline, status.status
        time.sleep(0.1)
    pods = core.list_namespaced_pod(NS, label_selector="app=frontend").items
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    assert len(live) == 1, [p.metadata.name for p in pods]
    assert live[0].metadata.owner_references[0].kind == "ReplicationController"
    # The template's labels must match the selector.
    e, body = api_error(
        core.create_namespaced_replication_controller,
        NS,
        client.V1ReplicationController(
            metadata=meta("mismatched"),
            spec=client.V1ReplicationControllerSpec(
                selector={"app": "other"}, template=pod_template({"app": "frontend"})
            ),
        ),
    )
    assert e.status == 422, (e.status, body)
    assert [c["field"] for c in body["details"]["causes"]] == ["spec.template.metadata.labels"], body
    core.delete_namespaced_replication_controller("frontend", NS)
    gone(core.read_namespaced_replication_controller, "frontend", NS)


def daemon_set_create():
    # DaemonSetStatus's counts are required: the client raises on a reply without them.
    ds = apps.create_namespaced_daemon_set(
        NS,
        client.V1DaemonSet(
            metadata=meta("agent"),
            spec=client.V1DaemonSetSpec(
                selector=client.V1LabelSelector(match_labels={"app": "agent"}),
                template=pod_template({"app": "agent"}),
            ),
        ),
    )
    assert ds.status.desired_number_scheduled == 0, ds.status
    assert ds.spec.update_strategy.type == "RollingUpdate"


SCENARIOS = [
    create_namespace,
    configmaps_list_with_selectors_and_paging,
    watch_from_a_resource_version,
    patches_of_three_kinds,
    replace_with_and_without_type,
    delete_with_propagation,
    errors_as_api_exceptions,
    replication_controllers,
    daemon_set_create,
]


def main():
    failed = []
    for scenario in SCENARIOS:
        start = time.monotonic()
        try:
            scenario()
        except Exception:  # noqa: BLE001 - every failure is reported, then the next runs
            failed.append(scenario.__name__)
            print(f"FAIL {scenario.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
            continue
        print(f"ok   {scenario.__name__} ({time.monotonic() - start:.2f} s)", flush=True)
    if failed:
        print(f"python client: {len(failed)} of {len(SCENARIOS)} scenarios failed: {', '.join(failed)}")
        sys.exit(1)
    print(f"python client: all {len(SCENARIOS)} scenarios passed")


if __name__ == "__main__":
    main()
