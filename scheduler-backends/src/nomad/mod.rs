//! The Nomad backend: one batch job per attempt of a run, driven through Nomad's HTTP API
//! by a small client of our own (no maintained crate streams Nomad's logs).
//!
//! Each concern has its module: the HTTP client (`client`, `errors`, `api`), translating
//! the spec (`jobspec`), launching exactly once (`launch`), state, waiting and stopping
//! (`status`), output (`logs`, `frames`, `stamps`), and finding and removing jobs
//! (`inventory`).

mod api;
mod client;
mod errors;
mod frames;
mod inventory;
mod jobspec;
mod launch;
mod logs;
mod stamps;
mod status;

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::Value;

use crate::{
    Backend, BackendError, BackendHealth, BackendKind, Exit, InFlight, LaunchSpec, LogFrom,
    LogStreamBox, RunHandle, TaskState,
};

/// Where the Nomad agent is and how jobs are placed.
#[derive(Debug, Clone)]
pub struct NomadConfig {
    /// The agent's HTTP address, e.g. `http://127.0.0.1:4646`.
    pub address: String,
    /// ACL token, sent as `X-Nomad-Token`.
    pub token: Option<SecretString>,
    /// Namespace of the jobs and variables; `None` = the token's default.
    pub namespace: Option<String>,
    /// Region; `None` = the agent's.
    pub region: Option<String>,
    /// Datacenters the jobs may run in; empty = all (`*`).
    pub datacenters: Vec<String>,
    /// Memory in MiB for runs whose spec sets none; `None` = Nomad's default (300 MiB).
    pub default_memory_mb: Option<u64>,
}

impl NomadConfig {
    /// A configuration for the agent at `address` with every other setting at its default.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            token: None,
            namespace: None,
            region: None,
            datacenters: Vec::new(),
            default_memory_mb: None,
        }
    }
}

/// Runs each attempt of a run as one Nomad batch job `jobdock-<run id>-<attempt>` with the
/// docker driver, one task group and one task, restarts and rescheduling off.
///
/// Secrets travel through a Nomad Variable (`nomad/jobs/<job id>`) read by the task's
/// templates, as an env file or as files mounted at `/run/secrets`; they are never in the
/// job spec. The identity labels are the job's `Meta`. Nomad has no deadline for batch
/// tasks, so [`LaunchSpec::timeout`] is left to the engine, as with Docker.
#[derive(Debug, Clone)]
pub struct NomadBackend {
    client: client::Client,
    config: NomadConfig,
    ledgers: stamps::Ledgers,
}

impl NomadBackend {
    /// A backend for the agent `config` names. Makes no network call: an unreachable agent
    /// shows in [`Backend::health`] and in each call's error.
    pub fn new(config: NomadConfig) -> Result<NomadBackend, BackendError> {
        let address = config.address.trim();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(BackendError::Invalid(format!(
                "nomad address `{address}` must start with http:// or https://"
            )));
        }
        let client = client::Client::new(
            address,
            config.token.clone(),
            config.namespace.clone(),
            config.region.clone(),
        )
        .map_err(errors::from_nomad)?;
        Ok(Self {
            client,
            config,
            ledgers: stamps::Ledgers::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NomadConfig {
        &self.config
    }
}

#[async_trait]
impl Backend for NomadBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nomad
    }

    async fn health(&self) -> BackendHealth {
        match self.client.get::<Value>("/v1/agent/self", &[]).await {
            Ok(v) => {
                let version = v
                    .pointer("/config/Version/Version")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                BackendHealth {
                    ok: true,
                    detail: format!("nomad {version} at {}", self.client.address()),
                }
            }
            Err(e) => BackendHealth {
                ok: false,
                detail: errors::from_nomad(e).to_string(),
            },
        }
    }

    #[tracing::instrument(skip_all, fields(run_id = %spec.run_id, attempt = spec.attempt, job = %spec.job))]
    async fn launch(&self, spec: &LaunchSpec) -> Result<RunHandle, BackendError> {
        launch::launch(&self.client, &self.config, spec).await
    }

    async fn state(&self, handle: &RunHandle) -> Result<TaskState, BackendError> {
        status::state(&self.client, handle).await
    }

    fn logs(&self, handle: &RunHandle, from: &LogFrom) -> LogStreamBox {
        logs::follow(&self.client, &self.ledgers, handle, from)
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn wait(&self, handle: &RunHandle) -> Result<Exit, BackendError> {
        status::wait(&self.client, handle).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), BackendError> {
        status::stop(&self.client, handle, grace).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn cleanup(&self, handle: &RunHandle) -> Result<(), BackendError> {
        inventory::cleanup(&self.client, handle).await?;
        self.ledgers.forget(&handle.backend_ref);
        Ok(())
    }

    async fn list_in_flight(&self, installation_id: &str) -> Result<Vec<InFlight>, BackendError> {
        inventory::list_in_flight(&self.client, installation_id).await
    }
}
