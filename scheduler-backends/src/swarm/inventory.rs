//! Finding an installation's services again by their labels, stopping a run, and removing
//! its traces (the service, its task's container and its secrets).
//!
//! Stopping: a replicated job cannot be scaled down, updating its spec re-runs it, and
//! removing the service does not stop its task (moby/moby#44312). So the task's container
//! is stopped directly (SIGTERM, SIGKILL after the grace), and the swarm then records the
//! task's real end. This reaches only the node we talk to: a task on another node of a
//! multi-node swarm cannot be stopped, and `stop` says so with an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerStateStatusEnum, Service};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListServicesOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;

use super::tasks::{self, container_of, exit_of, is_final};
use super::{secrets, SwarmConfig};
use crate::docker::errors::{from_docker, is_not_found};
use crate::{labels, BackendError, InFlight, RunHandle};

/// How often `stop` looks whether the swarm has taken note of the end.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How long, beyond the grace, `stop` waits for a task that has not started yet.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// How long cleanup waits for the swarm to create the task of a service just created.
const NO_TASK_PATIENCE: Duration = Duration::from_secs(2);

/// [`crate::Backend::list_in_flight`].
pub(crate) async fn list_in_flight(
    docker: &Docker,
    installation_id: &str,
) -> Result<Vec<InFlight>, BackendError> {
    let filters = HashMap::from([(
        "label",
        vec![format!("{}={installation_id}", labels::INSTALLATION)],
    )]);
    let options = ListServicesOptionsBuilder::new().filters(&filters).build();
    let services = docker
        .list_services(Some(options))
        .await
        .map_err(from_docker)?;
    Ok(services.iter().filter_map(in_flight_of).collect())
}

/// The run a listed service belongs to; `None` (and a warning) when its labels are not ours.
fn in_flight_of(service: &Service) -> Option<InFlight> {
    let id = service.id.clone()?;
    let labels = service.spec.as_ref()?.labels.as_ref()?;
    let found = InFlight::from_labels(id.clone(), |k| labels.get(k));
    if found.is_none() {
        tracing::warn!(service = %id, "service has the installation label but not the run's labels; ignored");
    }
    found
}

/// [`crate::Backend::cleanup`]: the service (unless kept for inspection), the task's
/// container, then the secrets. A kept service keeps its secrets too: the swarm refuses to
/// remove a secret a service uses.
///
/// Removing a replicated-job service neither stops nor removes its task's container (nor
/// the task: moby/moby#42789, #44312), so the container is removed here, found by its
/// labels. That reaches only containers on our node; on another node it stays.
pub(crate) async fn cleanup(
    docker: &Docker,
    config: &SwarmConfig,
    handle: &RunHandle,
) -> Result<(), BackendError> {
    let task = tasks::find(docker, handle).await?.and_then(|f| f.task);
    if config.keep_failed {
        if let Some(task) = task.as_ref().filter(|t| is_final(t)) {
            if exit_of(docker, task).await?.exit_code != Some(0) {
                tracing::info!(service = %handle.backend_ref, "keeping the failed service and its secrets for inspection");
                return Ok(());
            }
        }
    }
    // A job's task lives on once its service is removed, and one placed but not started
    // yet still starts (moby/moby#44312): end it first, then remove the service.
    if task.is_none_or(|t| !is_final(&t)) {
        end_task(docker, handle).await?;
    }
    remove_service(docker, handle).await?;
    remove_containers(docker, handle).await?;
    secrets::remove_for(docker, handle).await
}

