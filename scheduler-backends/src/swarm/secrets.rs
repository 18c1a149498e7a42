//! A run's secrets as swarm secrets: one per key, created for the attempt, labelled with the
//! run's identity labels, and removed with it.
//!
//! Swarm keeps secrets encrypted in its Raft log and mounts them on a tmpfs in the task's
//! container only; the service spec merely references them, so no value shows in
//! `docker service inspect`.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bollard::models::SecretSpec;
use bollard::query_parameters::ListSecretsOptionsBuilder;
use bollard::Docker;
use secrecy::ExposeSecret;

use super::spec::{secret_name, SecretMount};
use crate::docker::errors::{from_docker, is_not_found, status_of};
use crate::{labels, BackendError, LaunchSpec, RunHandle, Secret};

/// Creates the attempt's secrets, or adopts those an earlier launch of it created.
pub(crate) async fn create_all(
    docker: &Docker,
    spec: &LaunchSpec,
) -> Result<Vec<SecretMount>, BackendError> {
    let mut mounts = Vec::with_capacity(spec.secrets.len());
    for secret in &spec.secrets {
        match create_one(docker, spec, secret).await {
            Ok(mount) => mounts.push(mount),
            Err(e) => {
                remove_all(docker, &spec.run_id, spec.attempt).await.ok();
                return Err(e);
            }
        }
    }
    Ok(mounts)
}

async fn create_one(
    docker: &Docker,
    spec: &LaunchSpec,
    secret: &Secret,
) -> Result<SecretMount, BackendError> {
    let name = secret_name(&spec.run_id, spec.attempt, &secret.name);
    let body = SecretSpec {
        name: Some(name.clone()),
        labels: Some(spec.identity_labels().into_iter().collect()),
        data: Some(BASE64.encode(secret.value.expose_secret().as_bytes())),
        ..Default::default()
    };
    let id = match docker.create_secret(body).await {
        Ok(created) => created.id,
        // Secrets cannot change: an earlier launch of this attempt made it, keep that one.
        Err(e) if status_of(&e) == Some(409) => adopt(docker, spec, &name).await?,
        Err(e) => return Err(from_docker(e)),
    };
    Ok(SecretMount {
        id,
        name,
        key: secret.name.clone(),
    })
}

/// The id of an existing secret of this run, refusing one that only shares the name.
async fn adopt(docker: &Docker, spec: &LaunchSpec, name: &str) -> Result<String, BackendError> {
    let existing = docker.inspect_secret(name).await.map_err(from_docker)?;
    let run = existing
        .spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(labels::RUN_ID));
    match (run, existing.id) {
        (Some(run), Some(id)) if *run == spec.run_id => Ok(id),
        _ => Err(BackendError::Api {
            status: Some(409),
            message: format!(
                "secret {name} exists but does not belong to run {}",
                spec.run_id
            ),
            source: None,
        }),
    }
}

/// Removes every secret of the attempt, found by its labels (so also those of a launch that
/// failed half-way). A secret already gone is fine.
pub(crate) async fn remove_all(
    docker: &Docker,
    run_id: &str,
    attempt: u32,
) -> Result<(), BackendError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{}={run_id}", labels::RUN_ID),
            format!("{}={attempt}", labels::ATTEMPT),
        ],
    )]);
    let options = ListSecretsOptionsBuilder::new().filters(&filters).build();
    let found = docker
        .list_secrets(Some(options))
        .await
        .map_err(from_docker)?;
    for id in found.into_iter().filter_map(|s| s.id) {
        match docker.delete_secret(&id).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(from_docker(e)),
        }
    }
    Ok(())
}

/// [`remove_all`] for a handle.
pub(crate) async fn remove_for(docker: &Docker, handle: &RunHandle) -> Result<(), BackendError> {
    remove_all(docker, &handle.run_id, handle.attempt).await
}
