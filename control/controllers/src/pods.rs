//! Creating and deleting a controller's pods (kube's `PodControl`): slow-start creations,
//! deletions guarded by uid, each one noted in the controller's expectations and reported
//! as the event Kubernetes writes for it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};

use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informer::key_of;
use crate::util;

pub struct PodControl<'a> {
    pub api: &'a Api<Pod>,
    pub expectations: &'a Expectations,
    pub events: &'a Recorder,
    /// The owner, as its events name it.
    pub owner: ObjectReference,
}

impl PodControl<'_> {
    /// Creates `pods` (slow start) for the owner under `key`. A namespace being deleted
    /// refuses them quietly; any other refusal is a `FailedCreate` event and the error.
    pub async fn create(&self, key: &str, pods: &[Pod]) -> Result<(), kube::Error> {
        let n = pods.len();
        if n == 0 {
            return Ok(());
        }
        self.expectations.expect_creations(key, n);
        let post = PostParams::default();
        let (tried, results) = util::slow_start(n, |i| self.api.create(&post, &pods[i])).await;
        // The creations not tried will never be seen.
        for _ in tried..n {
            self.expectations.creation_observed(key);
        }
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => self.events.normal(
                    self.owner.clone(),
                    "SuccessfulCreate",
                    "Create",
                    format!("Created pod: {}", p.name_any()),
                ),
                Err(e) => {
                    self.expectations.creation_observed(key);
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) if namespace_terminating(&e) => Ok(()),
            Some(e) => {
                self.events.warning(
                    self.owner.clone(),
                    "FailedCreate",
                    "Create",
                    format!("Error creating: {e}"),
                );
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Deletes `pods`, each only if it is still the pod of that uid.
    pub async fn delete(&self, key: &str, pods: &[&Arc<Pod>]) -> Result<(), kube::Error> {
        if pods.is_empty() {
            return Ok(());
        }
        self.expectations
            .expect_deletions(key, pods.iter().map(|p| key_of(&***p)));
        let results = futures::future::join_all(pods.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            async move {
                (
                    key_of(&***p),
                    p.name_any(),
                    self.api.delete(&p.name_any(), &dp).await,
                )
            }
        }))
        .await;
        let mut failure = None;
        for (pod_key, name, r) in results {
            match r {
                Ok(_) => self.events.normal(
                    self.owner.clone(),
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {name}"),
                ),
                // Gone already, or another pod under its name now.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    self.expectations.deletion_observed(key, &pod_key);
                }
                Err(e) => {
                    self.expectations.deletion_observed(key, &pod_key);
                    self.events.warning(
                        self.owner.clone(),
                        "FailedDelete",
                        "Delete",
                        format!("Error deleting: {e}"),
                    );
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}
