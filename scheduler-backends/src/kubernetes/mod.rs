//! The Kubernetes backend: one `batch/v1` Job per attempt of a run, driven through `kube`.
//!
//! Each concern has its module: translating the spec (`manifest`), launching exactly once and
//! finding and removing Jobs (`launch`), state and waiting (`status`), stopping (`stop`),
//! output (`logs`), and error mapping (`errors`).

mod errors;
mod launch;
mod logs;
mod manifest;
mod status;
mod stop;

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;

use crate::{
    Backend, BackendError, BackendHealth, BackendKind, Exit, InFlight, LaunchSpec, LogFrom,
    LogStreamBox, RunHandle, TaskState,
};

/// Where the runs go and how they are bounded.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Namespace of the Jobs, pods and Secrets.
    pub namespace: String,
    /// Names of existing `kubernetes.io/dockerconfigjson` Secrets every pod may pull with.
    pub image_pull_secrets: Vec<String>,
    /// How long a finished Job (and its pod and log) is kept before Kubernetes deletes it.
    pub ttl_seconds_after_finished: i32,
    /// How long a pod may be stuck on its image (`ImagePullBackOff`, `ErrImagePull`,
    /// `InvalidImageName`) or unschedulable before the run is ended.
    pub pending_timeout: Duration,
    /// Memory limit of runs whose spec sets none; `None` = no limit.
    pub default_memory_bytes: Option<u64>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            image_pull_secrets: Vec::new(),
            ttl_seconds_after_finished: 3600,
            pending_timeout: Duration::from_secs(300),
            default_memory_bytes: None,
        }
    }
}

/// The API handles every module uses.
#[derive(Clone)]
pub(crate) struct Kube {
    client: kube::Client,
    jobs: Api<Job>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    config: KubernetesConfig,
    /// Between two polls of a run's state.
    poll: Duration,
}

/// Runs each attempt of a run as one Job `jobdock-<run id>-<attempt>` (backoffLimit 0,
/// restartPolicy Never, activeDeadlineSeconds from the spec's timeout), labelled with the
/// identity labels.
///
/// Secret values live in a Secret owned by the Job, never in the Job's spec. Logs come from
/// the pod with stdout and stderr interleaved, all reported as stdout (see `logs`).
#[derive(Clone)]
pub struct KubernetesBackend {
    kube: Kube,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("config", &self.kube.config)
            .finish_non_exhaustive()
    }
}

impl KubernetesBackend {
    /// Connects with the in-cluster service account or the kubeconfig (`KUBECONFIG`,
    /// `~/.kube/config`), as `kubectl` would. Makes no API call.
    pub async fn connect(config: KubernetesConfig) -> Result<Self, BackendError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| BackendError::Unavailable(format!("kubernetes configuration: {e}")))?;
        Ok(Self::with_client(client, config))
    }

    /// A backend on an existing client (a test server, a custom configuration).
    pub fn with_client(client: kube::Client, config: KubernetesConfig) -> Self {
        let ns = config.namespace.as_str();
        let kube = Kube {
            jobs: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client.clone(), ns),
            client,
            config,
            poll: Duration::from_secs(1),
        };
        Self { kube }
    }

    /// Sets how often `wait`, `stop` and `logs` look again (1 s by default).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.kube.poll = poll;
        self
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &KubernetesConfig {
        &self.kube.config
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    async fn health(&self) -> BackendHealth {
        match self.kube.client.apiserver_version().await {
            Ok(v) => BackendHealth {
                ok: true,
                detail: format!("kubernetes {}", v.git_version),
            },
            Err(e) => BackendHealth {
                ok: false,
                detail: errors::from_kube(e).to_string(),
            },
        }
    }

    #[tracing::instrument(skip_all, fields(run_id = %spec.run_id, attempt = spec.attempt, job = %spec.job))]
    async fn launch(&self, spec: &LaunchSpec) -> Result<RunHandle, BackendError> {
        launch::launch(&self.kube, spec).await
    }

    async fn state(&self, handle: &RunHandle) -> Result<TaskState, BackendError> {
        status::state(&self.kube, handle).await
    }

    fn logs(&self, handle: &RunHandle, from: &LogFrom) -> LogStreamBox {
        logs::follow(&self.kube, handle, from)
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn wait(&self, handle: &RunHandle) -> Result<Exit, BackendError> {
        status::wait(&self.kube, handle).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), BackendError> {
        stop::stop(&self.kube, handle, grace).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn cleanup(&self, handle: &RunHandle) -> Result<(), BackendError> {
        launch::cleanup(&self.kube, handle).await
    }

    async fn list_in_flight(&self, installation_id: &str) -> Result<Vec<InFlight>, BackendError> {
        launch::list_in_flight(&self.kube, installation_id).await
    }
}
