//! Conformance: a running `skiff up` driven by the real kubectl and the kube client, on the
//! embedded store and on a real etcd. Every scenario runs against both.

mod agents;
mod amplification;
mod client;
mod containers;
mod daemonsets;
mod debug;
mod dns;
mod drain;
mod dry_run;
mod errors;
mod events;
mod ha;
mod images;
mod imperative;
mod jobs;
mod lifecycle;
mod multinode;
mod node;
mod python;
mod replication_controllers;
mod services;
mod statefulsets;
mod walkthrough;
mod watch;
mod workloads;

use skiff_conformance::Backend;

/// Declares one `#[test]` per backend for each scenario `fn(Backend)`.
macro_rules! on_both_backends {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $( #[test] fn $name() { $module::$name(Backend::Embedded) } )*
        }
        mod etcd {
            use super::*;
            $( #[test] fn $name() { $module::$name(Backend::Etcd) } )*
        }
    };
}

on_both_backends!(
    walkthrough::kubectl_1_33_walkthrough,
    walkthrough::kubectl_1_32_walkthrough,
    walkthrough::output_formats_and_describe,
    walkthrough::apply_twice_server_side_and_diff,
    walkthrough::namespace_deletion_removes_contents,
    walkthrough::finalizers_hold_deletion,
    walkthrough::status_patches_change_only_the_status,
    watch::get_watch_streams_changes,
    watch::watch_protocol,
    errors::errors_read_as_kubernetes_prints_them,
    events::events_expire_after_the_event_ttl,
    dry_run::dry_runs_write_nothing,
    amplification::amplifying_requests_are_refused,
    imperative::imperative_creates_in_protobuf,
    client::kube_client_create_list_watch,
    client::durable_across_kill_9,
    python::python_client_everyday_calls,
    replication_controllers::kubectl_replication_controllers,
    workloads::deployments_and_garbage_collection,
    workloads::default_service_accounts,
    services::service_ips_and_node_ports,
);

#[test]
fn explain_reads_the_served_openapi() {
    walkthrough::explain(Backend::Embedded)
}
