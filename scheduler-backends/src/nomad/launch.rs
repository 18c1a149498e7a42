//! Launching one attempt as one Nomad batch job, exactly once.
//!
//! Why a batch job per attempt rather than dispatching a parameterized job: each run's
//! definition stays self-contained (image, limits and secrets of that run, no parent job to
//! keep in step with the job definition), and the job id `jobdock-<run id>-<attempt>` is
//! the idempotency key. Nomad treats re-registering an unchanged job as a no-op for a batch
//! job, but would run a stopped or garbage-collected one again; so a launch first looks
//! for the job and adopts it, and registers with `EnforceIndex` + `JobModifyIndex: 0`
//! ("only if it does not exist"), which makes two racing launches register it once.

use reqwest::Method;

use super::api::JobInfo;
use super::client::{escape, Client};
use super::errors::from_nomad;
use super::jobspec::{job_id, register_body, validate, variable_body, variable_path};
use super::NomadConfig;
use crate::{labels, BackendError, LaunchSpec, RunHandle};

/// [`crate::Backend::launch`].
pub(crate) async fn launch(
    client: &Client,
    config: &NomadConfig,
    spec: &LaunchSpec,
) -> Result<RunHandle, BackendError> {
    validate(spec)?;
    let id = job_id(&spec.run_id, spec.attempt);
    if let Some(handle) = adopt(client, spec, &id).await? {
        return Ok(handle);
    }
    let var_path = variable_path(&id);
    if !spec.secrets.is_empty() {
        let body = variable_body(spec, &var_path, client.namespace());
        let path = format!("/v1/var/{}", var_path_segments(&var_path));
        client
            .send_json(Method::PUT, &path, &body)
            .await
            .map_err(from_nomad)?;
    }
    let body = register_body(spec, config);
    match client.send_json(Method::POST, "/v1/jobs", &body).await {
        Ok(()) => {
            tracing::info!(job_id = %id, "nomad job registered");
            Ok(handle(spec, id))
        }
        Err(e) => {
            // A concurrent launch registered it first (Nomad refuses the index check).
            if let Some(handle) = adopt(client, spec, &id).await? {
                return Ok(handle);
            }
            if !spec.secrets.is_empty() {
                let path = format!("/v1/var/{}", var_path_segments(&var_path));
                if let Err(e) = client.delete(&path, &[]).await {
                    tracing::warn!(error = %e, "could not delete the variable of a failed launch");
                }
            }
            // Nomad answers a job it cannot accept (bad driver config, limits) with 400 or
            // 500 and its validation message; both are kept.
            Err(from_nomad(e))
        }
    }
}

/// A variable path keeps its `/` separators; each segment is escaped.
pub(crate) fn var_path_segments(path: &str) -> String {
    path.split('/').map(escape).collect::<Vec<_>>().join("/")
}

fn handle(spec: &LaunchSpec, backend_ref: String) -> RunHandle {
    RunHandle {
        run_id: spec.run_id.clone(),
        attempt: spec.attempt,
        backend_ref,
    }
}

/// The job of an earlier launch of this attempt, if there is one and it is ours.
async fn adopt(
    client: &Client,
    spec: &LaunchSpec,
    id: &str,
) -> Result<Option<RunHandle>, BackendError> {
    let path = format!("/v1/job/{}", escape(id));
    let job: JobInfo = match client.get(&path, &[]).await {
        Ok(job) => job,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(from_nomad(e)),
    };
    let owner = job.meta.as_ref().and_then(|m| m.get(labels::RUN_ID));
    if owner != Some(&spec.run_id) {
        return Err(BackendError::Api {
            status: Some(409),
            message: format!(
                "nomad job {id} exists but does not belong to run {}",
                spec.run_id
            ),
            source: None,
        });
    }
    tracing::info!(job_id = %id, stopped = job.stop, "attempt already launched; adopting its job");
    Ok(Some(handle(spec, id.to_owned())))
}
