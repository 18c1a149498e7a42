//! Stopping a run's container, and letting go of what a stop kept.
//!
//! Kubernetes signals a container only when its pod is deleted, and a deleted pod vanishes
//! with its container's exit code and its log. So a stop first puts a finalizer on the pod,
//! which keeps it (terminated, with its status and, until the kubelet's container garbage
//! collection, its log) until `cleanup` takes the finalizer off again. The Job is left alone:
//! its controller marks it failed, or complete when the container exits 0 on SIGTERM, and
//! the run's state says how it ended. A Job whose pod is not there yet is deleted instead, so
//! that none starts.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{errors, manifest, status, Kube};
use crate::{BackendError, RunHandle, TaskState};

/// Deletes the run's pod with `grace` (the kubelet sends SIGTERM, and SIGKILL once `grace`
/// is over) after putting the keep finalizer on it; returns once the run's state is final.
pub(crate) async fn stop(
    kube: &Kube,
    handle: &RunHandle,
    grace: Duration,
) -> Result<(), BackendError> {
    let secs = u32::try_from(grace.as_secs()).unwrap_or(u32::MAX);
    let mut asked = false;
    loop {
        match step(kube, handle, secs, &mut asked).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(BackendError::Unavailable(e)) => {
                tracing::warn!(error = %e, "kubernetes unreachable while stopping; retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(kube.poll).await;
    }
}

/// One look at the run while stopping it, asking for the stop once; `true` once it has
/// stopped (or is gone).
async fn step(
    kube: &Kube,
    handle: &RunHandle,
    secs: u32,
    asked: &mut bool,
) -> Result<bool, BackendError> {
    let job = (kube.jobs.get_opt(&handle.backend_ref).await).map_err(errors::from_kube)?;
    let Some(job) = job.filter(|j| j.metadata.deletion_timestamp.is_none()) else {
        return Ok(true);
    };
    let pod = (status::pod_of(&kube.pods, &handle.backend_ref).await).map_err(errors::from_kube)?;
    let now = Utc::now();
    if let TaskState::Exited(_) =
        status::derive(&job, pod.as_ref(), kube.config.pending_timeout, now)
    {
        return Ok(true);
    }
    if *asked {
        return Ok(false);
    }
    let Some(pod) = pod else {
        status::delete_job(kube, handle, DeleteParams::foreground()).await?;
        return Ok(true);
    };
    if !status::terminated(&pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        keep(kube, &name).await?;
        match kube
            .pods
            .delete(&name, &DeleteParams::default().grace_period(secs))
            .await
        {
            Ok(_) => {}
            Err(e) if errors::code(&e) == Some(404) => {}
            Err(e) => return Err(errors::from_kube(e)),
        }
    }
    // Ended, or asked to end: the Job's own condition follows.
    *asked = true;
    Ok(false)
}

/// Puts the keep finalizer on the pod. A pod already being deleted takes no new finalizer
/// (422): it is stopping anyway, and goes when it has.
async fn keep(kube: &Kube, pod: &str) -> Result<(), BackendError> {
    let patch = json!({"metadata": {"finalizers": [manifest::KEEP_FINALIZER]}});
    match kube
        .pods
        .patch(pod, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if matches!(errors::code(&e), Some(404 | 422)) => {
            tracing::debug!(pod, error = %e, "pod not kept; it is going already");
            Ok(())
        }
        Err(e) => Err(errors::from_kube(e)),
    }
}

/// Whether a stop keeps the pod.
pub(crate) fn kept(pod: &Pod) -> bool {
    (pod.metadata.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == manifest::KEEP_FINALIZER))
}

/// Takes the keep finalizer off the run's pods, found by the Job controller's label so
/// that a pod outliving its Job is found too.
pub(crate) async fn release(kube: &Kube, handle: &RunHandle) -> Result<(), BackendError> {
    let lp = ListParams::default().labels(&format!(
        "{}={}",
        manifest::JOB_NAME_LABEL,
        handle.backend_ref
    ));
    let pods = kube.pods.list(&lp).await.map_err(errors::from_kube)?;
    let patch =
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [manifest::KEEP_FINALIZER]}});
    for pod in pods.items.iter().filter(|p| kept(p)) {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match kube
            .pods
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if errors::code(&e) == Some(404) => {}
            Err(e) => return Err(errors::from_kube(e)),
        }
    }
    Ok(())
}
