//! Launching one attempt: the image, the secrets, the container, exactly once.
//!
//! The container's name is derived from the run and attempt, so Docker itself refuses a
//! second one (409): a launch retried after an engine crash adopts the first container and
//! starts it only if it was never started.

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum as Status,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use std::path::PathBuf;
use std::time::Duration;

use super::attach::{attach, Attachments};
use super::create::{container_body, container_name, validate};
use super::errors::{from_docker, is_not_found, is_transport, status_of};
use super::image::ensure_image;
use super::secrets::{self, Reader};
use super::DockerConfig;
use crate::{labels, BackendError, LaunchSpec, RunHandle, SecretDelivery};

/// [`crate::Backend::launch`].
pub(crate) async fn launch(
    docker: &Docker,
    config: &DockerConfig,
    attachments: &Attachments,
    spec: &LaunchSpec,
) -> Result<RunHandle, BackendError> {
    validate(spec)?;
    let image_user = ensure_image(docker, spec).await?;
    let secrets_dir = write_secrets(config, spec, image_user.as_deref()).await?;
    let name = container_name(&spec.run_id, spec.attempt);
    let body = container_body(spec, config, secrets_dir.as_deref())?;
    let id = match create_or_adopt(docker, attachments, spec, &name, body).await {
        Ok(Created::New(id)) => id,
        Ok(Created::Existing(handle)) => return Ok(handle),
        Err(e) => {
            discard_secrets(secrets_dir).await;
            return Err(e);
        }
    };
    tracing::info!(container = %id, "container created");
    if let Err(e) = start_attached(docker, attachments, &id).await {
        return Err(abandon(docker, &id, secrets_dir, e).await);
    }
    tracing::info!(container = %id, "container started");
    Ok(handle(spec, id))
}

/// Attaches to the container's output, then starts it: everything it writes reaches the
/// engine, whatever its log driver keeps. Without the attachment (refused by the daemon) the
/// container still starts, and its output is read from the driver's files.
async fn start_attached(
    docker: &Docker,
    attachments: &Attachments,
    id: &str,
) -> Result<(), bollard::errors::Error> {
    match attach(docker, id).await {
        Ok(frames) => attachments.start_live(docker, id, frames),
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "could not attach to the container's output")
        }
    }
    docker.start_container(id, None).await
}

/// What [`create_or_adopt`] found.
enum Created {
    /// We created the container: it is ours to start.
    New(String),
    /// An earlier launch of the attempt did; it has been adopted (and started if needed).
    Existing(RunHandle),
}

/// How often a create that conflicts with a container we cannot see yet is tried again.
const CREATE_TRIES: u32 = 50;

/// Creates the container, or adopts the one an earlier launch of this attempt created.
async fn create_or_adopt(
    docker: &Docker,
    attachments: &Attachments,
    spec: &LaunchSpec,
    name: &str,
    body: ContainerCreateBody,
) -> Result<Created, BackendError> {
    for _ in 0..CREATE_TRIES {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        match docker.create_container(Some(options), body.clone()).await {
            Ok(created) => return Ok(Created::New(created.id)),
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(from_docker(e)),
        }
        if let Some(handle) = adopt(docker, attachments, spec, name).await? {
            return Ok(Created::Existing(handle));
        }
        // Docker reserves the name before the container can be inspected (a concurrent
        // create), or it was removed meanwhile: look again shortly.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BackendError::Api {
        status: Some(409),
        message: format!("container name {name} is taken but the container cannot be found"),
        source: None,
    })
}

fn handle(spec: &LaunchSpec, backend_ref: String) -> RunHandle {
    RunHandle {
        run_id: spec.run_id.clone(),
        attempt: spec.attempt,
        backend_ref,
    }
}

/// Writes the secret files when the spec asks for them; returns the directory to mount.
async fn write_secrets(
    config: &DockerConfig,
    spec: &LaunchSpec,
    image_user: Option<&str>,
) -> Result<Option<PathBuf>, BackendError> {
    if spec.secret_delivery != SecretDelivery::Files || spec.secrets.is_empty() {
        return Ok(None);
    }
    let dir = secrets::run_dir(&config.secrets_dir, &spec.run_id, spec.attempt)
        .ok_or_else(|| BackendError::Invalid("run id is not a safe directory name".into()))?;
    let user = spec
        .user
        .as_deref()
        .or(config.default_user.as_deref())
        .or(image_user);
    let dir = secrets::write(dir, spec.secrets.clone(), Reader::of_user(user)).await?;
    Ok(Some(dir))
}

/// Removes secret files of a launch that failed, logging rather than hiding its error.
async fn discard_secrets(dir: Option<PathBuf>) {
    if let Some(dir) = dir {
        if let Err(e) = secrets::remove(dir).await {
            tracing::warn!(error = %e, "could not remove the secret files of a failed launch");
        }
    }
}

/// A created container that would not start: remove it and its secrets, so that a retry
/// starts clean. When the daemon did not answer we cannot know whether it started, so the
/// container stays for the retry to adopt.
async fn abandon(
    docker: &Docker,
    id: &str,
    secrets_dir: Option<PathBuf>,
    err: bollard::errors::Error,
) -> BackendError {
    if is_transport(&err) {
        return from_docker(err);
    }
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(container = %id, error = %e, "could not remove a container that failed to start");
    }
    discard_secrets(secrets_dir).await;
    from_docker(err)
}

/// The container of an earlier launch of this attempt: start it if it never was, and hand
/// back its handle. `None` when no container of that name can be seen.
async fn adopt(
    docker: &Docker,
    attachments: &Attachments,
    spec: &LaunchSpec,
    name: &str,
) -> Result<Option<RunHandle>, BackendError> {
    let existing = match docker.inspect_container(name, None).await {
        Ok(existing) => existing,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(from_docker(e)),
    };
    check_ours(&existing, spec, name)?;
    let id = existing.id.clone().unwrap_or_else(|| name.to_owned());
    let state = existing.state.unwrap_or_default();
    // Started containers are never started again: a start would re-run an exited one. Two
    // launches racing on a fresh container may both start it, which Docker answers with
    // 304; the engine serialises launches of one attempt, so the narrower race (one start
    // lands after the container already exited) is left to it.
    let never_started = matches!(state.status, Some(Status::CREATED))
        && super::status::parse_time(state.started_at.as_deref()).is_none();
    if never_started {
        tracing::info!(container = %id, "starting a container an earlier launch created");
        start_attached(docker, attachments, &id)
            .await
            .map_err(from_docker)?;
    } else {
        tracing::info!(container = %id, "attempt already launched; adopting its container");
    }
    Ok(Some(handle(spec, id)))
}

/// Refuses to adopt a container that merely has our name but another run's labels.
fn check_ours(
    existing: &ContainerInspectResponse,
    spec: &LaunchSpec,
    name: &str,
) -> Result<(), BackendError> {
    let found = existing
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(labels::RUN_ID));
    if found == Some(&spec.run_id) {
        Ok(())
    } else {
        Err(BackendError::Api {
            status: Some(409),
            message: format!(
                "container {name} exists but does not belong to run {}",
                spec.run_id
            ),
            source: None,
        })
    }
}
