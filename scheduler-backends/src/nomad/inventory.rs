//! Finding an installation's jobs again by their meta, and removing a run's traces.
//!
//! Nomad has no labels: the identity labels live in each job's `Meta`, which the job list
//! returns when asked (`meta=true`, Nomad ≥ 1.6; older agents' jobs are read one by one).
//! Only ids starting `jobdock-` are listed.

use super::api::{JobInfo, JobStub};
use super::client::{escape, Client};
use super::errors::from_nomad;
use super::jobspec::variable_path;
use super::launch::var_path_segments;
use crate::{labels, BackendError, InFlight, RunHandle};

/// [`crate::Backend::list_in_flight`].
pub(crate) async fn list_in_flight(
    client: &Client,
    installation_id: &str,
) -> Result<Vec<InFlight>, BackendError> {
    let mut jobs: Vec<JobStub> = client
        .get("/v1/jobs", &[("prefix", "jobdock-"), ("meta", "true")])
        .await
        .map_err(from_nomad)?;
    for job in jobs.iter_mut().filter(|j| j.meta.is_none()) {
        job.meta = meta_of(client, &job.id).await?;
    }
    Ok(jobs
        .iter()
        .filter(|j| {
            j.meta.as_ref().and_then(|m| m.get(labels::INSTALLATION))
                == Some(&installation_id.to_owned())
        })
        .filter_map(in_flight_of)
        .collect())
}

/// A job's meta read from the job itself, for agents older than 1.6 whose list has none.
async fn meta_of(
    client: &Client,
    id: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>, BackendError> {
    match client
        .get::<JobInfo>(&format!("/v1/job/{}", escape(id)), &[])
        .await
    {
        Ok(job) => Ok(job.meta),
        // Purged between the list and the read.
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(from_nomad(e)),
    }
}

/// The run a listed job belongs to; `None` (and a warning) when its meta is not ours.
fn in_flight_of(job: &JobStub) -> Option<InFlight> {
    let meta = job.meta.as_ref()?;
    let found = InFlight::from_labels(job.id.clone(), |k| meta.get(k));
    if found.is_none() {
        tracing::warn!(job_id = %job.id, "job has the installation meta but not the run's; ignored");
    }
    found
}

/// [`crate::Backend::cleanup`]: purges the job (stopping it if it still runs) and deletes
/// its secrets variable. Whatever is already gone counts as done.
pub(crate) async fn cleanup(client: &Client, handle: &RunHandle) -> Result<(), BackendError> {
    let path = format!("/v1/job/{}", escape(&handle.backend_ref));
    client
        .delete(&path, &[("purge", "true")])
        .await
        .map_err(from_nomad)?;
    let var = var_path_segments(&variable_path(&handle.backend_ref));
    client
        .delete(&format!("/v1/var/{var}"), &[])
        .await
        .map_err(from_nomad)
}
