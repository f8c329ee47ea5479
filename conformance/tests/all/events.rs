//! Events expire an `--event-ttl` after their last write, as kube-apiserver's do (it stores
//! them under an etcd lease), on either store: a busy node's events do not pile up.

use skiff_conformance::{Backend, Cluster};

use crate::workloads::eventually;

pub fn events_expire_after_the_event_ttl(backend: Backend) {
    let cluster = Cluster::start_for_agents_with(backend, &["--event-ttl", "3s"]);
    let k = cluster.kubectl("1.33");
    k.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Event\nmetadata: {name: note.1}\ninvolvedObject: {kind: ConfigMap, name: settings, namespace: default}\nreason: Noted\nmessage: something happened\ntype: Normal\n",
    );
    k.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: note.2}\neventTime: \"2099-01-01T00:00:00.000000Z\"\nreportingController: skiff.dev/test\nreportingInstance: test\naction: Note\nregarding: {kind: ConfigMap, name: settings, namespace: default}\nreason: Noted\nnote: written through events.k8s.io\ntype: Normal\n",
    );
    // Expiry counts from the write, not from the times an event carries (a client sets
    // those as it likes: note.2 says it happens in 2099).
    let listed = k.ok(&["get", "events"]);
    assert!(listed.contains("something happened"), "{listed}");
    eventually("both events expired", || {
        let left = k.ok(&["get", "events", "-o", "name"]);
        (!left.contains("note.1") && !left.contains("note.2")).then_some(())
    });
    // The server goes on serving and storing events.
    k.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Event\nmetadata: {name: note.3}\ninvolvedObject: {kind: ConfigMap, name: settings, namespace: default}\nreason: Noted\nmessage: later\ntype: Normal\n",
    );
    assert!(k.ok(&["get", "event", "note.3"]).contains("later"));
}
