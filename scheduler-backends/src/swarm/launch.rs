//! Launching one attempt: its secrets, then its service, exactly once.
//!
//! The service's name is derived from the run and attempt, so the swarm itself refuses a
//! second one (409): a launch retried after an engine crash, or racing another, adopts the
//! first service. The swarm pulls the image on the node that runs the task; a pull that
//! fails ends the task `rejected`, which [`super::tasks`] reports as the run's end — unless
//! the node has the image cached, which it then runs. So the image is first pulled here,
//! on the manager, with the job's credentials and as its pull policy says (see
//! [`crate::docker::image`]): a job whose credentials cannot pull the image never starts.

use bollard::auth::DockerCredentials;
use bollard::models::Service;
use bollard::Docker;
use secrecy::ExposeSecret;

use super::spec::{service_name, service_spec, validate};
use super::{secrets, SwarmConfig};
use crate::docker::errors::{from_docker, is_not_found, status_of};
use crate::docker::image::ensure_image;
use crate::{labels, BackendError, LaunchSpec, PullPolicy, RegistryAuth, RunHandle};

/// [`crate::Backend::launch`].
pub(crate) async fn launch(
    docker: &Docker,
    config: &SwarmConfig,
    spec: &LaunchSpec,
) -> Result<RunHandle, BackendError> {
    validate(spec)?;
    let name = service_name(&spec.run_id, spec.attempt);
    // Cheap check first: a launch of an attempt that exists creates nothing, not even secrets.
    if let Some(handle) = adopt(docker, spec, &name).await? {
        return Ok(handle);
    }
    if matches!(spec.pull_policy, None | Some(PullPolicy::Always)) {
        ensure_image(docker, spec).await?;
    }
    let mounts = secrets::create_all(docker, spec).await?;
    let body = service_spec(spec, config, &mounts)?;
    let credentials = spec.registry_auth.as_ref().map(credentials);
    match docker.create_service(body, credentials).await {
        Ok(created) => {
            let id = created.id.unwrap_or(name);
            tracing::info!(service = %id, "service created");
            Ok(handle(spec, id))
        }
        Err(e) if status_of(&e) == Some(409) => {
            adopt(docker, spec, &name)
                .await?
                .ok_or_else(|| BackendError::Api {
                    status: Some(409),
                    message: format!(
                        "service name {name} is taken but the service cannot be found"
                    ),
                    source: None,
                })
        }
        Err(e) => {
            // Nothing uses the secrets: remove them, so that a retry starts clean.
            if let Err(cleanup) = secrets::remove_all(docker, &spec.run_id, spec.attempt).await {
                tracing::warn!(error = %cleanup, "could not remove the secrets of a failed launch");
            }
            Err(from_docker(e))
        }
    }
}

/// Pull credentials, sent by bollard as `X-Registry-Auth`; the swarm hands them to the node
/// that pulls, and `docker service inspect` does not show them.
fn credentials(auth: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: Some(auth.username.clone()),
        password: Some(auth.password.expose_secret().to_owned()),
        serveraddress: auth.server.clone(),
        ..Default::default()
    }
}

fn handle(spec: &LaunchSpec, backend_ref: String) -> RunHandle {
    RunHandle {
        run_id: spec.run_id.clone(),
        attempt: spec.attempt,
        backend_ref,
    }
}

/// The service of an earlier launch of this attempt; `None` when there is none.
async fn adopt(
    docker: &Docker,
    spec: &LaunchSpec,
    name: &str,
) -> Result<Option<RunHandle>, BackendError> {
    let existing = match docker.inspect_service(name, None).await {
        Ok(existing) => existing,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(from_docker(e)),
    };
    check_ours(&existing, spec, name)?;
    tracing::info!(service = %name, "attempt already launched; adopting its service");
    let id = existing.id.unwrap_or_else(|| name.to_owned());
    Ok(Some(handle(spec, id)))
}

/// Refuses to adopt a service that merely has our name but another run's labels.
fn check_ours(existing: &Service, spec: &LaunchSpec, name: &str) -> Result<(), BackendError> {
    let found = existing
        .spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(labels::RUN_ID));
    if found == Some(&spec.run_id) {
        Ok(())
    } else {
        Err(BackendError::Api {
            status: Some(409),
            message: format!(
                "service {name} exists but does not belong to run {}",
                spec.run_id
            ),
            source: None,
        })
    }
}
