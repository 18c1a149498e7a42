//! Launching an attempt exactly once, and finding and removing what launches left.
//!
//! A 409 on create means the attempt was launched before: the existing Job is adopted when
//! its run-id label matches. The Secrets are created after the Job (they need its uid for
//! the ownerReference); a 409 there means an earlier launch already made them.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::{errors, manifest, status, stop, Kube};
use crate::{labels, BackendError, InFlight, LaunchSpec, RunHandle};

/// Creates (or adopts) the Job, then its Secrets.
pub(crate) async fn launch(kube: &Kube, spec: &LaunchSpec) -> Result<RunHandle, BackendError> {
    let name = manifest::job_name(&spec.run_id, spec.attempt)?;
    let manifest = manifest::job(spec, &name, &kube.config)?;
    let job = match kube.jobs.create(&PostParams::default(), &manifest).await {
        Ok(job) => job,
        Err(e) if errors::code(&e) == Some(409) => adopt(kube, spec, &name).await?,
        Err(e) => return Err(errors::from_kube(e)),
    };
    for secret in manifest::secrets(spec, &job)? {
        match kube.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            Err(e) if errors::code(&e) == Some(409) => {}
            Err(e) => return Err(errors::from_kube(e)),
        }
    }
    Ok(RunHandle {
        run_id: spec.run_id.clone(),
        attempt: spec.attempt,
        backend_ref: name,
    })
}

/// The existing Job of this attempt, if it really is ours.
async fn adopt(kube: &Kube, spec: &LaunchSpec, name: &str) -> Result<Job, BackendError> {
    let job = kube.jobs.get(name).await.map_err(errors::from_kube)?;
    let labels = job.metadata.labels.clone().unwrap_or_default();
    if labels.get(labels::RUN_ID) == Some(&spec.run_id) {
        tracing::info!(job = name, "job already exists; adopting it");
        Ok(job)
    } else {
        Err(BackendError::Api {
            status: Some(409),
            message: format!("job {name} exists and belongs to another run"),
            source: None,
        })
    }
}

/// Lets go of the pod a stop kept, then deletes the Job with foreground propagation (its pod
/// and Secrets go with it). In that order, so that a Job never waits, deleted and unlisted,
/// on a pod nobody will release.
pub(crate) async fn cleanup(kube: &Kube, handle: &RunHandle) -> Result<(), BackendError> {
    stop::release(kube, handle).await?;
    status::delete_job(kube, handle, DeleteParams::foreground()).await
}

/// The Jobs carrying this installation's label, except those being deleted; and the pods a
/// stop kept whose Job is gone or going (the TTL controller deleted it before any cleanup),
/// so that a sweep finds them and lets them go.
pub(crate) async fn list_in_flight(
    kube: &Kube,
    installation_id: &str,
) -> Result<Vec<InFlight>, BackendError> {
    let lp = ListParams::default().labels(&format!("{}={installation_id}", labels::INSTALLATION));
    let jobs = kube.jobs.list(&lp).await.map_err(errors::from_kube)?;
    let mut found: Vec<InFlight> = jobs
        .items
        .into_iter()
        .filter(|job| job.metadata.deletion_timestamp.is_none())
        .filter_map(|job| {
            let name = job.metadata.name?;
            let l = job.metadata.labels?;
            Some(InFlight {
                handle: RunHandle {
                    run_id: l.get(labels::RUN_ID)?.clone(),
                    attempt: l.get(labels::ATTEMPT)?.parse().ok()?,
                    backend_ref: name,
                },
                job: l.get(labels::JOB).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let pods = kube.pods.list(&lp).await.map_err(errors::from_kube)?;
    for pod in pods.items.into_iter().filter(stop::kept) {
        let l = pod.metadata.labels.unwrap_or_default();
        let Some(job) = l.get(manifest::JOB_NAME_LABEL) else {
            continue;
        };
        if found.iter().all(|f| f.handle.backend_ref != *job) {
            found.extend(InFlight::from_labels(job.clone(), |k| l.get(k)));
        }
    }
    Ok(found)
}
