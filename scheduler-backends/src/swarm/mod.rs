//! The Docker Swarm backend: one replicated-job service per attempt of a run, on the swarm
//! whose manager is the local (or `DOCKER_HOST`) daemon, driven through bollard.
//!
//! - **Runs.** A service `jobdock-<run id>-<attempt>` in replicated-job mode (one task, one
//!   completion, never restarted), labelled with the run's identity labels.
//! - **Secrets** become swarm secrets of the attempt, mounted at `/run/secrets/<KEY>`, with
//!   [`SecretDelivery::Env`](crate::SecretDelivery::Env) as well as `Files`: a service has no
//!   safe way to receive a variable (`docker service inspect` shows its whole environment),
//!   so a job on Swarm reads its secrets from files. Jobdock's SDK reads `/run/secrets` too.
//! - **Images** are pulled by the swarm on the node that runs the task (with the run's
//!   registry credentials); a pull that fails ends the run with a reason, not at launch.
//! - **OOM kills** are seen only when the task ran on the node we talk to (its container is
//!   inspected); elsewhere one shows as exit 137 without the flag.
//! - **Stop and cleanup** act on the task's container directly, as removing a job's service
//!   neither stops nor removes it (moby/moby#44312): both reach only the node we talk to.
//!   The swarm keeps the ended task's record after cleanup (moby/moby#42789).
//! - **Logs** come from the task's container, attached to as soon as it exists and caught up
//!   from its log driver's files, as the Docker backend resumes (see `logs`); from the
//!   service's log when the task runs on another node. Swarm has no deadline of its own, so
//!   [`LaunchSpec::timeout`] is left to the engine.
//!
//! Modules: the service spec (`spec`), secrets (`secrets`), launching once (`launch`),
//! state and waiting (`tasks`), output (`logs`), finding, stopping and removing (`inventory`).

mod inventory;
mod launch;
mod logs;
mod secrets;
mod spec;
mod tasks;

use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;

use crate::docker::errors::from_docker;
use crate::{
    Backend, BackendError, BackendHealth, BackendKind, Exit, InFlight, LaunchSpec, LogFrom,
    LogStreamBox, RunHandle, TaskState,
};

/// How the Swarm backend runs services, beyond what each run's spec says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmConfig {
    /// Memory limit in bytes for runs whose spec sets none.
    pub default_memory_bytes: Option<u64>,
    /// User (`uid[:gid]` or a name) for runs whose spec sets none; `None` = the image's.
    pub default_user: Option<String>,
    /// Whether [`Backend::cleanup`] keeps the service of a run that failed, for someone to
    /// inspect. Its secrets stay with it: the swarm refuses to remove a secret in use.
    pub keep_failed: bool,
}

/// Runs each attempt of a run as one Swarm replicated-job service (see the module docs).
#[derive(Debug, Clone)]
pub struct SwarmBackend {
    docker: Docker,
    config: SwarmConfig,
    attachments: crate::docker::attach::Attachments,
}

impl SwarmBackend {
    /// Connects to the daemon named by `DOCKER_HOST` (or the local socket), agrees on an API
    /// version with it, and returns the backend when that daemon is a swarm manager;
    /// `Ok(None)` when it is not (not in a swarm, or only a worker).
    pub async fn detect(config: SwarmConfig) -> Result<Option<SwarmBackend>, BackendError> {
        let docker = crate::docker::client::connect().map_err(from_docker)?;
        let docker = docker.negotiate_version().await.map_err(from_docker)?;
        let info = docker.info().await.map_err(from_docker)?;
        let manager = info.swarm.and_then(|s| s.control_available) == Some(true);
        Ok(manager.then_some(SwarmBackend {
            docker,
            config,
            attachments: Default::default(),
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SwarmConfig {
        &self.config
    }
}

#[async_trait]
impl Backend for SwarmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Swarm
    }

    async fn health(&self) -> BackendHealth {
        match self.docker.info().await {
            Ok(info) => {
                let swarm = info.swarm.unwrap_or_default();
                BackendHealth {
                    ok: swarm.control_available == Some(true),
                    detail: format!(
                        "docker swarm {} (API {}), {} node(s), manager: {}",
                        info.server_version.as_deref().unwrap_or("unknown"),
                        self.docker.client_version(),
                        swarm.nodes.unwrap_or(0),
                        swarm.control_available == Some(true),
                    ),
                }
            }
            Err(e) => BackendHealth {
                ok: false,
                detail: from_docker(e).to_string(),
            },
        }
    }

    #[tracing::instrument(skip_all, fields(run_id = %spec.run_id, attempt = spec.attempt, job = %spec.job))]
    async fn launch(&self, spec: &LaunchSpec) -> Result<RunHandle, BackendError> {
        launch::launch(&self.docker, &self.config, spec).await
    }

    async fn state(&self, handle: &RunHandle) -> Result<TaskState, BackendError> {
        tasks::state(&self.docker, handle).await
    }

    fn logs(&self, handle: &RunHandle, from: &LogFrom) -> LogStreamBox {
        logs::logs(&self.docker, &self.attachments, handle, from)
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn wait(&self, handle: &RunHandle) -> Result<Exit, BackendError> {
        tasks::wait(&self.docker, handle).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), BackendError> {
        inventory::stop(&self.docker, handle, grace).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn cleanup(&self, handle: &RunHandle) -> Result<(), BackendError> {
        inventory::cleanup(&self.docker, &self.config, handle).await
    }

    async fn list_in_flight(&self, installation_id: &str) -> Result<Vec<InFlight>, BackendError> {
        inventory::list_in_flight(&self.docker, installation_id).await
    }
}