/// Ends the run's task for cleanup: removes its container as soon as it has one, and waits
/// (a bounded time) until the swarm has recorded the end.
async fn end_task(docker: &Docker, handle: &RunHandle) -> Result<(), BackendError> {
    let started = Instant::now();
    while started.elapsed() < START_PATIENCE {
        let Some(found) = tasks::find(docker, handle).await? else {
            return Ok(());
        };
        let Some(task) = found.task else {
            // The swarm creates the task a moment after the service; none by now means none.
            if started.elapsed() > NO_TASK_PATIENCE {
                return Ok(());
            }
            tokio::time::sleep(STOP_POLL).await;
            continue;
        };
        if is_final(&task) {
            return Ok(());
        }
        if container_of(&task).is_some() {
            remove_containers(docker, handle).await?;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
    tracing::warn!(service = %handle.backend_ref, "the task has not ended; removing its service anyway");
    Ok(())
}

async fn remove_service(docker: &Docker, handle: &RunHandle) -> Result<(), BackendError> {
    match docker.delete_service(&handle.backend_ref).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(from_docker(e)),
    }
}

/// Removes the attempt's containers on our node, running or not, found by their labels.
async fn remove_containers(docker: &Docker, handle: &RunHandle) -> Result<(), BackendError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{}={}", labels::RUN_ID, handle.run_id),
            format!("{}={}", labels::ATTEMPT, handle.attempt),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(from_docker)?;
    for id in found.into_iter().filter_map(|c| c.id) {
        remove_container(docker, &id).await?;
    }
    Ok(())
}

/// [`crate::Backend::stop`]: returns once the task's container has stopped and the swarm
/// has recorded how it ended.
pub(crate) async fn stop(
    docker: &Docker,
    handle: &RunHandle,
    grace: Duration,
) -> Result<(), BackendError> {
    // A task that has not started yet gets this long to start, so that it can be stopped.
    let deadline = Instant::now() + grace + START_PATIENCE;
    loop {
        let Some(found) = tasks::find(docker, handle).await? else {
            return Ok(());
        };
        let task = found.task.as_ref();
        if task.is_some_and(is_final) {
            return Ok(());
        }
        if let Some(id) = task.and_then(container_of) {
            if !stop_local(docker, id, grace).await? {
                return Err(remote(handle));
            }
            return await_final(docker, handle).await;
        }
        if Instant::now() > deadline {
            // Removing the service would not keep it from starting (moby/moby#44312).
            return Err(BackendError::Api {
                status: None,
                message: format!(
                    "the task of service {} has not started, so it cannot be stopped yet",
                    handle.backend_ref
                ),
                source: None,
            });
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// The error for a task running on another node: the Docker API reaches only the node we
/// talk to, and removing the service does not stop a job's task (moby/moby#44312).
fn remote(handle: &RunHandle) -> BackendError {
    BackendError::Api {
        status: None,
        message: format!(
            "the task of service {} runs on another node of the swarm and cannot be stopped from here",
            handle.backend_ref
        ),
        source: None,
    }
}

/// Stops the task's container when it is on our node (`false` when it is not). One not
/// started yet has no process to warn: it is removed at once, or the swarm would start it
/// after the stop.
async fn stop_local(docker: &Docker, id: &str, grace: Duration) -> Result<bool, BackendError> {
    let state = match docker.inspect_container(id, None).await {
        Ok(info) => info.state.unwrap_or_default(),
        Err(e) if is_not_found(&e) => return Ok(false),
        Err(e) => return Err(from_docker(e)),
    };
    if state.status == Some(ContainerStateStatusEnum::CREATED) {
        remove_container(docker, id).await
    } else {
        stop_container(docker, id, grace).await
    }
}

/// Removes a container on our node, running or not; `false` when it is not here.
async fn remove_container(docker: &Docker, id: &str) -> Result<bool, BackendError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(from_docker(e)),
    }
}

/// Stops a container on our node; `false` when it is not here.
async fn stop_container(docker: &Docker, id: &str, grace: Duration) -> Result<bool, BackendError> {
    let seconds = i32::try_from(grace.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
    let options = StopContainerOptionsBuilder::new().t(seconds).build();
    // The daemon answers once the container is down, which can take the whole grace.
    let patient = docker
        .clone()
        .with_timeout(docker.timeout().max(grace + Duration::from_secs(60)));
    match patient.stop_container(id, Some(options)).await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(from_docker(e)),
    }
}

/// Waits until the swarm reports the task ended (or the service is gone).
async fn await_final(docker: &Docker, handle: &RunHandle) -> Result<(), BackendError> {
    loop {
        match tasks::find(docker, handle).await? {
            None => return Ok(()),
            Some(found) if found.task.as_ref().is_none_or(is_final) => return Ok(()),
            Some(_) => tokio::time::sleep(STOP_POLL).await,
        }
    }
}
