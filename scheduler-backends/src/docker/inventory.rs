//! Finding an installation's containers again by their labels, and removing a run's traces.
//!
//! After a restart the engine knows only its installation id; the labels every container
//! carries are enough to rebuild the handles of its runs.

use std::collections::HashMap;

use bollard::models::{ContainerStateStatusEnum as Status, ContainerSummary};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use super::errors::{for_handle, from_docker, is_not_found};
use super::secrets;
use super::status::inspect_state;
use super::DockerConfig;
use crate::{labels, BackendError, InFlight, RunHandle};

/// [`crate::Backend::list_in_flight`].
pub(crate) async fn list_in_flight(
    docker: &Docker,
    installation_id: &str,
) -> Result<Vec<InFlight>, BackendError> {
    let filters = HashMap::from([(
        "label",
        vec![format!("{}={installation_id}", labels::INSTALLATION)],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(from_docker)?;
    Ok(containers.iter().filter_map(in_flight_of).collect())
}

/// The run a listed container belongs to; `None` (and a warning) when its labels are not
/// ours, e.g. edited by hand.
fn in_flight_of(container: &ContainerSummary) -> Option<InFlight> {
    let id = container.id.clone()?;
    let labels = container.labels.as_ref()?;
    let found = InFlight::from_labels(id.clone(), |k| labels.get(k));
    if found.is_none() {
        tracing::warn!(container = %id, "container has the installation label but not the run's labels; ignored");
    }
    found
}

/// [`crate::Backend::cleanup`]: the container (unless kept for inspection) and the secret
/// files. Everything already gone counts as done.
pub(crate) async fn cleanup(
    docker: &Docker,
    config: &DockerConfig,
    handle: &RunHandle,
) -> Result<(), BackendError> {
    if !(config.keep_failed && failed(docker, handle).await?) {
        remove_container(docker, handle).await?;
    } else {
        tracing::info!(container = %handle.backend_ref, "keeping the failed container for inspection");
    }
    match secrets::run_dir(&config.secrets_dir, &handle.run_id, handle.attempt) {
        Some(dir) => secrets::remove(dir).await,
        None => Ok(()),
    }
}

/// Whether the container ended with a non-zero exit code.
async fn failed(docker: &Docker, handle: &RunHandle) -> Result<bool, BackendError> {
    Ok(inspect_state(docker, handle).await?.is_some_and(|s| {
        matches!(s.status, Some(Status::EXITED) | Some(Status::DEAD)) && s.exit_code != Some(0)
    }))
}

async fn remove_container(docker: &Docker, handle: &RunHandle) -> Result<(), BackendError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker
        .remove_container(&handle.backend_ref, Some(options))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(for_handle(e, handle)),
    }
}
