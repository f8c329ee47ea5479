//! The shared informer layer under Skiff's controllers, its scheduler and its node agent:
//! one list-and-watch per resource kind with a local cache indexed by namespace, uid and
//! owner (pods also by node and by the namespaces' orphans) ([`Informer`], client-go's `SharedIndexInformer`), the factory that shares them
//! among the clients of one process ([`Informers`]), and the rate-limited work queue the
//! controllers take keys from ([`WorkQueue`]).

pub mod informer;
pub mod queue;

use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::task::AbortHandle;

pub use informer::{AbortOnDrop, Change, Informer, controller_of, key_of, key_of_meta, split_key};
pub use queue::{STATUS_BATCH, WorkQueue};

/// The informers the controllers and the scheduler of one process share: each kind is
/// listed and watched once, the first time one of them asks for it (client-go's
/// `SharedInformerFactory`). Their watches end when the last holder drops the factory.
pub struct Informers {
    client: Client,
    tasks: Mutex<Vec<AbortHandle>>,
    pods: OnceLock<Arc<Informer<Pod>>>,
    replicasets: OnceLock<Arc<Informer<ReplicaSet>>>,
    deployments: OnceLock<Arc<Informer<Deployment>>>,
    replicationcontrollers: OnceLock<Arc<Informer<ReplicationController>>>,
    namespaces: OnceLock<Arc<Informer<Namespace>>>,
    serviceaccounts: OnceLock<Arc<Informer<ServiceAccount>>>,
    jobs: OnceLock<Arc<Informer<Job>>>,
    cronjobs: OnceLock<Arc<Informer<CronJob>>>,
    daemonsets: OnceLock<Arc<Informer<DaemonSet>>>,
    nodes: OnceLock<Arc<Informer<Node>>>,
    controllerrevisions: OnceLock<Arc<Informer<ControllerRevision>>>,
    leases: OnceLock<Arc<Informer<Lease>>>,
    poddisruptionbudgets: OnceLock<Arc<Informer<PodDisruptionBudget>>>,
    statefulsets: OnceLock<Arc<Informer<StatefulSet>>>,
    persistentvolumeclaims: OnceLock<Arc<Informer<PersistentVolumeClaim>>>,
    persistentvolumes: OnceLock<Arc<Informer<PersistentVolume>>>,
    runtimeclasses: OnceLock<Arc<Informer<RuntimeClass>>>,
    services: OnceLock<Arc<Informer<Service>>>,
    endpoints: OnceLock<Arc<Informer<Endpoints>>>,
    endpointslices: OnceLock<Arc<Informer<EndpointSlice>>>,
}

macro_rules! informer_getter {
    ($name:ident, $ty:ty) => {
        informer_getter!($name, $ty, Informer::new());
    };
    ($name:ident, $ty:ty, $make:expr) => {
        pub fn $name(&self) -> Arc<Informer<$ty>> {
            self.$name
                .get_or_init(|| {
                    let informer = $make;
                    let task =
                        informer.start(Api::all(self.client.clone()), watcher::Config::default());
                    self.tasks.lock().expect("tasks lock").push(task);
                    informer
                })
                .clone()
        }
    };
}

impl Informers {
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(Informers {
            client,
            tasks: Mutex::new(Vec::new()),
            pods: OnceLock::new(),
            replicasets: OnceLock::new(),
            deployments: OnceLock::new(),
            replicationcontrollers: OnceLock::new(),
            namespaces: OnceLock::new(),
            serviceaccounts: OnceLock::new(),
            jobs: OnceLock::new(),
            cronjobs: OnceLock::new(),
            daemonsets: OnceLock::new(),
            nodes: OnceLock::new(),
            controllerrevisions: OnceLock::new(),
            leases: OnceLock::new(),
            poddisruptionbudgets: OnceLock::new(),
            statefulsets: OnceLock::new(),
            persistentvolumeclaims: OnceLock::new(),
            persistentvolumes: OnceLock::new(),
            runtimeclasses: OnceLock::new(),
            services: OnceLock::new(),
            endpoints: OnceLock::new(),
            endpointslices: OnceLock::new(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    // Pods, indexed by the node they are bound to ([`Informer::indexed`]), with the
    // namespaces' orphans ([`Informer::orphans`]) for the controllers' claims.
    informer_getter!(pods, Pod, Informer::with_indexes(Some(node_of), true));
    informer_getter!(replicasets, ReplicaSet);
    informer_getter!(deployments, Deployment);
    informer_getter!(replicationcontrollers, ReplicationController);
    informer_getter!(namespaces, Namespace);
    informer_getter!(serviceaccounts, ServiceAccount);
    informer_getter!(jobs, Job);
    informer_getter!(cronjobs, CronJob);
    informer_getter!(daemonsets, DaemonSet);
    informer_getter!(nodes, Node);
    informer_getter!(controllerrevisions, ControllerRevision);
    informer_getter!(leases, Lease);
    informer_getter!(poddisruptionbudgets, PodDisruptionBudget);
    informer_getter!(statefulsets, StatefulSet);
    informer_getter!(persistentvolumeclaims, PersistentVolumeClaim);
    informer_getter!(persistentvolumes, PersistentVolume);
    informer_getter!(runtimeclasses, RuntimeClass);
    informer_getter!(services, Service);
    informer_getter!(endpoints, Endpoints);
    // EndpointSlices, indexed by their Service (`kubernetes.io/service-name`).
    informer_getter!(
        endpointslices,
        EndpointSlice,
        Informer::with_indexes(Some(service_of_slice), false)
    );
}

/// The Service an EndpointSlice belongs to, by name (a lookup filters by namespace).
fn service_of_slice(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")
        .map(String::as_str)
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

impl Drop for Informers {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}
